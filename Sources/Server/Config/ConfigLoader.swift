import Foundation
import Glibc
import Yams

/// One problem found in a configuration, with where it is: file, line, column and the key's full name.
public struct ConfigIssue: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var line: Int
    public var column: Int
    public var key: String
    public var message: String

    public var description: String {
        let place = line > 0 ? "\(file):\(line):\(column)" : file
        return key.isEmpty ? "\(place): \(message)" : "\(place): \(key): \(message)"
    }
}

/// Every problem found in one configuration; `check` prints them all, `serve` refuses to start.
public struct ConfigErrors: Error, CustomStringConvertible, Sendable {
    public var issues: [ConfigIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// Values from the command line that replace the file's value for the same key.
public struct ConfigOverrides: Sendable {
    public var root: String?
    public var listen: [String] = []
    public var workers: String?
    public var pidFile: String?
    public var accessLog: String?
    public var errorLog: String?
    public var logLevel: String?
    public var tlsListen: [String] = []
    /// `--proxy-protocol`: the sockets given with --listen and --tls-listen expect a PROXY header.
    public var proxyProtocol = false
    /// `--admin-listen ADDR:PORT` (or off).
    public var adminListen: String?
    /// `--trusted-proxy CIDR`, repeatable: replaces `proxy.trusted`.
    public var trustedProxies: [String] = []
    public var cert: String?
    public var key: String?

    public init() {}
}

/// Reads `webserver.yaml` into a `ServerConfig`, checking every key, type and value.
///
/// Relative paths in a file are taken relative to the file's directory (so a config works from any
/// working directory); relative paths given as flags are taken relative to the working directory.
public enum ConfigLoader {
    /// Loads `path` (nil: no file, defaults only) and applies `overrides`. Throws `ConfigErrors`. With
    /// `makeDevCertificate`, a missing development certificate (`tls.dev_certificate`) is made here, so
    /// that `serve` and a reload find it; `check` only says it will be.
    public static func load(
        path: String?, overrides: ConfigOverrides = ConfigOverrides(), makeDevCertificate: Bool = false
    ) throws(ConfigErrors) -> ServerConfig {
        var config = ServerConfig()
        var issues: [ConfigIssue] = []
        var rootMark: (Int, Int)? = nil
        var rootFromFile = false
        if let path {
            let reader = DocumentReader(file: path)
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                reader.read(text, into: &config)
                rootMark = reader.rootMark
                rootFromFile = reader.rootMark != nil
                if !reader.parsed { throw ConfigErrors(issues: reader.issues) }
            } else {
                reader.issue(line: 0, column: 0, key: "", "cannot read the file: \(String(cString: strerror(errno)))")
            }
            issues += reader.issues
        }
        let file = path ?? "command line"
        let cwd = FileManager.default.currentDirectoryPath

        func flagIssue(_ flag: String, _ message: String) {
            issues.append(ConfigIssue(file: "command line", line: 0, column: 0, key: flag, message: message))
        }
        if let root = overrides.root { config.root = absolute(root, base: cwd); rootFromFile = false }
        if !overrides.listen.isEmpty {
            config.listen = overrides.listen.map { $0.hasPrefix("unix:") ? "unix:" + absolute(String($0.dropFirst(5)), base: cwd) : $0 }
            config.listenProxyProtocol = overrides.listen.map { _ in overrides.proxyProtocol }
            for value in overrides.listen where SocketAddress(parsing: value) == nil && !value.hasPrefix("unix:") {
                flagIssue("--listen", "'\(value)' is not ADDRESS:PORT (IPv4, [IPv6], or *:PORT; port 0-65535)")
            }
        }
        if let workers = overrides.workers {
            if let pair = parseWorkers(workers) {
                (config.workers.min, config.workers.max) = pair
            } else {
                flagIssue("--workers", "'\(workers)' is not N or MIN:MAX with 1 <= MIN <= MAX <= 1024")
            }
        }
        if !overrides.tlsListen.isEmpty {
            config.tls.listen = overrides.tlsListen.map { $0.hasPrefix("unix:") ? "unix:" + absolute(String($0.dropFirst(5)), base: cwd) : $0 }
            config.tls.listenProxyProtocol = overrides.tlsListen.map { _ in overrides.proxyProtocol }
            for value in overrides.tlsListen where SocketAddress(parsing: value) == nil && !value.hasPrefix("unix:") {
                flagIssue("--tls-listen", "'\(value)' is not ADDRESS:PORT (IPv4, [IPv6], or *:PORT; port 0-65535)")
            }
        }
        // Unix sockets from flags get the default owner and mode; ones no longer listened on are dropped.
        for value in config.allListen where value.hasPrefix("unix:") && !config.unixSockets.contains(where: { $0.address == value }) {
            config.unixSockets.append(ServerConfig.UnixSocket(address: value))
        }
        let listening = config.allListen
        config.unixSockets.removeAll { !listening.contains($0.address) }
        if let cert = overrides.cert { config.tls.cert = absolute(cert, base: cwd) }
        if let key = overrides.key { config.tls.key = absolute(key, base: cwd) }
        if let admin = overrides.adminListen {
            if admin == "off" { config.adminListen = nil } else if SocketAddress(parsing: admin) != nil { config.adminListen = admin } else {
                flagIssue("--admin-listen", "'\(admin)' is not ADDRESS:PORT (IPv4, [IPv6], or *:PORT; port 0-65535), or off")
            }
        }
        if !overrides.trustedProxies.isEmpty {
            config.proxy.trusted = overrides.trustedProxies
            for value in overrides.trustedProxies where Networks([value]) == nil {
                flagIssue("--trusted-proxy", "'\(value)' is not a network such as 10.0.0.0/8, 192.0.2.7 or fd00::/8")
            }
        }
        if overrides.proxyProtocol && overrides.listen.isEmpty && overrides.tlsListen.isEmpty {
            flagIssue("--proxy-protocol", "applies to the sockets given with --listen and --tls-listen; give at least one")
        }
        if let pid = overrides.pidFile { config.pidFile = absolute(pid, base: cwd) }
        if let log = overrides.accessLog { config.accessLog = log == "off" ? nil : absolute(log, base: cwd) }
        if let log = overrides.errorLog { config.errorLog = log == "stderr" ? nil : absolute(log, base: cwd) }
        if let level = overrides.logLevel {
            if logLevels.contains(level) { config.logLevel = level } else {
                flagIssue("--log-level", "'\(level)' is not one of \(logLevels.joined(separator: ", "))")
            }
        }

        // Checks that need the final values.
        if config.root.isEmpty {
            issues.append(ConfigIssue(file: file, line: 0, column: 0, key: "root",
                                      message: "no root directory: set 'root' in the config or pass --root DIR"))
        } else {
            var info = stat()
            let place = rootFromFile ? (file, rootMark?.0 ?? 0, rootMark?.1 ?? 0, "root") : ("command line", 0, 0, "--root")
            if stat(config.root, &info) != 0 {
                issues.append(ConfigIssue(file: place.0, line: place.1, column: place.2, key: place.3,
                                          message: "'\(config.root)' does not exist"))
            } else if info.st_mode & S_IFMT != S_IFDIR {
                issues.append(ConfigIssue(file: place.0, line: place.1, column: place.2, key: place.3,
                                          message: "'\(config.root)' is not a directory"))
            } else if let real = realpath(config.root, nil) {
                config.root = String(cString: real)
                free(real)
            }
        }
        for (flag, value) in [("--pid-file", overrides.pidFile), ("--access-log", overrides.accessLog == "off" ? nil : overrides.accessLog)] {
            if let value, !parentExists(absolute(value, base: cwd)) {
                flagIssue(flag, "the directory of '\(value)' does not exist")
            }
        }
        // TLS: a certificate and key that load and match, for every TLS socket; a plain and a TLS socket
        // cannot share an address.
        if !config.tls.listen.isEmpty {
            // Only when both are missing: one without the other is an operator's file, never overwritten.
            if config.tls.devCertificate, let cert = config.tls.cert, let key = config.tls.key,
               access(cert, F_OK) != 0 && access(key, F_OK) != 0 {
                if makeDevCertificate && issues.isEmpty {  // a configuration with errors makes no files
                    do {
                        let made = try DevCertificates.make(certificate: cert, key: key)
                        config.tls.madeDevCertificate = made.caCertificate
                    } catch {
                        issues.append(ConfigIssue(file: file, line: 0, column: 0, key: "tls.dev_certificate", message: error.description))
                    }
                }
            }
            if config.tls.devCertificate && !makeDevCertificate && (config.tls.cert.map { access($0, F_OK) != 0 } ?? false)
                && (config.tls.key.map { access($0, F_OK) != 0 } ?? false) {
                // `check`: the certificate is made on the first `serve`.
            } else if config.tls.cert != nil && config.tls.key != nil {
                do {
                    _ = try TLSSites(settings: config.tls)
                } catch {
                    issues.append(ConfigIssue(file: overrides.cert != nil || overrides.key != nil ? "command line" : file,
                                              line: 0, column: 0, key: overrides.cert != nil ? "--cert" : "tls.cert", message: error.description))
                }
            } else {
                issues.append(ConfigIssue(file: file, line: 0, column: 0, key: "tls",
                                          message: "TLS sockets need a certificate and a key: set tls.cert and tls.key, or pass --cert and --key"))
            }
        }
        // Workers read the certificates after the supervisor has become `user`: a key only root can read
        // would fail there, after a start that looked fine, so say it now.
        if let user = config.user, getuid() == 0, !config.tls.listen.isEmpty {
            for path in Supervisor.certificatePaths(config) where !ConfigLoader.readable(path, byUser: user) {
                issues.append(ConfigIssue(file: file, line: 0, column: 0, key: "tls",
                                          message: "\(path) is not readable by '\(user)', whom the server runs as once the sockets are bound; give that user read access (for example: chgrp ssl-cert FILE; chmod 640 FILE, with '\(user)' in ssl-cert)"))
            }
        }
        if config.tls.redirectHTTP && config.tls.listen.isEmpty {
            issues.append(ConfigIssue(file: file, line: 0, column: 0, key: "tls.redirect_http", message: "needs a TLS socket to redirect to (tls.listen)"))
        }
        let plain = Set(config.listen.compactMap(SocketAddress.init(parsing:)))
        for value in config.tls.listen {
            if let address = SocketAddress(parsing: value), address.port != 0, plain.contains(address) {
                issues.append(ConfigIssue(file: file, line: 0, column: 0, key: "tls.listen", message: "'\(value)' is also a plain listen address"))
            }
        }
        if !issues.isEmpty { throw ConfigErrors(issues: issues) }
        return config
    }

    static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Whether `user` may read the file at `path` by its mode bits (owner, then its groups, then others).
    static func readable(_ path: String, byUser user: String) -> Bool {
        guard let entry = getpwnam(user) else { return false }
        var info = stat()
        guard stat(path, &info) == 0 else { return true }  // a missing file is reported elsewhere
        let uid = entry.pointee.pw_uid
        let gid = entry.pointee.pw_gid
        if uid == 0 { return true }
        if info.st_uid == uid { return info.st_mode & S_IRUSR != 0 }
        var groups = [gid_t](repeating: 0, count: 256)
        var count = Int32(groups.count)
        _ = getgrouplist(entry.pointee.pw_name, gid, &groups, &count)
        if groups.prefix(Int(max(0, count))).contains(info.st_gid) || info.st_gid == gid { return info.st_mode & S_IRGRP != 0 }
        return info.st_mode & S_IROTH != 0
    }

    static func parseWorkers(_ text: String) -> (Int, Int)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return nil }
        guard let low = Int(parts[0]), let high = Int(parts.count == 2 ? parts[1] : parts[0]) else { return nil }
        guard low >= 1, low <= high, high <= 1024 else { return nil }
        return (low, high)
    }

    static func absolute(_ path: String, base: String) -> String {
        let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: base, isDirectory: true))
        return url.standardizedFileURL.path
    }

    static func parentExists(_ path: String) -> Bool {
        var info = stat()
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return stat(parent, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }
}

