import Foundation
import Testing

@testable import Server

/// Writes `yaml` into a fresh directory beside a `site/` folder and loads it.
func loadConfig(_ yaml: String, overrides: ConfigOverrides = ConfigOverrides()) throws(ConfigErrors) -> ServerConfig {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-config-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: directory.appendingPathComponent("site"), withIntermediateDirectories: true)
    let file = directory.appendingPathComponent("webserver.yaml")
    try? yaml.write(to: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try ConfigLoader.load(path: file.path, overrides: overrides)
}

/// The issues a configuration produces, as "line key: message" strings.
func issues(_ yaml: String, overrides: ConfigOverrides = ConfigOverrides()) -> [ConfigIssue] {
    do {
        _ = try loadConfig(yaml, overrides: overrides)
        return []
    } catch {
        return error.issues
    }
}

@Suite struct ConfigTests {
    @Test func theShippedReferenceConfigIsValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let config = try ConfigLoader.load(path: root.appendingPathComponent("config/webserver.yaml").path)
        #expect(config.root == root.appendingPathComponent("public").path)
        #expect(config.listen.map(\.address) == ["127.0.0.1:8080", "[::1]:8080"])
        #expect(config.tls.listen.map(\.address) == ["127.0.0.1:8443", "[::1]:8443"])
        #expect(config.accessLog == nil)
    }

    @Test func valuesAreRead() throws {
        let config = try loadConfig("""
            listen: ["127.0.0.1:0", "[::1]:9000"]
            root: site
            workers: {min: 2, max: 4}
            keepalive: {timeout: 500ms, requests: 7}
            timeouts: {header: 2m, send: 1h, shutdown: 3}
            limits: {request_line: 4k, header_bytes: 1m, header_count: 9}
            access_log: logs-access.log
            defer_accept: 3s
            """)
        #expect(config.listen.map(\.address) == ["127.0.0.1:0", "[::1]:9000"])
        #expect(config.deferAcceptMilliseconds == 3000)
        #expect(try loadConfig("root: site\ndefer_accept: off\n").deferAcceptMilliseconds == 0)
        #expect(try loadConfig("root: site\n").deferAcceptMilliseconds == 10_000)
        #expect(config.root.hasSuffix("/site"))
        #expect(config.workers.min == 2 && config.workers.max == 4)
        #expect(config.keepalive.timeoutMilliseconds == 500 && config.keepalive.requests == 7)
        #expect(config.timeouts.headerMilliseconds == 120_000)
        #expect(config.timeouts.sendMilliseconds == 3_600_000)
        #expect(config.timeouts.shutdownMilliseconds == 3000)
        #expect(config.limits.requestLine == 4096 && config.limits.headerBytes == 1_048_576)
        #expect(config.accessLog?.hasSuffix("/logs-access.log") == true)
    }

    @Test func notSentLowatIsASizeOrOff() throws {
        #expect(try loadConfig("root: site\n").notSentLowat == 131_072)
        #expect(try loadConfig("root: site\nnotsent_lowat: 16k\n").notSentLowat == 16_384)
        #expect(try loadConfig("root: site\nnotsent_lowat: off\n").notSentLowat == 0)
        let found = issues("root: site\nnotsent_lowat: 100\n")
        #expect(found.map { "\($0.line) \($0.key): \($0.message)" } == ["2 notsent_lowat: 100 bytes is out of range 1024...67108864"])
        #expect(issues("root: site\nnotsent_lowat: lots\n").first?.message == "expected a size such as 8k or 16384, got 'lots'")
    }

    @Test func listenersIsANumberOrAuto() throws {
        let automatic = try loadConfig("root: site\n")
        #expect(automatic.listeners == 0)
        #expect(automatic.listenerCount == max(1, min(64, ServerConfig.processorCount / 8)))
        #expect(try loadConfig("root: site\nlisteners: auto\n").listeners == 0)
        #expect(try loadConfig("root: site\nlisteners: 4\n").listenerCount == 4)
        let found = issues("root: site\nlisteners: 0\n")
        #expect(found.map { "\($0.line) \($0.key): \($0.message)" } == ["2 listeners: 0 is out of range 1...64"])
        #expect(issues("root: site\nlisteners: many\n").first?.message == "expected a whole number, got 'many'")
    }

    @Test func unknownKeysNameTheKeyAndLine() {
        let found = issues("root: site\nworkers:\n  min: 1\n  maximum: 3\nlisten_on: x\n")
        #expect(found.map(\.key) == ["workers.maximum", "listen_on"])
        #expect(found.map(\.line) == [4, 5])
        #expect(found.allSatisfy { $0.message == "unknown key" && $0.file.hasSuffix("webserver.yaml") })
    }

    @Test func aMisspelledKeyGetsTheNearestKnownOneInFileOrder() {
        let found = issues("acces_log: off\nroot: site\ntls: {lisen: [a]}\nworkers: {min: 4, max: 2}\ngzp: {}\ncolour: red\n")
        #expect(found.map(\.line) == [1, 3, 4, 5, 6])
        #expect(found[0].message == "unknown key; did you mean access_log?")
        #expect(found[1].message == "unknown key; did you mean tls.listen?")
        #expect(found[3].message == "unknown key; did you mean gzip?")
        #expect(found[4].message == "unknown key")
    }

    @Test func aMissingFileIsTheOnlyError() {
        do {
            _ = try ConfigLoader.load(path: "/nonexistent/webserver.yaml")
            Issue.record("a missing file loaded")
        } catch {
            #expect(error.issues.count == 1)
            #expect(error.description == "/nonexistent/webserver.yaml: cannot read the file: No such file or directory")
        }
    }

    @Test func wrongTypesAndImpossibleValuesAreAllReported() {
        let found = issues("""
            root: site
            listen: ["127.0.0.1:70000", "nonsense"]
            workers:
              min: 5
              max: 2
            keepalive:
              timeout: soon
              requests: many
            max_connections: 0
            """)
        let described = found.map { "\($0.line) \($0.key): \($0.message)" }
        #expect(described.contains { $0.hasPrefix("2 listen: '127.0.0.1:70000' is not ADDRESS:PORT") })
        #expect(described.contains { $0.hasPrefix("2 listen: 'nonsense'") })
        #expect(described.contains("3 workers: min (5) is above max (2)"))
        #expect(described.contains { $0.hasPrefix("7 keepalive.timeout: expected a duration") })
        #expect(described.contains("8 keepalive.requests: expected a whole number, got 'many'"))
        #expect(described.contains("9 max_connections: 0 is out of range 1...10000000"))
        #expect(found.count == 6)
    }

    @Test func aMissingRootIsAnError() {
        let found = issues("root: does-not-exist\n")
        #expect(found.count == 1)
        #expect(found.first?.key == "root")
        #expect(found.first?.line == 1)
        #expect(found.first?.message.hasSuffix("does-not-exist' does not exist") == true)
    }

    @Test func yamlSyntaxErrorsHaveALine() {
        let found = issues("root: site\nworkers: [1, 2\nlisten: x\n")
        #expect(found.count == 1)
        #expect(found.first?.message.hasPrefix("YAML syntax") == true)
        #expect((found.first?.line ?? 0) >= 2)
    }

    @Test func duplicateKeysAreErrors() {
        let found = issues("root: site\nroot: site\n")
        #expect(found.map(\.key) == ["root"])
        #expect(found.first?.message == "is set twice")
    }

    @Test func flagsReplaceTheFilesValues() throws {
        var overrides = ConfigOverrides()
        overrides.listen = ["127.0.0.1:1234"]
        overrides.workers = "2:6"
        overrides.accessLog = "off"
        overrides.logLevel = "debug"
        let config = try loadConfig("root: site\nlisten: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\naccess_log: a.log\n", overrides: overrides)
        #expect(config.listen.map(\.address) == ["127.0.0.1:1234"])
        #expect(config.workers.min == 2 && config.workers.max == 6)
        #expect(config.accessLog == nil)
        #expect(config.logLevel == .debug)
    }

    @Test func badFlagsNameTheFlag() {
        var overrides = ConfigOverrides()
        overrides.workers = "5:2"
        overrides.listen = ["127.0.0.1"]
        overrides.root = "/definitely/not/here"
        let found = issues("root: site\n", overrides: overrides)
        #expect(Set(found.map(\.key)) == ["--workers", "--listen", "--root"])
        #expect(found.allSatisfy { $0.file == "command line" })
    }

    @Test func withoutAFileARootIsNeeded() {
        do {
            _ = try ConfigLoader.load(path: nil)
            Issue.record("loaded without a root")
        } catch {
            #expect(error.issues.first?.message.contains("--root") == true)
        }
    }

    @Test func durations() {
        #expect(Section.parseDuration("250ms") == 250)
        #expect(Section.parseDuration("30s") == 30_000)
        #expect(Section.parseDuration("5m") == 300_000)
        #expect(Section.parseDuration("1h") == 3_600_000)
        #expect(Section.parseDuration("12") == 12_000)
        #expect(Section.parseDuration("1.5s") == nil)
        #expect(Section.parseDuration("-1s") == nil)
    }
}

