import Foundation
import Glibc

/// Pebble, Let's Encrypt's ACME test server (Debian package `pebble`), with `pebble-challtestsrv` as its
/// DNS server so every name resolves to 127.0.0.1: a real ACME CA on loopback for one test. Its HTTPS
/// certificate is a development certificate from `webserver cert dev` (so `caBundle` is that CA); it
/// validates HTTP-01 on `httpPort` and TLS-ALPN-01 on `tlsPort` (the server's plain and TLS ports),
/// and issues certificates valid for `validity` seconds. Stopped by `stop()` or when dropped.
final class Pebble: @unchecked Sendable {
    let directory: URL
    let port: Int
    let managementPort: Int
    let dnsPort: Int
    let httpPort: Int
    let tlsPort: Int
    var caBundle: String { directory.appendingPathComponent("dev-ca.pem").path }
    var directoryURL: String { "https://127.0.0.1:\(port)/dir" }
    private var pebble: Process?
    private let dns = Process()

    /// Whether the tests can run: Pebble is there, or CI (`.ci/run` installs it) says it must be.
    static var installed: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/pebble") || ProcessInfo.processInfo.environment["WEBSERVER_REQUIRE_PEBBLE"] == "1"
    }

    /// `eab`: external account binding required, with these key identifiers and MAC keys.
    init(httpPort: Int, tlsPort: Int, validity: Int = 3600, blocked: [String] = [], eab: [String: String] = [:]) throws {
        directory = try temporaryDirectory()
        (port, managementPort, dnsPort) = (try fixedPort(), try fixedPort(), try fixedPort())
        (self.httpPort, self.tlsPort) = (httpPort, tlsPort)
        let made = try run(webserverBinary, ["cert", "dev", "--dir", directory.path])
        guard made.status == 0 else { throw TestFailure("webserver cert dev: \(made.error)") }
        let config: [String: Any] = ["pebble": [
            "listenAddress": "127.0.0.1:\(port)", "managementListenAddress": "127.0.0.1:\(managementPort)",
            "certificate": directory.appendingPathComponent("dev.pem").path, "privateKey": directory.appendingPathComponent("dev-key.pem").path,
            "httpPort": httpPort, "tlsPort": tlsPort, "ocspResponderURL": "", "externalAccountBindingRequired": !eab.isEmpty,
            "externalAccountMACKeys": eab,
            "domainBlocklist": blocked, "certificateValidityPeriod": validity,
        ]]
        try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("pebble.json"))
        dns.executableURL = URL(fileURLWithPath: "/usr/bin/pebble-challtestsrv")
        dns.arguments = ["-dns01", "127.0.0.1:\(dnsPort)", "-http01", "", "-https01", "", "-tlsalpn01", "",
                         "-management", "127.0.0.1:\(try fixedPort())", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]
        dns.standardOutput = FileHandle.nullDevice
        dns.standardError = FileHandle.nullDevice
        try dns.run()
        try start()
    }

    /// Starts Pebble (again, after `stop`: a new CA, with new roots and no accounts, as Pebble keeps nothing).
    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/pebble")
        process.arguments = ["-config", directory.appendingPathComponent("pebble.json").path, "-dnsserver", "127.0.0.1:\(dnsPort)"]
        process.environment = ProcessInfo.processInfo.environment.merging(["PEBBLE_VA_NOSLEEP": "1"]) { $1 }
        let log = directory.appendingPathComponent("pebble.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: log)
        process.standardError = process.standardOutput
        try process.run()
        pebble = process
        guard waitUntil(seconds: 10, { (try? curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", caBundle, directoryURL])) == "200" }) else {
            throw TestFailure("pebble did not start: \(self.log())")
        }
    }

    func stop() {
        guard let pebble, pebble.isRunning else { return }
        pebble.terminate()
        pebble.waitUntilExit()
    }

    func log() -> String { (try? String(contentsOf: directory.appendingPathComponent("pebble.log"), encoding: .utf8)) ?? "" }

    /// Pebble's root certificate (it makes a new one each start), written to a file, to verify what it issued.
    func root() throws -> String {
        let path = directory.appendingPathComponent("root.pem").path
        _ = try curl(["-s", "--cacert", caBundle, "-o", path, "https://127.0.0.1:\(managementPort)/roots/0"])
        return path
    }

    /// The `acme` section for these tests: this CA, the state in `state`.
    func acme(state: String, challenges: String = "[http-01]") -> String {
        """
        acme:
          directory: \(directoryURL)
          email: admin@example.com
          agree_terms: true
          challenges: \(challenges)
          state: \(state)
          ca_bundle: \(caBundle)

        """
    }

    deinit {
        stop()
        if dns.isRunning {
            dns.terminate()
            dns.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// What `openssl s_client` sees for `name` on a TLS port: the issuer and serial of the certificate
/// presented, or nil when the handshake is refused; with `alpn`, offering only that protocol.
func presentedCertificate(port: Int, name: String, alpn: String? = nil) -> (issuer: String, serial: String, subject: String)? {
    let command = "echo | openssl s_client -connect 127.0.0.1:\(port) -servername \(name)\(alpn.map { " -alpn \($0)" } ?? "") 2>/dev/null"
        + " | openssl x509 -noout -issuer -serial -subject -nameopt RFC2253 2>/dev/null"
    guard let result = try? run("/bin/sh", ["-c", command]), result.status == 0 else { return nil }
    var fields: [String: String] = [:]
    for line in result.output.split(separator: "\n") {
        guard let equals = line.firstIndex(of: "=") else { continue }
        fields[String(line[..<equals])] = String(line[line.index(after: equals)...])
    }
    guard let issuer = fields["issuer"], let serial = fields["serial"] else { return nil }
    return (issuer, serial, fields["subject"] ?? "")
}
