import Foundation
import Glibc
import Server
import Testing

/// The built `webserver` binary, next to the test bundle in the build folder.
let webserverBinary: String = {
    let candidates = [
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("webserver").path,
        Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("webserver").path,
        packageRoot.appendingPathComponent(".build/debug/webserver").path,
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[2]
}()

/// The package's folder (this file is Tests/IntegrationTests/Support/TestServer.swift).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// A real server started from the built binary in a fresh directory with its own site, config, logs
/// and pid file, listening on ports the kernel picks (the log says which), with an admin listener whose
/// /readyz says when it serves. Stopped (and killed if need be) by `stop()`.
final class TestServer: @unchecked Sendable {
    let directory: URL
    let site: URL
    var configFile: URL { directory.appendingPathComponent("webserver.yaml") }
    var errorLog: URL { directory.appendingPathComponent("error.log") }
    var accessLog: URL { directory.appendingPathComponent("access.log") }
    var pidFile: URL { directory.appendingPathComponent("webserver.pid") }
    let process = Process()
    private(set) var port = 0
    var pid: Int32 { process.processIdentifier }

    /// `config` is YAML added to a base that sets listen, root, logs, pid file and the admin listener.
    /// `environment` is added to the server's; `launcher` runs first and execs the server (its last
    /// arguments are the server's command line). `binary` is the server's executable (a copy, for a test
    /// that replaces it on disk).
    init(
        config: String = "", flags: [String] = [], environment: [String: String] = [:], launcher: [String] = [],
        binary: String = webserverBinary, site populate: (URL) throws -> Void = TestServer.defaultSite
    ) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-it-\(UUID().uuidString)")
        site = directory.appendingPathComponent("site")
        try FileManager.default.createDirectory(at: site, withIntermediateDirectories: true)
        chmod(directory.path, 0o755)
        // Run as root (CI), the server serves as nobody (no `user` is set): its directory is nobody's,
        // as an operator gives a server its runtime directory, so it can remove its pid file at stop.
        if getuid() == 0, let entry = getpwnam(ServerConfig.defaultUser) { chown(directory.path, entry.pointee.pw_uid, entry.pointee.pw_gid) }
        try populate(site)
        let base = """
            listen: ["127.0.0.1:0"]
            root: site
            pid_file: webserver.pid
            access_log: access.log
            admin: {listen: "127.0.0.1:0"}

            """
        try (base + config).write(to: configFile, atomically: true, encoding: .utf8)
        if launcher.isEmpty {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["serve", "--config", configFile.path] + flags
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = launcher + [webserverBinary, "serve", "--config", configFile.path] + flags
        }
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.currentDirectoryURL = directory
        _ = FileManager.default.createFile(atPath: errorLog.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: errorLog)
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
    }

    static func defaultSite(_ site: URL) throws {
        try "<!doctype html><title>test</title><p>hello</p>\n".write(to: site.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
    }

    /// Starts the server and waits until it is ready: /readyz answers 200 (the listener and the manager
    /// run and the manager reports a worker), as a load balancer would wait.
    @discardableResult
    func start() throws -> TestServer {
        try process.run()
        // The ports the kernel chose, as the log announces them.
        guard waitUntil(seconds: 20, { !self.process.isRunning || (self.httpPort != nil && self.adminPort != nil) }),
              let port = httpPort, let admin = adminPort
        else { throw TestFailure("server did not start; its log:\n\(log())") }
        self.port = port
        guard waitUntil(seconds: 20, { self.readiness(admin) == 200 }) else {
            throw TestFailure("server did not become ready; its log:\n\(log())")
        }
        return self
    }

    /// The status /readyz answers on the admin port, or nil when nothing answers.
    func readiness(_ admin: Int) -> Int? {
        guard let text = try? exchange(port: admin, "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", timeout: 2) else {
            return nil
        }
        return statusCodes(text).first
    }

    /// The port of the first plain socket, the first TLS socket and the admin listener, as the log says.
    var httpPort: Int? { announcedPort("listening on http://127.0.0.1:") }
    var tlsPort: Int? { announcedPort("listening on https://127.0.0.1:") }
    var adminPort: Int? { announcedPort("admin on http://127.0.0.1:") }

    private func announcedPort(_ prefix: String) -> Int? { TestServer.announcedPort(prefix, in: log()) }

    /// The port after `prefix` in a server's log (it announces the ports the kernel chose for port 0).
    static func announcedPort(_ prefix: String = "listening on http://127.0.0.1:", in log: String) -> Int? {
        guard let range = log.range(of: prefix) else { return nil }
        return Int(log[range.upperBound...].prefix { $0.isNumber })
    }

    /// The admin listener's /metrics, parsed; nil when it does not answer.
    func metrics() -> Metrics? {
        guard let admin = adminPort, let response = try? adminGet(admin, "/metrics"), response.status == 200 else { return nil }
        return try? Metrics(response.body)
    }

    /// Reloads applied and refused so far (`webserver_reloads_total`), or nil when /metrics does not answer.
    func reloadCounts() -> (applied: Int, refused: Int)? {
        guard let metrics = metrics() else { return nil }
        return (Int(metrics[#"webserver_reloads_total{result="applied"}"#]), Int(metrics[#"webserver_reloads_total{result="refused"}"#]))
    }

    /// Sends SIGHUP (or runs `action`) and waits until the reload is applied (or, with `applied: false`,
    /// refused): what /metrics counts, the supervisor's own state.
    @discardableResult
    func reload(expecting applied: Bool = true, by action: () throws -> Void = {}) rethrows -> Bool {
        guard let before = reloadCounts() else { return false }
        try action()
        return waitUntil(seconds: 10) {
            guard let now = self.reloadCounts() else { return false }
            return applied ? now.applied == before.applied + 1 : now.refused == before.refused + 1
        }
    }

    /// Lines in the access log now (one per response).
    func accessLogLineCount() -> Int {
        ((try? String(contentsOf: accessLog, encoding: .utf8)) ?? "").reduce(0) { $1 == "\n" ? $0 + 1 : $0 }
    }

    /// Waits until `count` more responses than now have been logged: a load is flowing.
    @discardableResult
    func waitForTraffic(responses count: Int = 50, seconds: Double = 10) -> Bool {
        let start = accessLogLineCount()
        return waitUntil(seconds: seconds) { self.accessLogLineCount() >= start + count }
    }

    func log() -> String { (try? String(contentsOf: errorLog, encoding: .utf8)) ?? "" }

    /// Polls the error log for `text`.
    func waitForLog(_ text: String, seconds: Double = 10, count: Int = 1) -> Bool {
        waitUntil(seconds: seconds) { self.log().components(separatedBy: text).count - 1 >= count }
    }

    /// Sends SIGTERM and waits for the whole tree to exit; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning {
            kill(pid, SIGTERM)
            if !waitUntil(seconds: 40, { !self.process.isRunning }) {
                for child in descendants(of: pid) { kill(child, SIGKILL) }
                kill(pid, SIGKILL)
            }
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    /// Live processes of `role` below the supervisor, from their command lines.
    func pids(of role: String) -> [Int32] {
        descendants(of: pid).filter { commandLine(of: $0).hasPrefix("webserver: \(role)") }
    }

    var url: String { "http://127.0.0.1:\(port)" }

    deinit {
        if process.isRunning {
            for child in descendants(of: pid) { kill(child, SIGKILL) }
            kill(pid, SIGKILL)
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

