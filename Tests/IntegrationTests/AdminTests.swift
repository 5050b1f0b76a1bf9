import Foundation
import Glibc
import Testing

@Suite(.serialized) struct AdminTests {
    static let fastBeats = "supervisor: {heartbeat_interval: 100ms, heartbeat_timeout: 3s}\nworkers: {min: 1, max: 1}\n"

    @Test func livezReadyzAndMetricsThatCountWhatHappens() throws {
        let server = try TestServer(config: AdminTests.fastBeats, flags: ["--admin-listen", "127.0.0.1:0"]).start()
        defer { server.stop() }
        let admin = try #require(server.adminPort)
        #expect(try adminGet(admin, "/livez").status == 200)
        #expect(waitUntil(seconds: 5) { (try? adminGet(admin, "/readyz").status) == 200 })
        #expect(try adminGet(admin, "/nothing").status == 404)
        let before = try Metrics(adminGet(admin, "/metrics").body)
        for _ in 0..<5 { #expect(try status(server.url + "/index.html") == 200) }
        for _ in 0..<2 { #expect(try status(server.url + "/index.html", ["-I"]) == 200) }
        #expect(try status(server.url + "/missing") == 404)
        #expect(try status(server.url + "/", ["-X", "OPTIONS"]) == 204)
        var after = before
        #expect(waitUntil(seconds: 5) {
            after = (try? Metrics(adminGet(admin, "/metrics").body)) ?? before
            // The listener's count comes with its own heartbeat, the requests with the worker's stats
            // through the manager's: each may be a beat behind the other.
            return after["webserver_request_duration_seconds_count"] - before["webserver_request_duration_seconds_count"] == 9
                && after["webserver_connections_accepted_total"] - before["webserver_connections_accepted_total"] >= 9
        })
        func delta(_ name: String) -> Double { after[name] - before[name] }
        #expect(delta("webserver_responses_total{code=\"2xx\"}") == 8)
        #expect(delta("webserver_responses_total{code=\"4xx\"}") == 1)
        #expect(delta("webserver_requests_total{method=\"GET\"}") == 6)
        #expect(delta("webserver_requests_total{method=\"HEAD\"}") == 2)
        #expect(delta("webserver_requests_total{method=\"OPTIONS\"}") == 1)
        #expect(delta("webserver_connections_accepted_total") == 9)
        #expect(delta("webserver_connections_handled_total") == 9)
        #expect(delta("webserver_sent_bytes_total") > 5 * 47)  // five bodies of the 47-byte index, and heads
        #expect(after["webserver_workers{state=\"idle\"}"] + after["webserver_workers{state=\"busy\"}"] == 1)
        #expect(after["webserver_worker_processes"] == 1)
        #expect(after["webserver_ready"] == 1 && after.types["webserver_request_duration_seconds"] == "histogram")
        // The histogram is cumulative and ends at +Inf = count.
        let buckets = after.samples.filter { $0.key.hasPrefix("webserver_request_duration_seconds_bucket") }
        #expect(buckets.count == 14)
        #expect(after["webserver_request_duration_seconds_bucket{le=\"+Inf\"}"] == after["webserver_request_duration_seconds_count"])
        #expect(buckets.values.allSatisfy { $0 <= after["webserver_request_duration_seconds_count"] })
        // An idle keep-alive connection shows as waiting.
        let fd = try openKeepAliveConnection(server.port)
        defer { close(fd) }
        #expect(waitUntil(seconds: 5) { ((try? Metrics(adminGet(admin, "/metrics").body))?["webserver_connections_waiting"] ?? 0) == 1 })
        // The admin socket answers only GET and HEAD, and closes after each answer.
        #expect(try curl(["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "http://127.0.0.1:\(admin)/metrics"]) == "405")
    }