/// Walks one YAML document, filling a `ServerConfig` and collecting issues with their marks.
final class DocumentReader {
    let file: String
    let base: String
    var issues: [ConfigIssue] = []
    var rootMark: (Int, Int)?
    /// Whether the YAML parsed; when not, checks of the resulting values would only add noise.
    var parsed = false
    /// `unix:/path` listen entries with their owner and mode, as they are read.
    var unixSockets: [ServerConfig.UnixSocket] = []

    init(file: String) {
        self.file = file
        let cwd = FileManager.default.currentDirectoryPath
        base = URL(fileURLWithPath: file, relativeTo: URL(fileURLWithPath: cwd, isDirectory: true))
            .deletingLastPathComponent().standardizedFileURL.path
    }

    func issue(line: Int, column: Int, key: String, _ message: String) {
        issues.append(ConfigIssue(file: file, line: line, column: column, key: key, message: message))
    }

    func issue(_ node: Node, key: String, _ message: String) {
        issue(line: node.mark?.line ?? 0, column: node.mark?.column ?? 0, key: key, message)
    }

    func read(_ text: String, into config: inout ServerConfig) {
        let document: Node?
        do {
            document = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            if case .scanner(_, let problem, let mark, _) = error {
                issue(line: mark.line, column: mark.column, key: "", "YAML syntax: \(problem)")
            } else if case .parser(_, let problem, let mark, _) = error {
                issue(line: mark.line, column: mark.column, key: "", "YAML syntax: \(problem)")
            } else if case .composer(_, let problem, let mark, _) = error {
                issue(line: mark.line, column: mark.column, key: "", "YAML: \(problem)")
            } else if case .duplicatedKeysInMapping(let duplicates, let context) = error {
                for key in duplicates {
                    issue(line: context.mark.line, column: context.mark.column, key: key, "is set twice")
                }
            } else {
                issue(line: 0, column: 0, key: "", "YAML: \(error)")
            }
            return
        } catch {
            issue(line: 0, column: 0, key: "", "YAML: \(error)")
            return
        }
        parsed = true
        guard let document else { return }  // An empty file is all defaults.
        guard let top = Section(document, path: "", reader: self) else { return }

        if let node = top.take("listen") {
            (config.listen, config.listenProxyProtocol) = listenEntries(node, key: "listen", required: true)
        }
        if let (value, node) = top.string("root") {
            config.root = ConfigLoader.absolute(value, base: base)
            rootMark = (node.mark?.line ?? 0, node.mark?.column ?? 0)
        }
        if let (value, node) = top.string("index") {
            if value.isEmpty || value.contains("/") || value.hasPrefix(".") {
                issue(node, key: "index", "must be a plain file name, got '\(value)'")
            } else { config.index = value }
        }
        if let (value, node) = top.string("symlinks") {
            if ["follow", "owner-match", "never"].contains(value) { config.symlinks = value } else {
                issue(node, key: "symlinks", "'\(value)' is not one of follow, owner-match, never")
            }
        }
        if let (value, node) = top.string("encoded_slash") {
            if ["decode", "reject"].contains(value) { config.encodedSlash = value } else {
                issue(node, key: "encoded_slash", "'\(value)' is not one of decode, reject")
            }
        }
        if let value = top.boolean("autoindex") { config.autoindex = value }
        if let section = top.section("error_pages") {
            for (key, keyNode, value) in section.all() {
                guard let status = Int(key), (400...599).contains(status) else {
                    issue(keyNode, key: "error_pages.\(key)", "expected a status from 400 to 599")
                    continue
                }
                guard let path = value.scalar?.string, path.hasPrefix("/"), !path.contains("?") else {
                    issue(value, key: "error_pages.\(key)", "expected a path beneath the root such as /errors/404.html")
                    continue
                }
                config.errorPages[String(status)] = path
            }
        }
        if let node = top.take("headers") {
            config.headers = headerRules(node)
        }
        if let (value, node) = top.string("user") {
            if getpwnam(value) == nil { issue(node, key: "user", "no such user '\(value)'") } else { config.user = value }
        }
        if let (value, node) = top.string("pid_file") {
            config.pidFile = path(value, node, key: "pid_file")
        }
        if let (value, node) = top.string("access_log_format") {
            if ["combined", "json"].contains(value) { config.accessLogFormat = value } else {
                issue(node, key: "access_log_format", "'\(value)' is not combined or json")
            }
        }
        if let (value, node) = top.string("access_log") {
            config.accessLog = value == "off" || value == "false" ? nil : path(value, node, key: "access_log")
        }
        if let (value, node) = top.string("error_log") {
            config.errorLog = value == "stderr" ? nil : path(value, node, key: "error_log")
        }
        if let (value, node) = top.string("log_level") {
            if ConfigLoader.logLevels.contains(value) { config.logLevel = value } else {
                issue(node, key: "log_level", "'\(value)' is not one of \(ConfigLoader.logLevels.joined(separator: ", "))")
            }
        }
        if let value = top.integer("max_connections", in: 1...10_000_000) { config.maxConnections = value }
        if let value = top.integer("backlog", in: 1...65535) { config.backlog = value }
        if let node = top.peek("defer_accept"), node.scalar?.string == "off" {
            _ = top.take("defer_accept")
            config.deferAcceptMilliseconds = 0
        } else if let value = top.duration("defer_accept") {
            config.deferAcceptMilliseconds = value
        }
        if let node = top.peek("notsent_lowat"), node.scalar?.string == "off" {
            _ = top.take("notsent_lowat")
            config.notSentLowat = 0
        } else if let value = top.size("notsent_lowat", in: 1024...67_108_864) {
            config.notSentLowat = value
        }

        if let section = top.section("workers") {
            let minimum = section.integer("min", in: 1...1024)
            var maximum: Int? = nil
            if let node = section.peek("max"), node.scalar?.string == "auto" {
                _ = section.take("max")
                maximum = ServerConfig.processorCount
            } else {
                maximum = section.integer("max", in: 1...1024)
            }
            if let minimum { config.workers.min = minimum }
            if let maximum { config.workers.max = maximum }
            if config.workers.min > config.workers.max {
                issue(section.anchor, key: "workers", "min (\(config.workers.min)) is above max (\(config.workers.max))")
            }
            if let value = section.integer("connections_per_worker", in: 1...1_000_000) { config.workers.connectionsPerWorker = value }
            if let value = section.duration("idle_timeout") { config.workers.idleMilliseconds = value }
            if let value = section.integer("recycle_after", in: 0...Int(Int32.max)) { config.workers.recycleAfter = value }
            section.finish()
        }
        if let section = top.section("keepalive") {
            if let value = section.duration("timeout") { config.keepalive.timeoutMilliseconds = value }
            if let value = section.integer("requests", in: 1...10_000_000) { config.keepalive.requests = value }
            section.finish()
        }
        if let section = top.section("timeouts") {
            if let value = section.duration("header") { config.timeouts.headerMilliseconds = value }
            if let value = section.duration("body") { config.timeouts.bodyMilliseconds = value }
            if let value = section.duration("send") { config.timeouts.sendMilliseconds = value }
            if let value = section.duration("shutdown") { config.timeouts.shutdownMilliseconds = value }
            if let value = section.duration("shutdown_delay", allowZero: true) { config.timeouts.shutdownDelayMilliseconds = value }
            section.finish()
        }
        if let section = top.section("limits") {
            if let value = section.size("request_line", in: 64...1_048_576) { config.limits.requestLine = value }
            if let value = section.size("header_bytes", in: 256...1_048_576) { config.limits.headerBytes = value }
            if let value = section.integer("header_count", in: 1...10_000) { config.limits.headerCount = value }
            if let value = section.size("header_field", in: 64...1_048_576) { config.limits.headerField = value }
            if let value = section.size("body", in: 0...(1 << 30)) { config.limits.bodyBytes = value }
            if let value = section.integer("ranges", in: 1...1000) { config.limits.ranges = value }
            if config.limits.requestLine > config.limits.headerBytes {
                issue(section.anchor, key: "limits", "request_line (\(config.limits.requestLine)) is above header_bytes (\(config.limits.headerBytes))")
            }
            section.finish()
        }
        if let section = top.section("file_cache") {
            if let value = section.integer("entries", in: 0...1_000_000) { config.fileCache.entries = value }
            if let value = section.duration("valid") { config.fileCache.validMilliseconds = value }
            if let value = section.size("inline_max", in: 0...16_777_216) { config.fileCache.inlineMax = value }
            section.finish()
        }
        if let section = top.section("admin") {
            if let (value, node) = section.string("listen") {
                if value == "off" { config.adminListen = nil } else if SocketAddress(parsing: value) != nil { config.adminListen = value } else {
                    issue(node, key: "admin.listen", "'\(value)' is not ADDRESS:PORT (IPv4, [IPv6], or *:PORT; port 0-65535), or off")
                }
            }
            section.finish()
        }
        if let section = top.section("proxy") {
            if let node = section.take("trusted") {
                let items: [Node]
                if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
                var values: [String] = []
                for item in items {
                    let text = item.scalar?.string ?? ""
                    if Networks([text]) != nil { values.append(text) } else {
                        issue(item, key: "proxy.trusted", "'\(text)' is not a network such as 10.0.0.0/8, 192.0.2.7 or fd00::/8")
                    }
                }
                config.proxy.trusted = values
            }
            if let value = section.duration("header_timeout") { config.proxy.headerTimeoutMilliseconds = value }
            if let (value, node) = section.string("forwarded_header") {
                if ClientAddress.Header(rawValue: value.lowercased()) != nil { config.proxy.forwardedHeader = value.lowercased() } else {
                    issue(node, key: "proxy.forwarded_header", "'\(value)' is not x-forwarded-for, forwarded or none")
                }
            }
            section.finish()
        }
        if let section = top.section("gzip") {
            if let value = section.boolean("enabled") { config.gzip.enabled = value }
            if let value = section.integer("level", in: 1...9) { config.gzip.level = value }
            if let value = section.size("min_length", in: 0...(1 << 30)) { config.gzip.minLength = value }
            if let value = mediaTypes(section, "types") { config.gzip.types = value }
            if let value = mediaTypes(section, "never") { config.gzip.never = value }
            if let value = section.boolean("precompressed") { config.gzip.precompressed = value }
            if let value = section.size("cache", in: 0...(1 << 30)) { config.gzip.cacheBytes = value }
            if let value = section.size("cache_file_max", in: 0...(1 << 30)) { config.gzip.cacheFileMax = value }
            section.finish()
        }
        if let section = top.section("tls") {
            if let node = section.take("listen") {
                (config.tls.listen, config.tls.listenProxyProtocol) = listenEntries(node, key: "tls.listen", required: false)
            }
            let defaultPairs = certificatePairs(section, key: "tls")
            if let first = defaultPairs.first {
                config.tls.cert = first[0]
                config.tls.key = first[1]
                config.tls.moreDefaultPairs = Array(defaultPairs.dropFirst())
            }
            if let node = section.take("sites") {
                if case .sequence(let items) = node {
                    for (position, item) in items.enumerated() {
                        guard let site = Section(item, path: "tls.sites[\(position)]", reader: self) else { continue }
                        let pairs = certificatePairs(site, key: "tls.sites[\(position)]")
                        var ocsp = ""
                        if let (value, node) = site.string("ocsp") { ocsp = path(value, node, key: "tls.sites[\(position)].ocsp") ?? "" }
                        if pairs.isEmpty { issue(item, key: "tls.sites[\(position)]", "needs cert and key") } else {
                            config.tls.sites.append(pairs)
                            config.tls.siteOCSP.append(ocsp)
                        }
                        site.finish()
                    }
                } else {
                    issue(node, key: "tls.sites", "expected a list of {cert: FILE, key: FILE}")
                }
            }
            if let (value, node) = section.string("min_version") {
                if ["1.2", "1.3"].contains(value) { config.tls.minVersion = value } else {
                    issue(node, key: "tls.min_version", "'\(value)' is not 1.2 or 1.3")
                }
            }
            if let value = section.duration("handshake_timeout") { config.tls.handshakeMilliseconds = value }
            if let (value, _) = section.string("ciphers") { config.tls.ciphers = value }
            if let (value, _) = section.string("ciphersuites") { config.tls.ciphersuites = value }
            if let (value, _) = section.string("groups") { config.tls.groups = value }
            if let value = section.boolean("dev_certificate") { config.tls.devCertificate = value }
            if let (value, node) = section.string("ocsp") { config.tls.ocsp = path(value, node, key: "tls.ocsp") }
            if let value = section.boolean("session_resumption") { config.tls.sessionResumption = value }
            if let value = section.boolean("redirect_http") { config.tls.redirectHTTP = value }
            if let value = section.duration("ticket_key_rotation") { config.tls.ticketKeyRotationMilliseconds = value }
            if let (value, node) = section.string("hsts") {
                if value == "off" { config.tls.hsts = nil } else if value.hasPrefix("max-age="), value.utf8.allSatisfy({ $0 >= 32 && $0 < 127 }) {
                    config.tls.hsts = value
                } else {
                    issue(node, key: "tls.hsts", "expected a Strict-Transport-Security value such as \"max-age=63072000; includeSubDomains\", or off")
                }
            }
            section.finish()
        }
        if let section = top.section("supervisor") {
            if let value = section.duration("heartbeat_interval") { config.supervisor.heartbeatIntervalMilliseconds = value }
            if let value = section.duration("heartbeat_timeout") { config.supervisor.heartbeatTimeoutMilliseconds = value }
            if let value = section.duration("kill_grace") { config.supervisor.killGraceMilliseconds = value }
            if let value = section.duration("restart_delay") { config.supervisor.restartDelayMilliseconds = value }
            if let value = section.duration("restart_delay_max") { config.supervisor.restartDelayMaxMilliseconds = value }
            if let value = section.integer("restart_intensity", in: 1...1000) { config.supervisor.restartIntensity = value }
            if let value = section.duration("restart_period") { config.supervisor.restartPeriodMilliseconds = value }
            let s = config.supervisor
            if s.heartbeatIntervalMilliseconds < 10 {
                issue(section.anchor, key: "supervisor.heartbeat_interval", "must be at least 10ms")
            }
            if s.heartbeatTimeoutMilliseconds <= s.heartbeatIntervalMilliseconds {
                issue(section.anchor, key: "supervisor.heartbeat_timeout",
                      "(\(s.heartbeatTimeoutMilliseconds)ms) must be longer than heartbeat_interval (\(s.heartbeatIntervalMilliseconds)ms)")
            }
            if s.restartDelayMaxMilliseconds < s.restartDelayMilliseconds {
                issue(section.anchor, key: "supervisor.restart_delay_max", "is below restart_delay")
            }
            section.finish()
        }
        config.unixSockets = unixSockets
        top.finish()
    }