@Suite struct SitePolicyConfigTests {
    @Test func policiesAndRulesAreRead() throws {
        let config = try loadConfig("""
            root: site
            symlinks: owner-match
            encoded_slash: reject
            autoindex: true
            error_pages: {404: /errors/404.html}
            headers:
              - match: "*.css"
                set: {Cache-Control: no-cache}
            """)
        #expect(config.symlinks == .ownerMatch && config.encodedSlash == .reject && config.autoindex)
        #expect(config.errorPages == ["404": "/errors/404.html"])
        #expect(config.headers == [ServerConfig.HeaderRule(match: "*.css", set: [["Cache-Control", "no-cache"]])])
        #expect(config.headers[0].matches("/a/b.css") && !config.headers[0].matches("/a/b.js"))
        #expect(ServerConfig.HeaderRule(match: "/assets/*", set: []).matches("/assets/x/y.png"))
        #expect(!ServerConfig.HeaderRule(match: "/robots.txt", set: []).matches("/robots.txt/x"))
    }

    @Test func badPoliciesAndRulesNameTheirKeyAndLine() {
        let found = issues("""
            root: site
            symlinks: sometimes
            autoindex: maybe
            error_pages: {200: /ok.html, 404: relative.html}
            headers:
              - match: "/a/*/b"
                set: {Cache-Control: x}
              - match: "*.js"
                set: {Content-Length: "5", "Bad Name": x}
              - set: {X-A: b}
            """)
        #expect(found.map(\.key) == [
            "symlinks", "autoindex", "error_pages.200", "error_pages.404", "headers[0].match",
            "headers[1].set.Content-Length", "headers[1].set.Bad Name", "headers[2].match",
        ])
        #expect(found.map(\.line) == [2, 3, 4, 4, 6, 9, 9, 10])
    }
}