    @Test func crashesReloadsAndCertificatesShowInMetrics() throws {
        let certificates = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: certificates) }
        let (cert, key) = try makeTestCertificate(in: certificates, days: 20)
        let server = try TestServer(config: AdminTests.fastBeats + "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n",
                                    flags: ["--admin-listen", "127.0.0.1:0"]).start()
        defer { server.stop() }
        let admin = try #require(server.adminPort)
        let metrics = try Metrics(adminGet(admin, "/metrics").body)
        let expiry = metrics["webserver_certificate_expiry_time_seconds{file=\"\(cert)\"}"]
        let twentyDays = Date().timeIntervalSince1970 + 20 * 86400
        #expect(abs(expiry - twentyDays) < 3 * 86400, "expiry \(expiry)")

        // A worker killed: the pool replaces it and the restart is counted.
        let worker = try #require(server.pids(of: "worker").first)
        kill(worker, SIGKILL)
        #expect(waitUntil(seconds: 10) {
            ((try? Metrics(adminGet(admin, "/metrics").body))?["webserver_restarts_total{role=\"worker\"}"] ?? 0) == 1
        })
        #expect(waitUntil(seconds: 10) { (try? adminGet(admin, "/readyz").status) == 200 })

        // A reload that applies, then one that is refused.
        kill(server.pid, SIGHUP)
        #expect(waitUntil(seconds: 10) { ((try? Metrics(adminGet(admin, "/metrics").body))?["webserver_last_reload_success"] ?? -1) == 1 })
        let good = try String(contentsOf: server.configFile, encoding: .utf8)
        try (good + "colour: blue\n").write(to: server.configFile, atomically: true, encoding: .utf8)
        kill(server.pid, SIGHUP)
        #expect(waitUntil(seconds: 10) { ((try? Metrics(adminGet(admin, "/metrics").body))?["webserver_last_reload_success"] ?? -1) == 0 })
        #expect(try status(server.url + "/index.html") == 200)
    }

    /// SIGTERM: readiness turns 503 at once, while a download in flight finishes.
    @Test func readinessTurnsAtOnceOnSigterm() throws {
        let server = try TestServer(config: AdminTests.fastBeats, flags: ["--admin-listen", "127.0.0.1:0"], site: richSite).start()
        defer { server.stop() }
        let admin = try #require(server.adminPort)
        #expect(waitUntil(seconds: 5) { (try? adminGet(admin, "/readyz").status) == 200 })
        // A client that asks for 5 MiB and reads nothing keeps the drain going.
        let fd = try openConnection(server.port)
        defer { close(fd) }
        var size: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        _ = Array("GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n".utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        #expect(waitUntil(seconds: 5) { server.metrics()?["webserver_connections_writing"] == 1 })
        kill(server.pid, SIGTERM)
        var reply = Response("")
        #expect(waitUntil(seconds: 3) {
            reply = (try? adminGet(admin, "/readyz")) ?? Response("")
            return reply.status == 503
        })
        #expect(reply.body == "draining\n")
        #expect(try adminGet(admin, "/livez").status == 200)
    }
}

@Suite(.serialized) struct StatusCommandTests {
    @Test func statusShowsProcessesConnectionsAndFigures() throws {
        let server = try TestServer(config: AdminTests.fastBeats.replacingOccurrences(of: "max: 1", with: "max: 2")
                                        .replacingOccurrences(of: "min: 1", with: "min: 2"),
                                    flags: ["--admin-listen", "127.0.0.1:0"]).start()
        defer { server.stop() }
        let admin = try #require(server.adminPort)
        #expect(waitUntil(seconds: 5) { server.pids(of: "worker").count == 2 })
        let held = try (0..<3).map { _ in try openKeepAliveConnection(server.port) }
        defer { held.forEach { close($0) } }
        #expect(waitUntil(seconds: 5) { ((try? Metrics(adminGet(admin, "/metrics").body))?["webserver_connections_waiting"] ?? 0) == 3 })
        let result = try run(webserverBinary, ["status", "--pid-file", server.pidFile.path, "--admin", "127.0.0.1:\(admin)"])
        #expect(result.status == 0, "\(result.error)")
        let lines = result.output.split(separator: "\n").map(String.init)
        let table = lines.prefix { !$0.isEmpty }
        #expect(table.first?.hasPrefix("PROCESS") == true)
        func row(_ name: String) -> [String]? { table.first { $0.hasPrefix(name) }?.split(separator: " ").map(String.init) }
        #expect(row("supervisor")?[1] == String(server.pid))
        #expect(row("listener")?[1] == String(try #require(server.pids(of: "listener").first)))
        let workerConnections = table.filter { $0.hasPrefix("worker") }.compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }
        #expect(workerConnections.count == 2 && workerConnections.reduce(0, +) == 3, "\(table)")
        #expect(result.output.contains("ready:        ready"))
        #expect(result.output.contains("connections:  3 open (reading 0, writing 0, waiting 3)"))
        #expect(result.output.contains("workers:      2 busy, 0 idle") || result.output.contains("workers:      1 busy, 1 idle"))
        // No server: a clear error, exit 1.
        let none = try run(webserverBinary, ["status", "--pid-file", server.directory.appendingPathComponent("none.pid").path])
        #expect(none.status == 1 && none.error.contains("no server is running"))
    }
}