    /// `listen` or `tls.listen`: one address or a list, each `ADDRESS:PORT` or `{address: ADDRESS:PORT,
    /// proxy_protocol: true}`; the addresses and, for each, whether a PROXY header comes first.
    private func listenEntries(_ node: Node, key: String, required: Bool) -> ([String], [Bool]) {

        let items: [Node]
        switch node {
        case .sequence(let sequence): items = Array(sequence)
        case .scalar, .mapping: items = [node]
        default: items = []
        }
        var seen = Set<SocketAddress>()
        var values: [String] = []
        var proxy: [Bool] = []
        for item in items {
            var text = item.scalar?.string
            var wantsProxy = false
            var unix = ServerConfig.UnixSocket(address: "")
            var unixOptions = false
            if case .mapping = item, let entry = Section(item, path: key, reader: self) {
                text = entry.string("address")?.0
                if text == nil { issue(item, key: key, "each entry needs address: ADDRESS:PORT or unix:/PATH") }
                wantsProxy = entry.boolean("proxy_protocol") ?? false
                if let (owner, _) = entry.string("owner") {
                    let parts = owner.split(separator: ":", maxSplits: 1).map(String.init)
                    unix.owner = parts.first
                    unix.group = parts.count > 1 ? parts[1] : nil
                    unixOptions = true
                }
                if let (mode, node) = entry.string("mode") {
                    if let value = Int(mode, radix: 8), (0...0o777).contains(value) { unix.mode = value } else {
                        issue(node, key: "\(key).mode", "'\(mode)' is not an octal mode such as 0660")
                    }
                    unixOptions = true
                }
                entry.finish()
                guard text != nil else { continue }
            }
            guard var value = text else {
                issue(item, key: key, "each entry must be ADDRESS:PORT, unix:/PATH or {address: ..., proxy_protocol: true}")
                continue
            }
            if value.hasPrefix("unix:") {
                // A Unix-domain socket; a relative path is relative to the configuration file.
                let path = String(value.dropFirst(5))
                guard !path.isEmpty, path.utf8.count < 100 else {
                    issue(item, key: key, "'\(value)' needs a socket path shorter than 100 bytes")
                    continue
                }
                value = "unix:" + ConfigLoader.absolute(path, base: base)
                if values.contains(value) { issue(item, key: key, "'\(value)' is listed twice") }
                unix.address = value
                values.append(value)
                proxy.append(wantsProxy)
                unixSockets.append(unix)
                continue
            }
            if unixOptions { issue(item, key: key, "owner and mode apply to unix:/PATH sockets only") }
            if let address = SocketAddress(parsing: value) {
                if !seen.insert(address).inserted { issue(item, key: key, "'\(value)' is listed twice") }
                values.append(value)
                proxy.append(wantsProxy)
            } else {
                issue(item, key: key, "'\(value)' is not ADDRESS:PORT (IPv4, [IPv6], or *:PORT; port 0-65535)")
            }
        }
        if items.isEmpty && required { issue(node, key: key, "needs at least one address") }
        return (values, proxy)
    }

