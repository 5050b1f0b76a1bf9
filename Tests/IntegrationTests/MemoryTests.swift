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

    /// An idle HTTP/2 connection holds no outbound frame buffer (libnghttp2 allocates 16 KiB for every
    /// session): its pages go back a few hundred milliseconds after the last frame, come back when the
    /// connection is used again, and the connection answers as before.
    @Test func idleHTTP2ConnectionsGiveBackTheirFrameBuffers() throws {
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        var body = [UInt8](repeating: 0, count: 40_000)
        for index in body.indices { body[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 13) }
        let server = try TestServer(
            config: "workers: {min: 1, max: 1}\ntls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n",
            site: { site in
                try TestServer.defaultSite(site)
                try Data(body).write(to: site.appendingPathComponent("body.bin"))
            }
        ).start()
        defer { server.stop() }
        let tls = try #require(server.tlsPort)
        let worker = try #require(server.pids(of: "worker").first)
        let connections = 200
        // Each round sends one GET on every connection and reads every answer, checking its status and
        // body against the file; "ok" once all are right. The client opens 1,024 bytes of window per
        // stream, so a 40 KB body stops there: after "held" every connection has a response waiting
        // (not idle, whatever the time); a line on stdin opens the windows and the round goes on.
        let script = """
            import socket, ssl, sys
            import h2.config, h2.connection, h2.events, h2.settings
            port, count, site = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            held = []
            for _ in range(count):
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
                c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                c.initiate_connection()
                c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
                s.sendall(c.data_to_send())
                held.append((s, c))
            def read(s, c, sid, state, until):
                while not until(state):
                    data = s.recv(65536)
                    if not data:
                        sys.exit(f"closed before stream {sid} ended")
                    for event in c.receive_data(data):
                        if isinstance(event, h2.events.ResponseReceived):
                            state["status"] = dict(event.headers)[b":status"]
                        elif isinstance(event, h2.events.DataReceived):
                            state["body"] += event.data
                            state["unacknowledged"] += event.flow_controlled_length
                            if state["open"]:
                                c.acknowledge_received_data(state["unacknowledged"], event.stream_id)
                                state["unacknowledged"] = 0
                        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                            state["done"] = True
                    s.sendall(c.data_to_send())
            def round(path, hold):
                expected = open(site + path, "rb").read()
                states = []
                for s, c in held:
                    sid = c.get_next_available_stream_id()
                    c.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":path", path), (":authority", "localhost")], end_stream=True)
                    s.sendall(c.data_to_send())
                    states.append((sid, {"status": None, "body": b"", "done": False, "open": not hold, "unacknowledged": 0}))
                if hold:
                    for (s, c), (sid, state) in zip(held, states):
                        read(s, c, sid, state, lambda state: len(state["body"]) >= 1024 or state["done"])
                    print("held", flush=True)
                    sys.stdin.readline()
                    for (s, c), (sid, state) in zip(held, states):
                        state["open"] = True
                        c.acknowledge_received_data(state["unacknowledged"], sid)
                        state["unacknowledged"] = 0
                        c.increment_flow_control_window(1 << 20, stream_id=sid)
                        s.sendall(c.data_to_send())
                for (s, c), (sid, state) in zip(held, states):
                    read(s, c, sid, state, lambda state: state["done"])
                    if state["status"] != b"200" or state["body"] != expected:
                        sys.exit(f"{path} on stream {sid}: status {state['status']}, {len(state['body'])} bytes, expected {len(expected)}")
                print("ok", flush=True)
            round("/index.html", False)
            for path in ("/body.bin", "/body.bin"):
                sys.stdin.readline()
                round(path, True)
            sys.stdin.readline()
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, String(tls), String(connections), server.site.path]
        let input = Pipe()
        let output = Pipe()
        let errors = try temporaryDirectory().appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
        process.standardInput = input
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: errors)
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        func said() -> String { (try? String(contentsOf: errors, encoding: .utf8)) ?? "" }
        var printed = ""
        var seen: [String: Int] = [:]
        /// Whether the script said `word` once more (false when it ended first).
        func said(_ word: String) -> Bool {
            seen[word, default: 0] += 1
            while printed.components(separatedBy: word + "\n").count - 1 < seen[word]! {
                let data = output.fileHandleForReading.availableData
                if data.isEmpty { return false }
                printed += String(decoding: data, as: UTF8.self)
            }
            return true
        }
        func goOn() { input.fileHandleForWriting.write(Data("\n".utf8)) }
        #expect(said("ok"), "the first requests were not all answered: \(said())")
        // Used, then quiet: the buffers come back with the next frames and go again.
        for round in 2...3 {
            usleep(1_500_000)
            goOn()
            #expect(said("held"), "round \(round): not every connection began its answer after its quiet time: \(said())")
            let used = MemoryTests.anonymousKiB(worker)
            goOn()
            #expect(said("ok"), "round \(round): not every connection answered: \(said())")
            var quiet = used
            #expect(waitUntil(seconds: 5) {
                quiet = MemoryTests.anonymousKiB(worker)
                return used - quiet >= connections * 2
            }, "round \(round): \(used) KiB with \(connections) HTTP/2 connections answering, \(quiet) KiB once they were quiet")
        }
        goOn()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    /// The streams an idle HTTP/2 connection carried are not kept once closed (libnghttp2 would keep
    /// up to `http2.max_concurrent_streams` of them, about 330 bytes each, for the connection's life):
    /// sixty requests on each of 100 connections leave them holding what one request did.
    @Test func idleHTTP2ConnectionsKeepNoClosedStreams() throws {
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        let server = try TestServer(config: "workers: {min: 1, max: 1}\ntls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n").start()
        defer { server.stop() }
        let tls = try #require(server.tlsPort)
        let worker = try #require(server.pids(of: "worker").first)
        let connections = 100
        // Each round sends `n` GETs on every connection and reads every answer; "ok" after each round.
        let script = """
            import socket, ssl, sys
            import h2.config, h2.connection, h2.events
            port, count = int(sys.argv[1]), int(sys.argv[2])
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            held = []
            for _ in range(count):
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
                c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                c.initiate_connection()
                s.sendall(c.data_to_send())
                held.append((s, c))
            def round(n):
                for s, c in held:
                    for _ in range(n):
                        c.send_headers(c.get_next_available_stream_id(), [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "localhost")], end_stream=True)
                    s.sendall(c.data_to_send())
                for s, c in held:
                    ended = 0
                    while ended < n:
                        data = s.recv(65536)
                        if not data:
                            sys.exit("closed")
                        for event in c.receive_data(data):
                            if isinstance(event, h2.events.StreamEnded):
                                ended += 1
                            elif isinstance(event, h2.events.DataReceived):
                                c.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        s.sendall(c.data_to_send())
                print("ok", flush=True)
            round(1)
            sys.stdin.readline()
            round(60)
            sys.stdin.readline()
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, String(tls), String(connections)]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        var printed = ""
        func roundEnded(_ rounds: Int) -> Bool {
            while printed.components(separatedBy: "ok\n").count - 1 < rounds {
                let data = output.fileHandleForReading.availableData
                if data.isEmpty { return false }
                printed += String(decoding: data, as: UTF8.self)
            }
            return true
        }
        #expect(roundEnded(1))
        usleep(1_000_000)
        let afterOne = MemoryTests.anonymousKiB(worker)
        input.fileHandleForWriting.write(Data("\n".utf8))
        #expect(roundEnded(2))
        usleep(1_000_000)
        let afterSixty = MemoryTests.anonymousKiB(worker)
        input.fileHandleForWriting.write(Data("\n".utf8))
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        // Kept, 59 closed streams each would be about 19 KiB per connection.
        #expect(afterSixty - afterOne < connections * 5,
                "\(afterOne) KiB with \(connections) idle HTTP/2 connections after one request each, \(afterSixty) KiB after sixty more")
    }
}
