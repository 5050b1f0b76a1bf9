import Foundation
import Glibc
import Testing

/// A datagram socket standing in for systemd's notification socket.
final class NotifySocket {
    let fd: Int32
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("ws-notify-\(UUID().uuidString.prefix(8))").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw TestFailure("bind \(path): \(errno)") }
        chmod(path, 0o777)  // as systemd's is: the server may have become another user when it speaks
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// Every message received until one contains `text` or `seconds` pass.
    func wait(for text: String, seconds: Double = 10) -> [String] {
        var messages: [String] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { continue }
            let message = String(decoding: buffer[0..<count], as: UTF8.self)
            messages.append(message)
            if message.contains(text) { break }
        }
        return messages
    }
}

@Suite(.serialized) struct SystemdTests {
    @Test func notifyReadyReloadingWatchdogAndStopping() throws {
        let notify = try NotifySocket()
        let server = try TestServer(environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"]).start()
        defer { server.stop() }
        let ready = notify.wait(for: "READY=1")
        #expect(ready.last?.split(separator: "\n").contains("READY=1") == true)
        #expect(ready.last?.contains("MAINPID=\(server.pid)") == true)
        // The watchdog every WatchdogSec / 2.
        let started = Date()
        _ = notify.wait(for: "WATCHDOG=1", seconds: 3)
        let pings = notify.wait(for: "WATCHDOG=1", seconds: 3)
        #expect(pings.contains { $0 == "WATCHDOG=1" } && Date().timeIntervalSince(started) < 2)
        kill(server.pid, SIGHUP)
        let reload = notify.wait(for: "READY=1")
        let reloading = try #require(reload.first { $0.hasPrefix("RELOADING=1") })
        #expect(reloading.contains("\nMONOTONIC_USEC="))
        #expect(reload.last == "READY=1")
        // Children never speak for the service: the variables are not passed on.
        let worker = try #require(server.pids(of: "worker").first)
        let environment = (try? String(contentsOfFile: "/proc/\(worker)/environ", encoding: .utf8)) ?? ""
        #expect(!environment.contains("NOTIFY_SOCKET") && !environment.contains("WATCHDOG_USEC"))
        kill(server.pid, SIGTERM)
        #expect(notify.wait(for: "STOPPING=1").last?.hasPrefix("STOPPING=1") == true)
        #expect(server.stop() == 0)
    }

    /// Socket activation: the socket systemd would pass as fd 3 (here a Python launcher binds it and
    /// execs the server with LISTEN_FDS=1 and its own pid) is used, not bound again. With `listeners: 2`,
    /// a socket passed with SO_REUSEPORT (systemd's ReusePort=yes) gets a copy beside it; one without
    /// leaves the server with one listener and says why.
    @Test(arguments: [false, true]) func socketActivation(reusePort: Bool) throws {
        let launcher = FileManager.default.temporaryDirectory.appendingPathComponent("ws-activate-\(UUID().uuidString.prefix(8)).py")
        try """
            import os, socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if \(reusePort ? "True" : "False"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            port = s.getsockname()[1]
            if s.fileno() != 3:
                os.dup2(s.fileno(), 3)
            os.set_inheritable(3, True)
            os.environ["LISTEN_FDS"] = "1"
            os.environ["LISTEN_PID"] = str(os.getpid())
            args = sys.argv[1:] + ["--listen", "127.0.0.1:%d" % port]
            os.execv(args[0], args)
            """.write(to: launcher, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: launcher) }
        let server = try TestServer(config: "listeners: 2\n", launcher: ["python3", launcher.path]).start()
        defer { server.stop() }
        #expect(server.log().contains("socket activation: using the socket passed for 127.0.0.1:"))
        #expect(try status(server.url + "/index.html") == 200)
        #expect(server.pids(of: "listener").count == (reusePort ? 2 : 1))
        #expect(server.log().contains("(systemd: ReusePort=yes); running one listener") == !reusePort, "\(server.log())")
        let listener = try #require(server.pids(of: "listener").first)
        let environment = (try? String(contentsOfFile: "/proc/\(listener)/environ", encoding: .utf8)) ?? ""
        #expect(!environment.contains("LISTEN_FDS"))
    }

    /// SIGTERM with shutdown_delay: /readyz turns 503 at once, new connections are still served during
    /// the delay, then the listeners close and the server exits.
    @Test func shutdownDelayKeepsAcceptingWhileNotReady() throws {
        let server = try TestServer(config: "timeouts: {shutdown_delay: 1500ms}\nsupervisor: {heartbeat_interval: 100ms}\n",
                                    flags: ["--admin-listen", "127.0.0.1:0"]).start()
        defer { server.stop() }
        let admin = try #require(server.adminPort)
        #expect(waitUntil(seconds: 5) { (try? adminGet(admin, "/readyz").status) == 200 })
        let signalled = Date()
        kill(server.pid, SIGTERM)
        #expect(waitUntil(seconds: 1) { (try? adminGet(admin, "/readyz").status) == 503 })
        #expect(try status(server.url + "/index.html") == 200)  // still accepting
        #expect(Date().timeIntervalSince(signalled) < 1.4)
        #expect(waitUntil(seconds: 10) { (try? status(server.url + "/index.html")) != 200 })
        #expect(Date().timeIntervalSince(signalled) >= 1.4)
        #expect(server.stop() == 0)
    }
}