@Suite struct AdminConfigTests {
    @Test func adminConfiguration() throws {
        let found = issues("root: site\nadmin: {listen: 'localhost:80', port: 3}\n")
        #expect(found.map(\.key) == ["admin.listen", "admin.port"])
        #expect(try loadConfig("root: site\nadmin: {listen: '127.0.0.1:9090'}\n").adminListen == "127.0.0.1:9090")
        #expect(try loadConfig("root: site\n").adminListen == nil)
    }
}

@Suite struct SystemdUnitTests {
    /// The shipped unit agrees with the server: notify type, reload by SIGHUP, the supervisor alone
    /// signalled, a stop timeout above the drain it can take with the shipped configuration.
    @Test func theShippedUnitFitsTheServer() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let unit = try String(contentsOf: root.appendingPathComponent("config/systemd/webserver.service"), encoding: .utf8)
        var settings: [String: String] = [:]
        for line in unit.split(separator: "\n") where !line.hasPrefix("#") && line.contains("=") {
            let parts = line.split(separator: "=", maxSplits: 1)
            settings[String(parts[0])] = String(parts[1])
        }
        #expect(settings["Type"] == "notify" && settings["KillMode"] == "mixed")
        #expect(settings["ExecReload"] == "/bin/kill -HUP $MAINPID")
        #expect(settings["RestartPreventExitStatus"] == "\(Supervisor.configErrorExit)")
        #expect(settings["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE")
        let config = try ConfigLoader.load(path: root.appendingPathComponent("config/webserver.yaml").path)
        let drain = config.timeouts.shutdownDelayMilliseconds + config.timeouts.shutdownMilliseconds
            + 2 * config.supervisor.killGraceMilliseconds
        let timeout = try #require(settings["TimeoutStopSec"].flatMap { Int($0.dropLast()) })
        #expect(timeout * 1000 > drain, "TimeoutStopSec \(timeout)s is not above the drain of \(drain)ms")
    }
}