    /// A list of media types or patterns (`text/*`, `application/*+json`, `*/*`).
    private func mediaTypes(_ section: Section, _ name: String) -> [String]? {
        guard let node = section.take(name) else { return nil }
        let items: [Node]
        if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
        var values: [String] = []
        for item in items {
            let text = item.scalar?.string ?? ""
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            let valid = parts.count == 2 && !parts[0].isEmpty && !parts[1].isEmpty
                && text.utf8.allSatisfy { $0 > 32 && $0 < 127 && $0 != 59 && $0 != 44 }
                && text.filter({ $0 == "*" }).count <= 1
            if valid { values.append(text.lowercased()) } else {
                issue(item, key: "\(section.full(name))", "'\(text)' is not a media type such as text/css, text/* or application/*+json")
            }
        }
        return values
    }

    /// `cert` and `key` in `section`, each a file or a list of files of the same length: [cert, key] pairs.
    private func certificatePairs(_ section: Section, key: String) -> [[String]] {
        func files(_ name: String) -> ([String], Node)? {
            guard let node = section.take(name) else { return nil }
            let items: [Node]
            if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
            var paths: [String] = []
            for item in items {
                guard let text = item.scalar?.string, !text.isEmpty else {
                    issue(item, key: "\(key).\(name)", "expected a file or a list of files")
                    continue
                }
                if let full = path(text, item, key: "\(key).\(name)") { paths.append(full) }
            }
            return (paths, node)
        }
        let certs = files("cert")
        let keys = files("key")
        guard let (certPaths, certNode) = certs, let (keyPaths, _) = keys else {
            if let (_, node) = certs ?? keys { issue(node, key: key, "cert and key go together") }
            return []
        }
        guard certPaths.count == keyPaths.count else {
            issue(certNode, key: "\(key).cert", "\(certPaths.count) certificates but \(keyPaths.count) keys")
            return []
        }
        return zip(certPaths, keyPaths).map { [$0, $1] }
    }

