import Foundation
import Glibc
import Server
import Testing

/// The listener and the manager run from webserver-core, which has neither Foundation nor OpenSSL; the
/// supervisor, the workers and the ACME process from webserver. What `ls -l /proc/PID/exe` and
/// `/proc/PID/maps` show an operator.
@Suite struct ExecutablesTests {
    static func executable(of pid: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/\(pid)/exe", &buffer, buffer.count - 1)
        return count > 0 ? String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
    }

    /// The files a process maps, by their last path component.
    static func mappedFiles(of pid: Int32) -> Set<String> {
        // Read to the end: procfs files have no size, and a read of what stat says would stop early.
        let data = (try? FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/\(pid)/maps")).readToEnd()) ?? nil
        let text = String(decoding: data ?? Data(), as: UTF8.self)
        return Set(text.split(separator: "\n").compactMap { line in
            line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(5).first.flatMap { $0.hasPrefix("/") ? $0.split(separator: "/").last.map(String.init) : nil }
        })
    }

    /// A directory nobody may read and search (the server's children run as nobody under CI's root).
    static func directoryWithServerCopy() throws -> URL {
        let directory = try temporaryDirectory()
        chmod(directory.path, 0o755)
        let copy = directory.appendingPathComponent("webserver")
        try FileManager.default.copyItem(atPath: webserverBinary, toPath: copy.path)
        chmod(copy.path, 0o755)
        return directory
    }

    @Test func theListenerAndTheManagerRunWithoutFoundationOrOpenSSL() throws {
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        let server = try TestServer(config: "workers: {min: 1, max: 1}\ntls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n").start()
        defer { server.stop() }
        let tls = try #require(server.tlsPort)
        #expect(try status("https://127.0.0.1:\(tls)/", ["-k"]) == 200)
        #expect(try status(server.url + "/") == 200)
        let core = URL(fileURLWithPath: webserverBinary).deletingLastPathComponent().appendingPathComponent("webserver-core").path
        #expect(server.log().contains("the listener and the manager run from \(core)"))
        for role in ["listener", "manager"] {
            let pid = try #require(server.pids(of: role).first)
            #expect(ExecutablesTests.executable(of: pid) == core, "the \(role) runs \(ExecutablesTests.executable(of: pid))")
            let mapped = ExecutablesTests.mappedFiles(of: pid)
            #expect(mapped.contains("webserver-core") && mapped.contains { $0.hasPrefix("libc.so") }, "the \(role) maps \(mapped.sorted())")
            let unwanted = mapped.filter { $0.hasPrefix("libssl") || $0.hasPrefix("libcrypto") || $0.contains("Foundation") || $0.hasPrefix("libicu") }
            #expect(unwanted.isEmpty, "the \(role) maps \(unwanted.sorted())")
        }
        let worker = try #require(server.pids(of: "worker").first)
        #expect(ExecutablesTests.executable(of: worker) == webserverBinary)
        let workerFiles = ExecutablesTests.mappedFiles(of: worker)
        #expect(workerFiles.contains { $0.hasPrefix("libssl") }, "the worker terminates TLS: \(workerFiles.sorted())")
    }

    /// `cp webserver /usr/local/bin` without its core: the same server, the two roles from webserver.
    @Test func withoutItsCoreTheServerRunsThoseRolesItself() throws {
        let directory = try ExecutablesTests.directoryWithServerCopy()
        let copy = directory.appendingPathComponent("webserver").path
        let server = try TestServer(binary: copy).start()
        defer { server.stop() }
        #expect(try status(server.url + "/") == 200)
        #expect(server.log().contains("the listener and the manager run from this executable"))
        #expect(server.log().contains("no webserver-core beside \(copy)"))
        for role in ["listener", "manager", "worker"] {
            let pid = try #require(server.pids(of: role).first)
            #expect(ExecutablesTests.executable(of: pid) == copy, "the \(role) runs \(ExecutablesTests.executable(of: pid))")
        }
    }

    /// A webserver-core of another build (its `--core-format` differs) is not mixed into the tree.
    @Test func aCoreOfAnotherBuildIsNotUsed() throws {
        let directory = try ExecutablesTests.directoryWithServerCopy()
        let copy = directory.appendingPathComponent("webserver").path
        let stale = directory.appendingPathComponent("webserver-core").path
        try "#!/bin/sh\necho 0\n".write(toFile: stale, atomically: true, encoding: .utf8)
        chmod(stale, 0o755)
        let server = try TestServer(binary: copy).start()
        defer { server.stop() }
        #expect(try status(server.url + "/") == 200)
        #expect(server.log().contains("\(stale) is from another build (core format 0, this server's \(CoreFormat.version))"))
        let listener = try #require(server.pids(of: "listener").first)
        #expect(ExecutablesTests.executable(of: listener) == copy)
    }
}
