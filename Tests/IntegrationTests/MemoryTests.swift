import Foundation
import Glibc
import Testing

/// What `top` shows after a burst: the memory a worker used for many TLS connections goes back to the
/// system once they have closed (glibc would keep it in its arenas).
@Suite struct MemoryTests {
    static func anonymousKiB(_ pid: Int32) -> Int {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Anonymous:") }) else { return -1 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
    }

    @Test func aWorkerGivesBackWhatABurstOfTLSConnectionsUsed() throws {
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        let server = try TestServer(config: "workers: {min: 1, max: 1}\ntls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n").start()
        defer { server.stop() }
        let tls = try #require(server.tlsPort)
        let worker = try #require(server.pids(of: "worker").first)
        #expect(try status("https://127.0.0.1:\(tls)/", ["-k"]) == 200)
        let before = MemoryTests.anonymousKiB(worker)
        // 600 TLS connections, each with a request answered, held while the test looks, then closed.
        let script = """
            import socket, ssl, sys, time
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            held = []
            for _ in range(600):
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", \(tls)), timeout=10), server_hostname="localhost")
                s.sendall(b"GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n")
                held.append(s)
            for s in held:
                s.recv(65536)
            print("held", flush=True)
            sys.stdin.readline()
            for s in held:
                s.close()
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        _ = output.fileHandleForReading.availableData  // "held"
        let during = MemoryTests.anonymousKiB(worker)
        input.fileHandleForWriting.write(Data("\n".utf8))
        process.waitUntilExit()
        var after = during
        #expect(waitUntil(seconds: 5) {
            after = MemoryTests.anonymousKiB(worker)
            return after < before + (during - before) / 4
        }, "worker anonymous memory: \(before) KiB before, \(during) KiB with 600 TLS connections, \(after) KiB after they closed")
        #expect(during - before > 4096, "600 TLS connections should take megabytes: \(before) -> \(during) KiB")
    }

    /// Started as root, the supervisor becomes nobody, after which its /proc/self/pagemap is root's and
    /// cannot be opened: it must open it before it drops privileges, or its trims of `.rodata` do nothing.
    @Test func theSupervisorHoldsItsPagemapAfterDroppingPrivileges() throws {
        guard getuid() == 0 else { return }  // only a server started as root changes its user
        let server = try TestServer(config: "workers: {min: 1, max: 1}\n").start()
        defer { server.stop() }
        let supervisor = server.pid
        let status = try String(contentsOfFile: "/proc/\(supervisor)/status", encoding: .utf8)
        #expect(!status.contains("Uid:\t0\t"), "the supervisor runs as root: \(status.prefix(400))")
        // The pagemap is opened by the first trim (before the drop); the later trims read it.
        var held = false
        #expect(waitUntil(seconds: 5) {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(supervisor)/fd")) ?? []
            held = fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(supervisor)/fd/\($0)")) == "/proc/\(supervisor)/pagemap" }
            return held
        })
        #expect(held, "the supervisor has no open /proc/\(supervisor)/pagemap")
    }
}