    /// `headers`: a list of `{match: PATTERN, set: {Name: value, ...}}`.
    private func headerRules(_ node: Node) -> [ServerConfig.HeaderRule] {
        guard case .sequence(let items) = node else {
            issue(node, key: "headers", "expected a list of {match: PATTERN, set: {NAME: VALUE}}")
            return []
        }
        var rules: [ServerConfig.HeaderRule] = []
        for (position, item) in items.enumerated() {
            let key = "headers[\(position)]"
            guard let section = Section(item, path: key, reader: self) else { continue }
            let pattern = section.string("match")
            var pairs: [[String]] = []
            if let set = section.section("set") {
                for (name, nameNode, value) in set.all() {
                    let forbidden = ["content-length", "transfer-encoding", "content-range", "connection", "date", "server",
                                     "content-type", "etag", "last-modified", "accept-ranges", "keep-alive", "upgrade"]
                    guard !name.isEmpty, name.utf8.allSatisfy(RequestParser.isTokenByte) else {
                        issue(nameNode, key: "\(key).set.\(name)", "is not a valid header name")
                        continue
                    }
                    guard !forbidden.contains(name.lowercased()) else {
                        issue(nameNode, key: "\(key).set.\(name)", "is set by the server and cannot be changed here")
                        continue
                    }
                    guard let text = value.scalar?.string, !text.isEmpty,
                          text.utf8.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else {
                        issue(value, key: "\(key).set.\(name)", "needs a one-line value without control characters")
                        continue
                    }
                    pairs.append([name, text])
                }
            } else {
                issue(item, key: "\(key).set", "needs the headers to set")
            }
            section.finish()
            guard let (match, matchNode) = pattern else {
                issue(item, key: "\(key).match", "needs a pattern: /exact/path, /prefix/*, or *.suffix")
                continue
            }
            let stars = match.filter { $0 == "*" }.count
            guard stars <= 1, stars == 0 ? match.hasPrefix("/") : (match.hasPrefix("*") || match.hasSuffix("*") && match.hasPrefix("/")) else {
                issue(matchNode, key: "\(key).match", "'\(match)' is not /exact/path, /prefix/*, or *.suffix")
                continue
            }
            rules.append(ServerConfig.HeaderRule(match: match, set: pairs))
        }
        // Every rule could match one file: together they must fit beside the server's own headers.
        let total = rules.flatMap(\.set).reduce(0) { $0 + $1[0].utf8.count + $1[1].utf8.count + 4 }
        if total > 2048 { issue(node, key: "headers", "all the headers together come to \(total) bytes; the most is 2048") }
        return rules
    }

