import Foundation
import Glibc
import Server

// Certificates the tests make with the openssl command (the server itself only reads them).

/// Run as root (CI), a server with no `user` serves as nobody: its key must be readable by that user,
/// as an operator would arrange. This gives the file to it; elsewhere it does nothing.
func readableByTheServer(_ path: String) {
    guard getuid() == 0, let entry = getpwnam(ServerConfig.defaultUser) else { return }
    chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid)
}

/// A certificate for localhost and 127.0.0.1 made with the openssl command (the test's tool; the server
/// itself only reads it), in `directory`; returns the certificate and key paths.
func makeTestCertificate(in directory: URL, days: Int = 30, encrypted: Bool = false) throws -> (cert: String, key: String) {
    let cert = directory.appendingPathComponent("cert.pem").path
    let key = directory.appendingPathComponent("key.pem").path
    var arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", key, "-out", cert,
                     "-days", String(days), "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    arguments += encrypted ? ["-passout", "pass:secret"] : ["-nodes"]
    let result = try run("openssl", arguments)
    guard result.status == 0 else { throw TestFailure("openssl req: \(result.error)") }
    readableByTheServer(key)
    return (cert, key)
}

/// A fresh directory for a test's files; run as root, it is the server's user's, so the server can
/// remove what it makes there (a Unix socket, a pid file) after it stopped being root. It is removed
/// when the test process exits, with everything in it.
func temporaryDirectory() throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-tls-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    readableByTheServer(directory.path)
    MadeDirectories.shared.add(directory.path)
    return directory
}

/// The directories `temporaryDirectory` made, removed at exit: most tests give theirs to a server or
/// to several helpers and keep no handle to remove it by, and each run used to leave a few dozen in /tmp.
private final class MadeDirectories: @unchecked Sendable {
    static let shared: MadeDirectories = {
        atexit { MadeDirectories.shared.removeAll() }
        return MadeDirectories()
    }()
    private let lock = NSLock()
    private var paths: [String] = []

    func add(_ path: String) {
        lock.withLock { paths.append(path) }
    }

    private func removeAll() {
        let made = lock.withLock { paths }
        for path in made { try? FileManager.default.removeItem(atPath: path) }
    }
}

/// A certificate for `name` with the given key type ("ec" P-256 or "rsa" 2048), self-signed.
func makeNamedCertificate(_ name: String, type: String, in directory: URL) throws -> (cert: String, key: String) {
    let cert = directory.appendingPathComponent("\(name)-\(type).pem").path
    let key = directory.appendingPathComponent("\(name)-\(type)-key.pem").path
    let keyOptions = type == "rsa" ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    let result = try run("openssl", ["req", "-x509"] + keyOptions + ["-nodes", "-keyout", key, "-out", cert, "-days", "30",
                                     "-subj", "/CN=\(name)", "-addext", "subjectAltName=DNS:\(name),DNS:*.\(name)"])
    guard result.status == 0 else { throw TestFailure("openssl req: \(result.error)") }
    readableByTheServer(key)
    return (cert, key)
}
