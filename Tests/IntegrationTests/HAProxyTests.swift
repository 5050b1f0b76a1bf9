import Foundation
import Glibc
import Testing

/// HAProxy from apt in front of WebServer instances: PROXY v2 to the servers, health checks on each
/// server's /readyz, retries with redispatch. Started and stopped by the test; its stats page says which
/// server is up.
///
/// HTTP mode, not TCP mode as the issue first said: in TCP mode HAProxy can retry only a connection that
/// failed to open; a request already forwarded to an instance that is then killed is lost with it (the
/// test saw 1 to 3 of about 1,500 fail that way). In HTTP mode `retry-on` sends such a GET to the other
/// instance. PROXY v2 carries the client either way.
final class HAProxy {
    let process = Process()
    let directory: URL
    let port: Int
    let statsPort: Int

    /// `mode` "http" (retries a forwarded GET on another server) or "tcp" (retries only a connection that
    /// failed to open); `proxyProtocol` sends PROXY v2 to the servers.
    init(servers: [(name: String, port: Int, admin: Int)], mode: String = "http", proxyProtocol: Bool = true) throws {
        directory = try temporaryDirectory()
        port = try freePort()
        statsPort = try freePort()
        let lines = servers.map {
            "  server \($0.name) 127.0.0.1:\($0.port)\(proxyProtocol ? " send-proxy-v2" : "") check port \($0.admin) inter 100ms fall 1 rise 2"
        }
        let config = """
            global
              maxconn 2000
              log stderr format raw local0
            defaults
              mode \(mode)
              log global
              option \(mode)log
              timeout connect 1s
              timeout client 10s
              timeout server 10s
              retries 3
              option redispatch
            \(mode == "http" ? "  retry-on all-retryable-errors" : "")
            frontend web
              bind 127.0.0.1:\(port)
              default_backend servers
            backend servers
              balance roundrobin
              option httpchk GET /readyz
              http-check expect status 200
            \(lines.joined(separator: "\n"))
            listen stats
              mode http
              bind 127.0.0.1:\(statsPort)
              stats enable
              stats uri /stats

            """
        let file = directory.appendingPathComponent("haproxy.cfg")
        try config.write(to: file, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/haproxy")
        process.arguments = ["-db", "-f", file.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: {
            let log = directory.appendingPathComponent("haproxy.log")
            #expect(FileManager.default.createFile(atPath: log.path, contents: nil))
            return log
        }())
        try process.run()
    }

    /// Each server's status as HAProxy sees it ("UP", "DOWN", ...), from the stats CSV.
    func states() -> [String: String] {
        guard let csv = try? curl(["http://127.0.0.1:\(statsPort)/stats;csv"]) else { return [:] }
        var result: [String: String] = [:]
        for line in csv.split(separator: "\n") where line.hasPrefix("servers,") {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            if fields.count > 17, fields[1] != "BACKEND" { result[String(fields[1])] = String(fields[17]) }
        }
        return result
    }

    /// HAProxy's log lines for sessions that did not end normally (a termination state other than
    /// "--"), to say in a failure which server ended them and how.
    func abnormalSessions() -> [String] {
        let text = (try? String(contentsOf: directory.appendingPathComponent("haproxy.log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init).filter {
            $0.contains(" servers/") && !$0.contains(" -- ") && !$0.contains(" ---- ")
        }
    }

    func waitFor(_ name: String, _ state: String, seconds: Double = 15) -> Bool {
        waitUntil(seconds: seconds) { self.states()[name]?.hasPrefix(state) == true }
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// One WebServer instance behind HAProxy: PROXY v2 on its socket, its admin listener for the health
/// checks, JSON access log, and a shutdown delay so a drained instance is marked down before it stops
/// accepting. Restartable on the same ports.
func backend(port: Int, admin: Int) throws -> TestServer {
    try TestServer(
        config: "access_log_format: json\ntimeouts: {shutdown_delay: 1s}\nsupervisor: {heartbeat_interval: 100ms}\nworkers: {min: 1, max: 1}\n",
        flags: ["--listen", "127.0.0.1:\(port)", "--proxy-protocol", "--admin-listen", "127.0.0.1:\(admin)"]
    ).start()
}

/// The JSON access-log lines of `server` as (client, client_port).
func clients(of server: TestServer) -> [(String, Int)] {
    let text = (try? String(contentsOf: server.accessLog, encoding: .utf8)) ?? ""
    return text.split(separator: "\n").compactMap { line in
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let client = object["client"] as? String, let port = object["client_port"] as? Int else { return nil }
        return (client, port)
    }
}

/// HAProxy is not on a fresh machine: the test runs where it is installed, and `.ci/run` installs it
/// and sets WEBSERVER_REQUIRE_HAPROXY=1, so there a missing HAProxy fails instead of skipping.
let haproxyAvailable = FileManager.default.isExecutableFile(atPath: "/usr/sbin/haproxy")
    || ProcessInfo.processInfo.environment["WEBSERVER_REQUIRE_HAPROXY"] == "1"

@Suite(.serialized, .enabled(if: haproxyAvailable, "HAProxy is not installed (apt-get install haproxy)")) struct HAProxyTests {
    /// Two instances behind a real HAProxy, under a bounded load through it (new connection per request,
    /// from 127.0.0.2 so the client is told apart from HAProxy's 127.0.0.1): one instance is killed with
    /// SIGKILL, the other drained with SIGTERM, both restarted; every access log names the load
    /// generator's own address and ports.
    @Test func killDrainAndRestartBehindHAProxy() throws {
        let ports = try (0..<4).map { _ in try freePort() }
        var first = try backend(port: ports[0], admin: ports[1])
        var second = try backend(port: ports[2], admin: ports[3])
        let haproxy = try HAProxy(servers: [("a", ports[0], ports[1]), ("b", ports[2], ports[3])])
        defer {
            first.stop()
            second.stop()
        }
        #expect(haproxy.waitFor("a", "UP") && haproxy.waitFor("b", "UP"), "\(haproxy.states())")
        var usedPorts = Set<Int>()
        var servedBy: [TestServer] = [first, second]

        // 1. SIGKILL to every process of the first instance, mid-load.
        var load = try LoadRun(port: haproxy.port, clients: 4, seconds: 4, mode: "new", path: "/index.html", expectedLength: 47, source: "127.0.0.2")
        #expect(first.waitForTraffic())
        for pid in [first.pid] + descendants(of: first.pid) { kill(pid, SIGKILL) }
        var result = try load.finish()
        usedPorts.formUnion(result.ports)
        #expect(result.ok > 100)
        #expect(result.failed == 0, "SIGKILL: \(result.errors)")
        #expect(haproxy.waitFor("a", "DOWN"))
        first.process.waitUntilExit()

        // 2. Restart it on the same ports; HAProxy brings it back.
        first = try backend(port: ports[0], admin: ports[1])
        servedBy.append(first)
        #expect(haproxy.waitFor("a", "UP"))

        // 3. SIGTERM to the second instance mid-load: /readyz turns 503 at once, HAProxy stops sending
        // new connections within a check interval, the instance keeps accepting for its shutdown delay,
        // then drains.
        load = try LoadRun(port: haproxy.port, clients: 4, seconds: 4, mode: "new", path: "/index.html", expectedLength: 47, source: "127.0.0.2")
        #expect(second.waitForTraffic())
        kill(second.pid, SIGTERM)
        result = try load.finish()
        usedPorts.formUnion(result.ports)
        #expect(result.ok > 100)
        #expect(result.failed == 0, "SIGTERM: \(result.errors)")
        #expect(second.stop() == 0)

        // 4. Restart the second; both take traffic again.
        second = try backend(port: ports[2], admin: ports[3])
        servedBy.append(second)
        #expect(haproxy.waitFor("b", "UP"))
        load = try LoadRun(port: haproxy.port, clients: 2, seconds: 1, mode: "new", path: "/index.html", expectedLength: 47, source: "127.0.0.2")
        result = try load.finish()
        usedPorts.formUnion(result.ports)
        #expect(result.failed == 0)

        // Every instance's log: the load generator's address and one of its ports, never HAProxy's.
        for server in servedBy {
            let entries = clients(of: server)
            #expect(!entries.isEmpty, "\(server.directory.lastPathComponent) logged nothing")
            #expect(entries.allSatisfy { $0.0 == "127.0.0.2" && usedPorts.contains($0.1) },
                    "\(entries.filter { $0.0 != "127.0.0.2" || !usedPorts.contains($0.1) }.prefix(3))")
        }
    }

    /// The audit's case (issue 14): HAProxy in TCP mode with health checks, two instances with the
    /// default timeouts (no `shutdown_delay`), SIGTERM to one under load. Connections the kernel had
    /// queued when it stopped accepting were reset (3 to 5 requests lost per SIGTERM), and so were
    /// those HAProxy had opened whose request had not reached the server yet (`defer_accept` keeps them
    /// out of the queue). Now the queues are taken until the sockets close, connections are queued at
    /// once from the stop on, and the sockets stay open a fifth of a second for requests on their way;
    /// a connection refused after the close is one HAProxy retries elsewhere. Nothing is lost.
    @Test func sigtermWithoutAShutdownDelayLosesNothingBehindHAProxyInTCPMode() throws {
        let ports = try (0..<4).map { _ in try freePort() }
        func instance(_ port: Int, _ admin: Int) throws -> TestServer {
            try TestServer(config: "workers: {min: 1, max: 1}\n",
                           flags: ["--listen", "127.0.0.1:\(port)", "--admin-listen", "127.0.0.1:\(admin)"]).start()
        }
        let first = try instance(ports[0], ports[1])
        let second = try instance(ports[2], ports[3])
        defer {
            first.stop()
            second.stop()
        }
        let haproxy = try HAProxy(servers: [("a", ports[0], ports[1]), ("b", ports[2], ports[3])], mode: "tcp", proxyProtocol: false)
        #expect(haproxy.waitFor("a", "UP") && haproxy.waitFor("b", "UP"), "\(haproxy.states())")
        let load = try LoadRun(port: haproxy.port, clients: 8, seconds: 3, mode: "new", path: "/index.html", expectedLength: 47)
        #expect(waitUntil(seconds: 5) { (first.metrics()?["webserver_requests_total{method=\"GET\"}"] ?? 0) > 200 })
        kill(first.pid, SIGTERM)
        let result = try load.finish()
        #expect(result.ok > 500)
        #expect(result.failed == 0, "\(result.failed) lost: \(result.errors.prefix(3)); HAProxy: \(haproxy.abnormalSessions()); the server: \(first.log())")
        #expect(first.stop() == 0)
    }
}