    private func path(_ value: String, _ node: Node, key: String) -> String? {
        let full = ConfigLoader.absolute(value, base: base)
        if !ConfigLoader.parentExists(full) {
            issue(node, key: key, "the directory of '\(value)' does not exist")
            return nil
        }
        return full
    }
}

/// One YAML mapping being read: hands out its keys once each and reports the ones nobody took.
final class Section {
    let node: Node
    /// Where section-wide issues point: the section's key in its parent, else the mapping itself.
    let anchor: Node
    let path: String
    unowned let reader: DocumentReader
    private var entries: [(key: String, keyNode: Node, value: Node)] = []
    private var taken = Set<String>()

    init?(_ node: Node, path: String, reader: DocumentReader, keyNode: Node? = nil) {
        self.node = node
        anchor = keyNode ?? node
        self.path = path
        self.reader = reader
        guard case .mapping(let mapping) = node else {
            reader.issue(node, key: path, "expected a mapping of keys to values")
            return nil
        }
        var seen = Set<String>()
        for (key, value) in mapping {
            guard let name = key.scalar?.string else {
                reader.issue(key, key: path, "keys must be plain names")
                continue
            }
            if !seen.insert(name).inserted {
                reader.issue(key, key: full(name), "is set twice")
                continue
            }
            entries.append((name, key, value))
        }
    }

