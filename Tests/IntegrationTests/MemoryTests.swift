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

    /// A started server with one worker and a TLS listener (its site the default one, with what `site`
    /// adds): the server, its TLS port, and the worker's pid.
    static func tlsServer(site: (URL) throws -> Void = { _ in }) throws -> (TestServer, Int, Int32) {
        let (cert, key) = try makeTestCertificate(in: try temporaryDirectory())
        let server = try TestServer(
            config: "workers: {min: 1, max: 1}\ntls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n",
            site: { directory in
                try TestServer.defaultSite(directory)
                try site(directory)
            }
        ).start()
        do {
            return (server, try #require(server.tlsPort), try #require(server.pids(of: "worker").first))
        } catch {
            server.stop()
            throw error
        }
    }

    @Test func aWorkerGivesBackWhatABurstOfTLSConnectionsUsed() throws {
        let (server, tls, worker) = try MemoryTests.tlsServer()
        defer { server.stop() }
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

    /// An idle HTTP/2 connection holds neither libnghttp2's outbound frame buffer (16 KiB, allocated
    /// with every session) nor its stream table (4 KiB, empty once the streams have gone): their pages go
    /// back a few hundred milliseconds after the last frame, come back when the connection is used
    /// again, and the connection answers as before. Each answer touches a page of each (a page of
    /// the buffer for its frames, the table's for its stream): about 8 KiB per connection come back,
    /// about 4 with the buffer alone.
    @Test func idleHTTP2ConnectionsGiveBackTheirFrameBufferAndStreamTable() throws {
        var body = [UInt8](repeating: 0, count: 40_000)
        for index in body.indices { body[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 13) }
        let (server, tls, worker) = try MemoryTests.tlsServer { site in
            try Data(body).write(to: site.appendingPathComponent("body.bin"))
        }
        defer { server.stop() }
        let connections = 200
        // A 40 KB body stops at the client's 1,024-byte window: while "held", every connection has a
        // response waiting (not idle, however long the round took).
        let client = try HTTP2Rounds(port: tls, connections: connections, site: server.site, window: 1024)
        defer { client.stop() }
        client.send("get /index.html 1")
        #expect(client.said("ok"), "the first requests were not all answered: \(client.errors)")
        // Used, then quiet: the buffers come back with the next frames and go again.
        for round in 2...3 {
            usleep(1_500_000)
            client.send("hold /body.bin")
            #expect(client.said("held"), "round \(round): not every connection began its answer after its quiet time: \(client.errors)")
            let used = MemoryTests.anonymousKiB(worker)
            client.send("")
            #expect(client.said("ok"), "round \(round): not every connection answered: \(client.errors)")
            var quiet = used
            #expect(waitUntil(seconds: 5) {
                quiet = MemoryTests.anonymousKiB(worker)
                return used - quiet >= connections * 6
            }, "round \(round): \(used) KiB with \(connections) HTTP/2 connections answering, \(quiet) KiB once they were quiet")
        }
        #expect(client.finish() == 0, "\(client.errors)")
    }

    /// The streams an idle HTTP/2 connection carried are not kept once closed (libnghttp2 would keep
    /// up to `http2.max_concurrent_streams` of them, about 330 bytes each, for the connection's life):
    /// sixty requests on each of 100 connections leave them holding what one request did.
    @Test func idleHTTP2ConnectionsKeepNoClosedStreams() throws {
        let (server, tls, worker) = try MemoryTests.tlsServer()
        defer { server.stop() }
        let connections = 100
        let client = try HTTP2Rounds(port: tls, connections: connections, site: server.site)
        defer { client.stop() }
        client.send("get /index.html 1")
        #expect(client.said("ok"), "\(client.errors)")
        usleep(1_000_000)
        let afterOne = MemoryTests.anonymousKiB(worker)
        client.send("get /index.html 60")
        #expect(client.said("ok"), "\(client.errors)")
        usleep(1_000_000)
        let afterSixty = MemoryTests.anonymousKiB(worker)
        #expect(client.finish() == 0, "\(client.errors)")
        // Kept by the library, the 59 more closed streams were about 17 KiB per connection.
        #expect(afterSixty - afterOne < connections * 5,
                "\(afterOne) KiB with \(connections) idle HTTP/2 connections after one request each, \(afterSixty) KiB after sixty more")
    }
}

/// Tests/IntegrationTests/Fixtures/h2_rounds.py, driven line by line: HTTP/2 connections held open and
/// used in rounds while a test reads the worker's memory between them.
final class HTTP2Rounds {
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let errorFile: URL
    private var printed = ""
    private var seen: [String: Int] = [:]

    init(port: Int, connections: Int, site: URL, window: Int? = nil) throws {
        let script = packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures/h2_rounds.py").path
        errorFile = try temporaryDirectory().appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: errorFile.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, String(port), String(connections), site.path] + (window.map { ["--window", String($0)] } ?? [])
        process.standardInput = input
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: errorFile)
        try process.run()
    }

    /// What the script wrote to stderr (why it stopped).
    var errors: String { (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "" }

    func send(_ line: String) { input.fileHandleForWriting.write(Data((line + "\n").utf8)) }

    /// Whether the script printed `word` once more (false when it ended first).
    func said(_ word: String) -> Bool {
        seen[word, default: 0] += 1
        while printed.components(separatedBy: word + "\n").count - 1 < seen[word]! {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { return false }
            printed += String(decoding: data, as: UTF8.self)
        }
        return true
    }

    /// Ends the script's input and waits for it: its exit status.
    func finish() -> Int32 {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        return process.terminationStatus
    }

    func stop() { if process.isRunning { process.terminate() } }
}