struct ChoiceCase: CustomTestStringConvertible, Sendable {
    let key: String
    let yaml: @Sendable (String) -> String
    let valid: [String]
    let read: @Sendable (ServerConfig) -> String
    var testDescription: String { key }
}

/// Every key with a fixed set of choices: each valid value is read as itself (case-insensitive), any
/// other is an issue at its line that names the key and lists the choices, which come from the type.
@Suite struct ConfigChoiceTests {
    static let cases: [ChoiceCase] = [
        ChoiceCase(key: "symlinks", yaml: { "symlinks: \($0)" }, valid: ["follow", "owner-match", "never"], read: { $0.symlinks.rawValue }),
        ChoiceCase(key: "encoded_slash", yaml: { "encoded_slash: \($0)" }, valid: ["decode", "reject"], read: { $0.encodedSlash.rawValue }),
        ChoiceCase(key: "access_log_format", yaml: { "access_log_format: \($0)" }, valid: ["combined", "json"], read: { $0.accessLogFormat.rawValue }),
        ChoiceCase(key: "log_level", yaml: { "log_level: \($0)" }, valid: ["trace", "debug", "info", "notice", "warning", "error", "critical"],
                   read: { $0.logLevel.rawValue }),
        ChoiceCase(key: "proxy.forwarded_header", yaml: { "proxy: {forwarded_header: \($0)}" }, valid: ["x-forwarded-for", "forwarded", "none"],
                   read: { $0.proxy.forwardedHeader.rawValue }),
        ChoiceCase(key: "tls.min_version", yaml: { "tls: {min_version: '\($0)'}" }, valid: ["1.2", "1.3"], read: { $0.tls.minVersion.rawValue }),
    ]

    @Test(arguments: cases)
    func choice(_ row: ChoiceCase) throws {
        for value in row.valid {
            #expect(row.read(try loadConfig("root: site\n" + row.yaml(value) + "\n")) == value)
            #expect(row.read(try loadConfig("root: site\n" + row.yaml(value.uppercased()) + "\n")) == value)
        }
        let found = issues("root: site\n" + row.yaml("bogus") + "\n")
        #expect(found.map(\.key) == [row.key] && found.map(\.line) == [2])
        let listed = row.valid.dropLast().joined(separator: ", ") + " or " + row.valid.last!
        #expect(found.first?.message == "'bogus' is not one of \(listed)")
    }

    /// The configuration travels to every child as JSON: each choice must survive the trip.
    @Test func choicesSurviveTheTransport() throws {
        var config = ServerConfig()
        config.symlinks = .ownerMatch
        config.encodedSlash = .reject
        config.accessLogFormat = .json
        config.logLevel = .debug
        config.proxy.forwardedHeader = .forwarded
        config.tls.minVersion = .tls13
        config.tls.sites = [TLSSite(certificates: [CertificatePair(certificate: "/a.pem", key: "/a-key.pem")], ocsp: "/a.der")]
        let fd = try ConfigTransport.makeDescriptor(config)
        defer { close(fd) }
        #expect(try ConfigTransport.read(from: fd) == config)
    }
}