    func full(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func peek(_ key: String) -> Node? { entries.first { $0.key == key }?.value }

    func take(_ key: String) -> Node? {
        guard let entry = entries.first(where: { $0.key == key }) else { return nil }
        taken.insert(key)
        return entry.value
    }

    func string(_ key: String) -> (String, Node)? {
        guard let node = take(key) else { return nil }
        guard let scalar = node.scalar else {
            reader.issue(node, key: full(key), "expected a single value")
            return nil
        }
        if scalar.tag == Tag(.null) || (scalar.string.isEmpty && scalar.style == .plain) {
            reader.issue(node, key: full(key), "needs a value")
            return nil
        }
        return (scalar.string, node)
    }

    func integer(_ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let (text, node) = string(key) else { return nil }
        guard let value = Int(text) else {
            reader.issue(node, key: full(key), "expected a whole number, got '\(text)'")
            return nil
        }
        guard range.contains(value) else {
            reader.issue(node, key: full(key), "\(value) is out of range \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return value
    }

    /// A duration in milliseconds: `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
    func duration(_ key: String, allowZero: Bool = false) -> Int? {
        guard let (text, node) = string(key) else { return nil }
        guard let value = Section.parseDuration(text), value >= (allowZero ? 0 : 1), value <= 86_400_000 else {
            reader.issue(node, key: full(key), "expected a duration between \(allowZero ? "0" : "1ms") and 24h such as 500ms, 30s, 5m; got '\(text)'")
            return nil
        }
        return value
    }

    static func parseDuration(_ text: String) -> Int? {
        let units: [(String, Int)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let number = Int(text.dropLast(suffix.count)), number >= 0, number <= 86_400_000 else { return nil }
            return number * scale
        }
        guard let seconds = Int(text), seconds >= 0, seconds <= 86_400 else { return nil }
        return seconds * 1000
    }

    /// A byte size: `8k`, `1m`, or a bare number of bytes.
    func size(_ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let (text, node) = string(key) else { return nil }
        var number = text.lowercased()
        var scale = 1
        if number.hasSuffix("k") { scale = 1024; number.removeLast() } else if number.hasSuffix("m") { scale = 1_048_576; number.removeLast() }
        guard let value = Int(number), value >= 0, value <= 1 << 30 else {
            reader.issue(node, key: full(key), "expected a size such as 8k or 16384, got '\(text)'")
            return nil
        }
        guard range.contains(value * scale) else {
            reader.issue(node, key: full(key), "\(value * scale) bytes is out of range \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return value * scale
    }

    /// Every entry, all taken: for mappings whose keys are data (status codes, header names).
    func all() -> [(String, Node, Node)] {
        for entry in entries { taken.insert(entry.key) }
        return entries.map { ($0.key, $0.keyNode, $0.value) }
    }

    func boolean(_ key: String) -> Bool? {
        guard let (text, node) = string(key) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            reader.issue(node, key: full(key), "expected true or false, got '\(text)'")
            return nil
        }
    }

    func section(_ key: String) -> Section? {
        guard let entry = entries.first(where: { $0.key == key }) else { return nil }
        taken.insert(key)
        return Section(entry.value, path: full(key), reader: reader, keyNode: entry.keyNode)
    }

    /// Reports every key nobody read: unknown keys are errors, never silently ignored.
    func finish() {
        for entry in entries where !taken.contains(entry.key) {
            reader.issue(entry.keyNode, key: full(entry.key), "unknown key")
        }
    }
}
