import Foundation
import Glibc
import Testing

@Suite(.serialized) struct UpgradeTests {
    /// `webserver upgrade` under load: the binary on disk starts as a new supervisor on the same
    /// sockets (and admin socket and pid file), the old one drains and exits 0, and no request fails.
    /// With two listeners, both copies of the socket are handed over and taken up again.
    @Test(arguments: [1, 2]) func anUpgradeUnderLoadLosesNothing(listeners: Int) throws {
        let server = try TestServer(
            config: "supervisor: {heartbeat_interval: 100ms}\nlisteners: \(listeners)\n", flags: ["--admin-listen", "127.0.0.1:0"]
        ).start()
        defer { server.stop() }
        let admin = try #require(server.adminPort)
        let old = server.pid
        let loads = try [
            LoadRun(port: server.port, clients: 3, seconds: 3, mode: "new", path: "/index.html", expectedLength: 47),
            LoadRun(port: server.port, clients: 3, seconds: 3, mode: "keepalive", path: "/index.html", expectedLength: 47),
        ]
        #expect(server.waitForTraffic())
        let result = try run(webserverBinary, ["upgrade", "--pid-file", server.pidFile.path])
        #expect(result.status == 0, "\(result.output) \(result.error)")
        let new = try #require(pidInFile(server.pidFile))
        defer { stopProcess(new) }
        #expect(new != old)
        #expect(result.output.contains("pid \(new) is serving"))
        for load in loads {
            let outcome = try load.finish()
            #expect(outcome.ok > 100 && outcome.failed == 0, "\(outcome.errors)")
        }
        // The old supervisor drained and exited cleanly; the new one serves, /readyz included.
        server.process.waitUntilExit()
        #expect(server.process.terminationStatus == 0)
        #expect(try status(server.url + "/index.html") == 200)
        #expect(try adminGet(admin, "/readyz").status == 200)
        #expect(server.log().contains("upgrade: using the socket passed for 127.0.0.1:"))
        if listeners > 1 {
            // Both servers ran two listeners on the same two sockets: none bound anew, none left over.
            #expect(server.log().components(separatedBy: "2 listeners, each with its own copy").count == 3, "\(server.log())")
            #expect(!server.log().contains("running one listener") && !server.log().contains("not in listen or tls.listen"))
            let newListeners = descendants(of: new).filter {
                (try? String(contentsOfFile: "/proc/\($0)/comm", encoding: .utf8))?.hasPrefix("ws-listener") == true
            }
            #expect(newListeners.count == 2)
        }
        #expect(FileManager.default.fileExists(atPath: server.pidFile.path))
        // The new one answers to the usual commands through the same pid file.
        #expect(try run(webserverBinary, ["stop", "--pid-file", server.pidFile.path]).status == 0)
        #expect(kill(new, 0) != 0)
    }

    /// A new server that cannot start (here its configuration became invalid) changes nothing: the old
    /// one keeps serving, with the same pid file, and says why in its log.
    @Test func aFailedUpgradeLeavesTheOldServing() throws {
        let server = try TestServer().start()
        defer { server.stop() }
        let good = try String(contentsOf: server.configFile, encoding: .utf8)
        try (good + "colour: blue\n").write(to: server.configFile, atomically: true, encoding: .utf8)
        let result = try run(webserverBinary, ["upgrade", "--pid-file", server.pidFile.path, "--wait", "3"])
        #expect(result.status == 1)
        #expect(server.waitForLog("upgrade failed"))
        #expect(pidInFile(server.pidFile) == server.pid)
        #expect(try status(server.url + "/index.html") == 200)
        // Fixed, the upgrade goes through.
        try good.write(to: server.configFile, atomically: true, encoding: .utf8)
        #expect(try run(webserverBinary, ["upgrade", "--pid-file", server.pidFile.path]).status == 0)
        let new = try #require(pidInFile(server.pidFile))
        defer { stopProcess(new) }
        #expect(new != server.pid)
        #expect(try status(server.url + "/index.html") == 200)
    }
}

@Suite(.serialized) struct HungUpgradeTests {
    /// An upgrade to a binary that never says it is ready (here a script that sleeps in its place) is
    /// given `timeouts.upgrade`, then stopped with everything it holds; the old server keeps serving,
    /// takes the next upgrade, and after `stop` leaves neither the port nor the pid file behind.
    @Test func aNewServerThatNeverBecomesReadyIsStopped() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let binary = directory.appendingPathComponent("webserver").path
        try FileManager.default.copyItem(atPath: webserverBinary, toPath: binary)
        let server = try TestServer(config: "timeouts: {upgrade: 2s}\n", binary: binary).start()
        defer { server.stop() }
        let port = server.port
        // The binary on disk replaced, as a deploy does, by one that hangs at start.
        let hanging = directory.appendingPathComponent("hanging").path
        try "#!/bin/sh\nexec sleep 600\n".write(toFile: hanging, atomically: true, encoding: .utf8)
        chmod(hanging, 0o755)
        rename(hanging, binary)
        func sleepers() -> [Int32] { descendants(of: server.pid).filter { commandLine(of: $0).contains("sleep 600") } }

        kill(server.pid, SIGUSR2)
        #expect(waitUntil(seconds: 5) { !sleepers().isEmpty })
        // Stopped after its two seconds; the old one still serves and says why.
        #expect(waitUntil(seconds: 10) { sleepers().isEmpty })
        #expect(server.log().contains("was not ready within 2000ms (timeouts.upgrade); stopped it; still serving"))
        #expect(try status(server.url + "/index.html") == 200)
        #expect(pidInFile(server.pidFile) == server.pid)
        // The next upgrade is taken (not refused as one already under way), and a stop while it hangs
        // stops it too: nothing keeps the port or the pid file.
        kill(server.pid, SIGUSR2)
        #expect(waitUntil(seconds: 5) { !sleepers().isEmpty })
        #expect(!server.log().contains("one is already under way"))
        #expect(server.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: server.pidFile.path))
        #expect(sleepers().isEmpty)
        let (fd, _) = try bindLoopback(port: port)
        close(fd)
    }
}
