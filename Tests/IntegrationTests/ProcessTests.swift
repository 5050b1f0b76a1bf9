import Foundation
import Glibc
import Testing

let fastSupervision = """
    supervisor:
      heartbeat_interval: 100ms
      heartbeat_timeout: 1s
      kill_grace: 500ms
      restart_delay: 50ms
      restart_delay_max: 1s

    """

/// The process tree: names, recovery after kill -9 under load, heartbeats, crash loops, scaling, shutdown.
@Suite(.serialized) struct ProcessTests {
    @Test func everyProcessIsNamedForItsRole() throws {
        let server = try TestServer(config: "workers: {min: 2, max: 2}\n").start()
        defer { server.stop() }
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 2 })
        #expect(server.pids(of: "listener").count == 1)
        #expect(server.pids(of: "manager").count == 1)
        func names() -> [String] {
            descendants(of: server.pid).compactMap {
                try? String(contentsOfFile: "/proc/\($0)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            }.sorted()
        }
        #expect(waitUntil(seconds: 5) { names() == ["ws-listener", "ws-manager", "ws-worker", "ws-worker"] }, "\(names())")
    }

    @Test func whileTheListenerIsDownTheBacklogHoldsEveryConnection() throws {
        // The restart takes 0.4 to 0.8s: every connection made meanwhile waits in the kernel's backlog
        // on the socket the supervisor keeps, and is served by the next listener.
        let slowRestart = fastSupervision.replacingOccurrences(of: "restart_delay: 50ms", with: "restart_delay: 800ms")
        let server = try TestServer(config: slowRestart).start()
        defer { server.stop() }
        let old = try #require(server.pids(of: "listener").first)
        kill(old, SIGKILL)
        // Gone (reaped), and its successor not started yet: the restart waits 800 ms.
        #expect(waitUntil(seconds: 5) { !server.pids(of: "listener").contains(old) })
        let load = try LoadRun(port: server.port, clients: 8, seconds: 2, mode: "new", path: "/", expectedLength: 47)
        let result = try load.finish()
        print("recovery: listener down, backlog: \(result.ok) answered, \(result.failed) lost")
        #expect(result.failed == 0, "\(result.errors)")
        #expect(result.ok > 50)
        #expect(server.pids(of: "listener").count == 1 && server.pids(of: "listener").first != old)
    }

    @Test func killedListenerUnderLoadLosesAtMostWhatItHeld() throws {
        let server = try TestServer(config: fastSupervision).start()
        defer { server.stop() }
        let clients = 4
        let load = try LoadRun(port: server.port, clients: clients, seconds: 3, mode: "new", path: "/", expectedLength: 47)
        #expect(server.waitForTraffic())
        let old = try #require(server.pids(of: "listener").first)
        kill(old, SIGKILL)
        let result = try load.finish()
        print("recovery: listener killed under load: \(result.ok) answered, \(result.failed) lost with it (at most \(clients))")
        // Only a connection accepted and not yet passed on (at most one per client here) can be lost;
        // almost always none is.
        #expect(result.failed <= clients, "\(result.errors)")
        #expect(result.ok > 50)
        #expect(server.pids(of: "listener").count == 1 && server.pids(of: "listener").first != old)
        #expect(server.log().contains("the listener (pid \(old)) exited unexpectedly: killed by signal 9"))
    }

    @Test func killedManagerLosesAtMostWhatItHeld() throws {
        let server = try TestServer(config: fastSupervision + "workers: {min: 2, max: 2}\n").start()
        defer { server.stop() }
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 2 })
        let clients = 4
        let load = try LoadRun(port: server.port, clients: clients, seconds: 3, mode: "new", path: "/", expectedLength: 47)
        #expect(server.waitForTraffic())
        let old = try #require(server.pids(of: "manager").first)
        let oldWorkers = server.pids(of: "worker")
        kill(old, SIGKILL)
        let result = try load.finish()
        print("recovery: manager killed under load: \(result.ok) answered, \(result.failed) lost with it (at most \(clients))")
        // The manager alone holds its wait queue: at most one connection per client can be in it.
        #expect(result.failed <= clients, "\(result.errors)")
        #expect(result.ok > 50)
        let newManager = server.pids(of: "manager")
        #expect(newManager.count == 1 && newManager.first != old)
        // The orphaned workers drained and exited; the new manager runs its own.
        #expect(waitUntil(seconds: 10) { oldWorkers.allSatisfy { kill($0, 0) != 0 } })
        #expect(try status(server.url + "/") == 200)
    }

    @Test func killedWorkerLosesOnlyItsOwnConnections() throws {
        let server = try TestServer(config: fastSupervision + "workers: {min: 2, max: 2}\n").start()
        defer { server.stop() }
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 2 })
        let clients = 6
        let load = try LoadRun(port: server.port, clients: clients, seconds: 3, mode: "keepalive", path: "/", expectedLength: 47)
        #expect(server.waitForTraffic())
        let victim = try #require(server.pids(of: "worker").first)
        let heldBefore = clientSockets(of: victim)
        kill(victim, SIGKILL)
        let result = try load.finish()
        // What the listener had handed it and not seen closed: its own connections, including any a
        // reconnecting client was given in the instant it was dying.
        #expect(server.waitForLog("connections this listener admitted"), "\(server.log())")
        let pattern = try Regex(#"worker \#(victim) exited holding (\d+) connections this listener admitted"#)
        let owned = try #require(server.log().firstMatch(of: pattern).flatMap { $0.output[1].substring }.flatMap { Int($0) })
        print("recovery: worker killed under load: \(result.ok) answered, \(result.failed) lost with it (at most the \(owned) it held; \(heldBefore) a moment before, of \(clients))")
        #expect(heldBefore >= 1 && owned >= heldBefore)
        // Only connections the victim owned fail; every other client carries on.
        #expect(result.failed <= owned, "owned \(owned), failed \(result.failed): \(result.errors)")
        // A client fails once when its connection dies, and at most once more if its reconnection was
        // handed to the worker in the instant it was dying.
        #expect(result.perClient.allSatisfy { $0 <= 2 })
        #expect(result.perClient.filter { $0 == 0 }.count >= clients - owned)
        #expect(result.ok > 1000)
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 2 && !server.pids(of: "worker").contains(victim) })
    }

    /// A worker that dies as the manager hands it a connection is a crash like any other: the failed
    /// send must not make its death look like the manager's doing (issue 14: restarts_total read 9 after
    /// 10 kills), and the connection goes to another worker. The manager is held (SIGSTOP) so that the
    /// connections reach it before it learns of the deaths.
    @Test func aWorkerThatDiesAsItIsHandedAConnectionCountsAsARestart() throws {
        let config = fastSupervision.replacingOccurrences(of: "heartbeat_timeout: 1s", with: "heartbeat_timeout: 5s")
        let server = try TestServer(config: config + "workers: {min: 2, max: 2}\n").start()
        defer { server.stop() }
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 2 })
        let manager = try #require(server.pids(of: "manager").first)
        let workers = server.pids(of: "worker")
        kill(manager, SIGSTOP)
        let clients = try (0..<4).map { _ in try RawConnection(port: server.port) }
        for client in clients {
            client.setTimeout(10)
            client.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        }
        usleep(300_000)  // the listener passes them on; they wait on the manager's channel
        for worker in workers { kill(worker, SIGKILL) }
        usleep(200_000)
        kill(manager, SIGCONT)
        for client in clients {
            let response = String(decoding: (try? client.readResponse()) ?? [], as: UTF8.self)
            #expect(response.hasPrefix("HTTP/1.1 200"), "\(response)")
            client.close()
        }
        #expect(waitUntil(seconds: 10) { server.metrics()?[#"webserver_restarts_total{role="worker"}"#] == 2 },
                "\(server.metrics()?[#"webserver_restarts_total{role="worker"}"#] ?? -1) restarts after 2 kills")
        #expect(server.log().components(separatedBy: "connections it held are lost").count - 1 == 2)
    }

    /// A child that stops heartbeating is stuck in its loop (here: SIGSTOP), where it would read a
    /// SIGTERM too: it gets SIGKILL when its heartbeat timeout passes, not SIGTERM and `kill_grace`
    /// more, so it is replaced a heartbeat timeout (1 s) after it went silent, not 4 s (issue 14).
    @Test func aSilentChildIsKilledAndRestartedWithoutWaitingOutTheGrace() throws {
        let slowGrace = fastSupervision.replacingOccurrences(of: "kill_grace: 500ms", with: "kill_grace: 3s")
        let server = try TestServer(config: slowGrace).start()
        defer { server.stop() }
        let old = try #require(server.pids(of: "listener").first)
        let started = Date()
        kill(old, SIGSTOP)  // alive but silent: only the heartbeat can tell
        #expect(waitUntil(seconds: 10) { server.pids(of: "listener").count == 1 && server.pids(of: "listener").first != old })
        #expect(Date().timeIntervalSince(started) < 2.8)
        #expect(server.log().contains("the listener (pid \(old)) sent no heartbeat for"))
        #expect(try status(server.url + "/") == 200)
    }

    @Test func aSilentWorkerIsKilledAndReplaced() throws {
        let slowGrace = fastSupervision.replacingOccurrences(of: "kill_grace: 500ms", with: "kill_grace: 3s")
        let server = try TestServer(config: slowGrace).start()
        defer { server.stop() }
        let old = try #require(server.pids(of: "worker").first)
        let started = Date()
        kill(old, SIGSTOP)
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 1 && server.pids(of: "worker").first != old })
        #expect(Date().timeIntervalSince(started) < 2.8)
        #expect(server.log().contains("missed its heartbeats for"))
        // It had failed: the pool replaced it, and that is a restart.
        #expect(waitUntil(seconds: 5) { server.metrics()?[#"webserver_restarts_total{role="worker"}"#] == 1 })
        #expect(try status(server.url + "/") == 200)
    }

    /// The supervisor itself stopped for longer than the heartbeat timeout (SIGSTOP here; a long page
    /// fault or a VM pause in life) finds its children's heartbeats queued when it resumes, and reads
    /// them before judging anyone: nobody is killed, nothing counts as a restart (issue 14).
    @Test func aStalledSupervisorKillsNoHealthyChild() throws {
        let server = try TestServer(config: fastSupervision).start()  // heartbeat_timeout: 1s
        defer { server.stop() }
        let before = (server.pids(of: "listener"), server.pids(of: "manager"))
        kill(server.pid, SIGSTOP)
        usleep(2_500_000)  // the stall
        kill(server.pid, SIGCONT)
        // Given a second and a half of ticks in which it would have killed them.
        usleep(1_500_000)
        #expect(server.pids(of: "listener") == before.0 && server.pids(of: "manager") == before.1)
        #expect(!server.log().contains("sent no heartbeat") && !server.log().contains("exited unexpectedly"))
        #expect(server.metrics()?[#"webserver_restarts_total{role="listener"}"#] == 0)
        #expect(server.metrics()?[#"webserver_restarts_total{role="manager"}"#] == 0)
        #expect(try status(server.url + "/") == 200)
    }

    @Test func aCrashLoopStopsTheServer() throws {
        let server = try TestServer(config: fastSupervision.replacingOccurrences(of: "restart_delay_max: 1s", with: "restart_delay_max: 1s\n  restart_intensity: 2\n  restart_period: 1m")).start()
        defer { server.stop() }
        let port = server.port
        for round in 1...3 {
            guard let pid = waitForOne({ server.pids(of: "listener").first }) else {
                Issue.record("no listener in round \(round)")
                return
            }
            kill(pid, SIGKILL)
            #expect(waitUntil(seconds: 10) { !server.pids(of: "listener").contains(pid) })
        }
        #expect(waitUntil(seconds: 10) { !server.process.isRunning })
        #expect(server.process.terminationStatus == 70)
        #expect(throws: TestFailure.self) { try RawConnection(port: port) }  // refused, not left hanging
        #expect(server.log().contains("crash loop, not restarting it; stopping the server"))
    }

    @Test func thePoolGrowsUnderLoadAndShrinksWhenIdle() throws {
        let server = try TestServer(config: fastSupervision + "workers: {min: 1, max: 3, connections_per_worker: 4, idle_timeout: 500ms}\n").start()
        defer { server.stop() }
        #expect(server.pids(of: "worker").count == 1)
        // 20 open keep-alive connections against a capacity of 4 per worker.
        let sockets = try (0..<20).map { _ in try openKeepAliveConnection(server.port) }
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 3 })
        for fd in sockets { close(fd) }
        #expect(waitUntil(seconds: 15) { server.pids(of: "worker").count == 1 })
        #expect(server.log().contains("retiring: pool is idle"))
    }

    @Test func maxConnectionsHoldsNewOnesInTheBacklog() throws {
        let server = try TestServer(config: "max_connections: 2\n").start()
        defer { server.stop() }
        let first = try openKeepAliveConnection(server.port)
        let second = try openKeepAliveConnection(server.port)
        // Both answered, so both were accepted and counted. A third connection is not accepted while two
        // are open: its request waits in the backlog (for the whole second it is given here)...
        let started = Date()
        let third = try LoadRun(port: server.port, clients: 1, seconds: 0.1, mode: "new", path: "/", expectedLength: 47)
        #expect(!waitUntil(seconds: 1) { !third.process.isRunning })
        // ...and is answered once one of the others closes.
        close(first)
        let result = try third.finish()
        #expect(result.ok == 1 && result.failed == 0)
        #expect(Date().timeIntervalSince(started) >= 1)
        close(second)
    }

    /// SIGTERM with no `shutdown_delay`: connections the kernel had already accepted, waiting in the
    /// backlog (here while `max_connections` held the listener back), are answered, not reset when the
    /// sockets close (issue 14).
    @Test func queuedConnectionsAreAnsweredAtShutdown() throws {
        let server = try TestServer(config: "max_connections: 1\n").start()
        defer { server.stop() }
        let holder = try openKeepAliveConnection(server.port)
        defer { close(holder) }
        let clients = try (0..<3).map { _ in try RawConnection(port: server.port) }
        defer { for client in clients { client.close() } }
        for client in clients { client.send("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n") }
        kill(server.pid, SIGTERM)
        for client in clients {
            let (bytes, closed) = client.readAll()
            #expect(statusCodes(String(decoding: bytes, as: UTF8.self)) == [200] && closed)
        }
        #expect(server.stop() == 0)
    }

    @Test func aCrashedWorkersConnectionsAreReleased() throws {
        // With max_connections 2, two connections on a worker that is then killed must not keep the
        // listener believing the server is full.
        let server = try TestServer(config: fastSupervision + "max_connections: 2\n").start()
        defer { server.stop() }
        let first = try openKeepAliveConnection(server.port)
        let second = try openKeepAliveConnection(server.port)
        defer {
            close(first)
            close(second)
        }
        let worker = try #require(server.pids(of: "worker").first)
        // The worker holds both: the manager counted them when it handed them over.
        #expect(waitUntil(seconds: 5) { clientSockets(of: worker) == 2 })
        kill(worker, SIGKILL)
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 1 && server.pids(of: "worker").first != worker })
        let result = try LoadRun(port: server.port, clients: 1, seconds: 0.5, mode: "new", path: "/", expectedLength: 47).finish()
        #expect(result.failed == 0 && result.ok >= 1)
    }

    @Test func gracefulShutdownFinishesRequestsInFlight() throws {
        // 40 MiB at 8 MB/s: far more than loopback's socket buffers hold, so the transfer is really in flight.
        let server = try TestServer { site in
            try TestServer.defaultSite(site)
            _ = FileManager.default.createFile(atPath: site.appendingPathComponent("huge.bin").path, contents: nil)
            truncate(site.appendingPathComponent("huge.bin").path, 40 << 20)
        }.start()
        let output = server.directory.appendingPathComponent("download.bin")
        let download = Process()
        download.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        download.arguments = ["curl", "-s", "--limit-rate", "8M", "-o", output.path, "-w", "%{http_code} %{size_download}", server.url + "/huge.bin"]
        let pipe = Pipe()
        download.standardOutput = pipe
        try download.run()
        // The download is flowing, and an idle keep-alive connection is held beside it.
        #expect(waitUntil(seconds: 10) { ((try? FileManager.default.attributesOfItem(atPath: output.path)[.size] as? Int) ?? 0) > 1 << 20 })
        let idle = try openKeepAliveConnection(server.port)
        let worker = try #require(server.pids(of: "worker").first)
        #expect(waitUntil(seconds: 5) { clientSockets(of: worker) == 2 })
        #expect(download.isRunning)
        kill(server.pid, SIGTERM)
        // Draining: /readyz turns 503 at once.
        let admin = try #require(server.adminPort)
        #expect(waitUntil(seconds: 5) { server.readiness(admin) == 503 })
        // New connections are refused once the listener is gone...
        #expect(waitUntil(seconds: 5) { (try? status(server.url + "/")) == 0 })
        // ...the idle keep-alive connection is closed...
        var byte: UInt8 = 0
        #expect(recv(idle, &byte, 1, 0) == 0)
        close(idle)
        // ...and the download in flight completes whole.
        let result = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        download.waitUntilExit()
        #expect(result == "200 \(40 << 20)")
        #expect(download.terminationStatus == 0)
        #expect(server.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: server.pidFile.path))
        #expect(server.log().contains("webserver stopped"))
    }
}

