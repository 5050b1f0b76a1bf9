import Foundation
import Glibc
import Testing

/// `listeners: N` (issue 20): N listener processes, each with its own SO_REUSEPORT copy of the TCP
/// sockets, the kernel choosing the copy by the client's address alone; `max_connections` held across
/// all of them through the admission counts they share.
@Suite(.serialized) struct ListenersTests {
    let request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"

    /// Each listener's accepted count, from /metrics.
    func acceptedPerListener(_ server: TestServer, _ count: Int) -> [Int]? {
        guard let metrics = server.metrics() else { return nil }
        return (0..<count).map { Int(metrics[#"webserver_listener_connections_accepted_total{listener="\#($0)"}"#]) }
    }

    /// One request on a new connection from `source`; its status.
    func get(_ server: TestServer, from source: String) throws -> [Int] {
        let connection = try RawConnection(port: server.port, source: source)
        defer { connection.close() }
        connection.send("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        return statusCodes(String(decoding: connection.readAll().0, as: UTF8.self))
    }

    @Test func everyConnectionOfOneAddressGoesToOneListenerAndTheAddressesSpread() throws {
        let server = try TestServer(config: fastSupervision + "listeners: 3\nworkers: {min: 1, max: 1}\n").start()
        defer { server.stop() }
        #expect(server.pids(of: "listener").count == 3)
        #expect(server.log().contains("3 listeners, each with its own copy of the TCP sockets"))
        var used = Set<Int>()
        var total = 0
        for last in 1...12 {
            let source = "127.0.0.\(last)"
            let before = try #require(acceptedPerListener(server, 3))
            for _ in 0..<4 { #expect(try get(server, from: source) == [200]) }
            total += 4
            // The listeners report with their heartbeats: wait until all four are counted.
            var after = before
            #expect(waitUntil(seconds: 5) {
                after = acceptedPerListener(server, 3) ?? before
                return after.reduce(0, +) == total
            })
            let grew = (0..<3).filter { after[$0] != before[$0] }
            #expect(grew.count == 1, "\(source): \(before) -> \(after)")
            if let listener = grew.first {
                #expect(after[listener] - before[listener] == 4)
                used.insert(listener)
            }
        }
        // Twelve addresses over three listeners: by the hash, more than one of them takes some.
        #expect(used.count >= 2)
        #expect(Int(try #require(server.metrics())["webserver_connections_accepted_total"]) == total)
        // `webserver status` names each listener, and counts a held connection on its worker.
        let held = try openKeepAliveConnection(server.port)
        defer { close(held) }
        let status = try run(webserverBinary, ["status", "--pid-file", server.pidFile.path])
        let rows = status.output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect((0..<3).allSatisfy { index in rows.contains { $0.count > 1 && $0[0] == "listener" && $0[1] == "\(index)" } }, "\(status.output)")
        #expect(rows.first { $0.first == "worker" }?.last == "1", "\(status.output)")
    }

    @Test func connectionsPerIPAndMaxConnectionsHoldAcrossListeners() throws {
        let server = try TestServer(
            config: fastSupervision + "listeners: 2\nmax_connections: 7\nlimits: {connections_per_ip: 2}\nproxy: {trusted: []}\nworkers: {min: 1, max: 1}\n"
        ).start()
        defer { server.stop() }
        var held: [RawConnection] = []
        defer { for connection in held { connection.close() } }
        func hold(from source: String) throws {
            let connection = try RawConnection(port: server.port, source: source)
            connection.send(request)
            #expect(try statusCodes(String(decoding: connection.readResponse(), as: UTF8.self)) == [200])
            held.append(connection)
        }
        // Two held from each of three addresses, whichever listener each address goes to.
        for last in 1...3 {
            for _ in 0..<2 { try hold(from: "127.0.0.\(last)") }
        }
        #expect(waitUntil(seconds: 5) { Int(server.metrics()?["webserver_connections_active"] ?? 0) == 6 })
        // A third from 127.0.0.1 is closed at accept: its listener counts every connection of it.
        let third = try RawConnection(port: server.port, source: "127.0.0.1")
        third.send(request)
        let (bytes, closed) = third.readAll()
        #expect(bytes.isEmpty && closed)
        third.close()
        // The seventh, the server's limit, from an address of its own; an eighth waits in the backlog
        // while seven are open, whichever listener has it...
        try hold(from: "127.0.0.4")
        let waiting = try RawConnection(port: server.port, source: "127.0.0.5")
        defer { waiting.close() }
        waiting.send(request)
        waiting.setTimeout(1)
        #expect((try? waiting.readResponse()) == nil)
        // ...until connections close, another listener's or its own.
        for connection in held.prefix(2) { connection.close() }
        held.removeFirst(2)
        waiting.setTimeout(5)
        #expect(try statusCodes(String(decoding: waiting.readResponse(), as: UTF8.self)) == [200])
        #expect(Int(try #require(server.metrics())[#"webserver_connections_refused_total{reason="per_ip"}"#]) == 1)
    }

    @Test func aListenerThatDiesIsReplacedAndTheOthersServeMeanwhile() throws {
        let server = try TestServer(config: fastSupervision + "listeners: 2\nworkers: {min: 1, max: 1}\n").start()
        defer { server.stop() }
        let listeners = server.pids(of: "listener")
        #expect(listeners.count == 2)
        // Connections held open across the crash, from addresses on both listeners.
        var held: [RawConnection] = []
        for last in 1...8 {
            let connection = try RawConnection(port: server.port, source: "127.0.0.\(last)")
            connection.send(request)
            #expect(try statusCodes(String(decoding: connection.readResponse(), as: UTF8.self)) == [200])
            held.append(connection)
        }
        kill(listeners[0], SIGKILL)
        // Every address is answered: by the other listener now, or by the new one once it has started.
        for last in 1...8 { #expect(try get(server, from: "127.0.0.\(last)") == [200]) }
        #expect(waitUntil(seconds: 10) { server.pids(of: "listener").count == 2 && !server.pids(of: "listener").contains(listeners[0]) })
        // The counts are the shared ones: the new listener did not start from zero, and once the held
        // connections close, the server counts none open (not fewer, not more).
        #expect(waitUntil(seconds: 5) { Int(server.metrics()?["webserver_connections_active"] ?? 0) == 8 })
        for connection in held { connection.close() }
        #expect(waitUntil(seconds: 5) { Int(server.metrics()?["webserver_connections_active"] ?? -1) == 0 })
        #expect(server.log().contains("listener 0 (pid \(listeners[0])) exited unexpectedly"))
    }

    @Test func aWorkerThatDiesGivesEveryListenerBackWhatItHeld() throws {
        let server = try TestServer(config: fastSupervision + "listeners: 2\nmax_connections: 8\nworkers: {min: 1, max: 1}\n").start()
        defer { server.stop() }
        var held: [RawConnection] = []
        defer { for connection in held { connection.close() } }
        for last in 1...8 {
            let connection = try RawConnection(port: server.port, source: "127.0.0.\(last)")
            connection.send(request)
            #expect(try statusCodes(String(decoding: connection.readResponse(), as: UTF8.self)) == [200])
            held.append(connection)
        }
        #expect(waitUntil(seconds: 5) { Int(server.metrics()?["webserver_connections_active"] ?? 0) == 8 })
        let worker = try #require(server.pids(of: "worker").first)
        kill(worker, SIGKILL)
        // Not one close was reported; each listener learns from the manager what it had handed the worker.
        #expect(waitUntil(seconds: 10) { Int(server.metrics()?["webserver_connections_active"] ?? -1) == 0 })
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 1 && server.pids(of: "worker").first != worker })
        for last in 1...8 { #expect(try get(server, from: "127.0.0.\(last)") == [200]) }
    }

    @Test func listenersHandConnectionsToWorkersWithoutTheManager() throws {
        let server = try TestServer(config: "listeners: 2\nworkers: {min: 2, max: 2}\n").start()
        defer { server.stop() }
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 2 })
        let workers = server.pids(of: "worker")
        let manager = try #require(server.pids(of: "manager").first)
        // The manager stopped (a stall, a debugger): new connections are still answered, since the
        // listeners hand them to the workers themselves, and spread over both.
        kill(manager, SIGSTOP)
        var held: [RawConnection] = []
        defer { for connection in held { connection.close() } }
        for last in 1...8 {
            let connection = try RawConnection(port: server.port, source: "127.0.0.\(last)")
            connection.send(request)
            held.append(connection)
        }
        var statuses: [[Int]] = []
        for connection in held { statuses.append(statusCodes(String(decoding: (try? connection.readResponse()) ?? [], as: UTF8.self))) }
        let perWorker = workers.map { clientSockets(of: $0, listeners: 2) }
        kill(manager, SIGCONT)
        #expect(statuses.allSatisfy { $0 == [200] }, "\(statuses)")
        #expect(perWorker.reduce(0, +) == 8 && perWorker.allSatisfy { $0 >= 2 }, "\(perWorker)")
    }

    /// SO_REUSEPORT would let a second server of the same user share the port silently (half the
    /// clients to each); the first socket of a group is bound without it, so the second is refused.
    @Test func aSecondServerOnTheSamePortIsRefusedAsAddressInUse() throws {
        let first = try TestServer(config: "listeners: 2\n").start()
        defer { first.stop() }
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("second.yaml")
        try """
            root: \(first.directory.appendingPathComponent("site").path)
            listen: ["127.0.0.1:\(first.port)"]
            listeners: 2
            pid_file: \(directory.appendingPathComponent("second.pid").path)
            admin: {listen: off}

            """.write(to: file, atomically: true, encoding: .utf8)
        // Bounded: a second server that did start is stopped after 20 seconds (and the test fails).
        let second = try run("timeout", ["20", webserverBinary, "serve", "--config", file.path])
        #expect(second.status != 0 && second.status != 124)
        #expect(second.error.contains("bind 127.0.0.1:\(first.port) (listen, \(file.path):2): Address already in use"), "\(second.error)")
        #expect(try get(first, from: "127.0.0.1") == [200])
    }
}
