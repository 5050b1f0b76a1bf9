import Foundation
import Logging

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

    /// Applies the flags to `config`; returns what is wrong with them (as issues of the "command line").
    /// Relative paths are taken relative to the working directory.
    func apply(to config: inout ServerConfig) -> [ConfigIssue] {
        var issues: [ConfigIssue] = []
        func issue(_ flag: String, _ message: String) {
            issues.append(ConfigIssue(file: "command line", line: 0, column: 0, key: flag, message: message))
        }
        let cwd = FileManager.default.currentDirectoryPath
        func sockets(_ values: [String], flag: String) -> [ListenSocket] {
            // `--listen none`: no sockets of that kind (HTTPS only, say).
            if values == ["none"] { return [] }
            for value in values where SocketAddress(parsing: value) == nil && !value.hasPrefix("unix:") {
                issue(flag, "'\(value)' is not ADDRESS:PORT (IPv4, [IPv6], or *:PORT; port 0-65535)")
            }
            return values.map { value in
                let address = value.hasPrefix("unix:") ? "unix:" + ConfigLoader.absolute(String(value.dropFirst(5)), base: cwd) : value
                return ListenSocket(address: address, proxyProtocol: proxyProtocol, origin: flag)
            }
        }
        if let root { config.root = ConfigLoader.absolute(root, base: cwd) }
        if !listen.isEmpty { config.listen = sockets(listen, flag: "--listen") }
        if !tlsListen.isEmpty { config.tls.listen = sockets(tlsListen, flag: "--tls-listen") }
        if let workers {
            if let pair = ConfigOverrides.parseWorkers(workers) {
                (config.workers.min, config.workers.max) = pair
            } else {
                issue("--workers", "'\(workers)' is not N or MIN:MAX with 1 <= MIN <= MAX <= 1024")
            }
        }
        if cert != nil || key != nil {
            // The default site's first certificate; the others (another key type) stay.
            var first = config.tls.defaultSite.certificates.first ?? CertificatePair(certificate: "", key: "")
            if let cert { first.certificate = ConfigLoader.absolute(cert, base: cwd) }
            if let key { first.key = ConfigLoader.absolute(key, base: cwd) }
            if config.tls.defaultSite.certificates.isEmpty {
                config.tls.defaultSite.certificates = [first]
            } else {
                config.tls.defaultSite.certificates[0] = first
            }
        }
        if let adminListen {
            if adminListen == "off" {
                config.adminListen = nil
            } else if SocketAddress(parsing: adminListen) != nil {
                config.adminListen = adminListen
            } else {
                issue("--admin-listen", "'\(adminListen)' is not ADDRESS:PORT (IPv4, [IPv6], or *:PORT; port 0-65535), or off")
            }
        }
        if !trustedProxies.isEmpty {
            config.proxy.trusted = trustedProxies
            for value in trustedProxies where Networks([value]) == nil {
                issue("--trusted-proxy", "'\(value)' is not a network such as 10.0.0.0/8, 192.0.2.7 or fd00::/8")
            }
        }
        if proxyProtocol && listen.isEmpty && tlsListen.isEmpty {
            issue("--proxy-protocol", "applies to the sockets given with --listen and --tls-listen; give at least one")
        }
        if let pidFile { config.pidFile = ConfigLoader.absolute(pidFile, base: cwd) }
        if let accessLog { config.accessLog = accessLog == "off" ? nil : ConfigLoader.absolute(accessLog, base: cwd) }
        if let errorLog { config.errorLog = errorLog == "stderr" ? nil : ConfigLoader.absolute(errorLog, base: cwd) }
        if let logLevel {
            if let level = Logger.Level(rawValue: logLevel) { config.logLevel = level } else {
                issue("--log-level", "'\(logLevel)' is not one of \(Logger.Level.choicesText)")
            }
        }
        for (flag, value) in [("--pid-file", pidFile), ("--access-log", accessLog == "off" ? nil : accessLog)] {
            if let value, !ConfigLoader.parentExists(ConfigLoader.absolute(value, base: cwd)) {
                issue(flag, "the directory of '\(value)' does not exist")
            }
        }
        return issues
    }

    /// `N` or `MIN:MAX`, 1 <= MIN <= MAX <= 1024.
    static func parseWorkers(_ text: String) -> (Int, Int)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return nil }
        guard let low = Int(parts[0]), let high = Int(parts.count == 2 ? parts[1] : parts[0]) else { return nil }
        guard low >= 1, low <= high, high <= 1024 else { return nil }
        return (low, high)
    }
}
