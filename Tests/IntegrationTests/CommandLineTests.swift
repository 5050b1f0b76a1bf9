import Foundation
import Glibc
import Testing

/// The command line: check, serve's errors, help, and stop/reload/reopen-logs against a running server.
@Suite(.serialized) struct CommandLineTests {
    func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("site"), withIntermediateDirectories: true)
        return directory
    }

    @Test func checkReportsEveryErrorWithFileAndLine() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("bad.yaml")
        try "root: site\nlisten: [\"127.0.0.1:99999\"]\nworkers: {min: 4, max: 2}\ncolour: blue\n".write(to: file, atomically: true, encoding: .utf8)
        let result = try run(webserverBinary, ["check", "--config", file.path])
        #expect(result.status == 1)
        #expect(result.error.contains("\(file.path):2:10: listen: '127.0.0.1:99999' is not ADDRESS:PORT"))
        #expect(result.error.contains("\(file.path):3:1: workers: min (4) is above max (2)"))
        #expect(result.error.contains("\(file.path):4:1: colour: unknown key"))
        #expect(result.error.contains("has 3 errors"))

        let good = directory.appendingPathComponent("good.yaml")
        try "root: site\n".write(to: good, atomically: true, encoding: .utf8)
        let ok = try run(webserverBinary, ["check", "--config", good.path])
        #expect(ok.status == 0)
        #expect(ok.output.contains("is valid"))
    }

    @Test func serveRefusesABadConfigWithTheConfigErrorCode() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("bad.yaml")
        try "root: nowhere\n".write(to: file, atomically: true, encoding: .utf8)
        let result = try run(webserverBinary, ["serve", "--config", file.path])
        #expect(result.status == 78)
        #expect(result.error.contains("\(file.path):1:7: root: '\(directory.path)/nowhere' does not exist"))
        let flags = try run(webserverBinary, ["serve", "--root", directory.appendingPathComponent("site").path, "--listen", "nope", "--workers", "0"])
        #expect(flags.status == 78)
        #expect(flags.error.contains("command line: --listen: 'nope' is not ADDRESS:PORT"))
        #expect(flags.error.contains("command line: --workers: '0' is not N or MIN:MAX"))
    }

    /// Run from a checkout, `serve --root DIR --listen ADDR` serves exactly that and reads no
    /// config/webserver.yaml (whose sockets may be taken); with a file, a socket that cannot be bound
    /// is named with the file and line that asked for it; `--listen none` serves HTTPS only.
    @Test func quickFlagsServeWhatTheySayAndBindErrorsNameTheirLine() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (taken, takenPort) = try bindLoopback(listening: true)
        defer { close(taken) }
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("config"), withIntermediateDirectories: true)
        let file = directory.appendingPathComponent("config/webserver.yaml")
        try "root: ../site\nlisten: [\"127.0.0.1:\(takenPort)\"]\n".write(to: file, atomically: true, encoding: .utf8)
        try "quick\n".write(to: directory.appendingPathComponent("site/index.html"), atomically: true, encoding: .utf8)
        // With the file: the taken port is named with its line.
        let refused = try run(webserverBinary, ["serve", "--admin-listen", "off"], directory: directory)
        #expect(refused.status != 0)
        #expect(refused.error.contains("bind 127.0.0.1:\(takenPort) (listen, config/webserver.yaml:2): Address already in use"), "\(refused.error)")
        /// `serve` with `arguments` in the directory, its log in `log`; stopped when the test ends.
        func serve(_ arguments: [String], log: String) throws -> Process {
            let server = Process()
            server.executableURL = URL(fileURLWithPath: webserverBinary)
            server.arguments = ["serve"] + arguments
            server.currentDirectoryURL = directory
            server.standardError = try FileHandle(forWritingTo: directory.appendingPathComponent(log))
            try server.run()
            return server
        }
        // Quick flags: the file is not read.
        let port = try freePort()
        #expect(FileManager.default.createFile(atPath: directory.appendingPathComponent("quick.log").path, contents: nil))
        let quick = try serve(["--root", "site", "--listen", "127.0.0.1:\(port)", "--pid-file", "quick.pid"], log: "quick.log")
        defer {
            quick.terminate()
            quick.waitUntilExit()
        }
        #expect(waitUntil(seconds: 10) { (try? curl(["http://127.0.0.1:\(port)/"])) == "quick\n" })
        // HTTPS only: no plain socket at all (not the default 127.0.0.1:8080).
        let certificates = try makeTestCertificate(in: directory)
        let tlsPort = try freePort()
        #expect(FileManager.default.createFile(atPath: directory.appendingPathComponent("secure.log").path, contents: nil))
        let secure = try serve(
            ["--root", "site", "--listen", "none", "--tls-listen", "127.0.0.1:\(tlsPort)", "--cert", certificates.cert, "--key", certificates.key,
             "--pid-file", "secure.pid"], log: "secure.log")
        defer {
            secure.terminate()
            secure.waitUntilExit()
        }
        #expect(waitUntil(seconds: 10) { (try? curl(["-k", "https://127.0.0.1:\(tlsPort)/"])) == "quick\n" })
        let secureLog = try String(contentsOf: directory.appendingPathComponent("secure.log"), encoding: .utf8)
        #expect(secureLog.contains("listening on https://127.0.0.1:\(tlsPort)"))
        #expect(!secureLog.contains("listening on http://"), "\(secureLog)")
    }

    /// The shipped configuration listens on 127.0.0.1 and [::1] (browsers try ::1 first for
    /// localhost). On a machine without IPv6 (here a network namespace whose loopback has IPv6 turned
    /// off) the [::1] entry is left out with a warning naming its line, the rest serves, and a reload of
    /// the same file is not mistaken for a change of `listen`.
    @Test(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
                   && (try? run("unshare", ["-n", "true"]).status) == 0, "needs root, ip and network namespaces"))
    func bothLoopbacksAndAMachineWithoutIPv6() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "both\n".write(to: directory.appendingPathComponent("site/index.html"), atomically: true, encoding: .utf8)
        let config = directory.appendingPathComponent("webserver.yaml")
        try """
            root: site
            listen:
              - 127.0.0.1:8080
              - "[::1]:8080"
            error_log: \(directory.path)/error.log
            pid_file: \(directory.path)/webserver.pid

            """.write(to: config, atomically: true, encoding: .utf8)
        _ = chmod(directory.path, 0o755)
        // Here, with IPv6: both answer.
        let port = try freePort()
        let here = directory.appendingPathComponent("here.yaml")
        try String(contentsOf: config, encoding: .utf8).replacingOccurrences(of: ":8080", with: ":\(port)")
            .replacingOccurrences(of: "webserver.pid", with: "here.pid").write(to: here, atomically: true, encoding: .utf8)
        let started = try run(webserverBinary, ["serve", "--config", here.path, "--daemon"])
        #expect(started.status == 0, "\(started.error)")
        defer { _ = try? run(webserverBinary, ["stop", "--config", here.path]) }
        #expect(try curl(["http://127.0.0.1:\(port)/"]) == "both\n")
        #expect(try curl(["-g", "http://[::1]:\(port)/"]) == "both\n")
        _ = try run(webserverBinary, ["stop", "--config", here.path])
        // Without IPv6: the server, curl and a reload all inside one network namespace.
        let binary = webserverBinary
        let script = """
            ip link set lo up && echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6 || exit 99
            \(binary) serve --config \(config.path) --daemon >/dev/null || exit 98
            curl -s http://127.0.0.1:8080/
            \(binary) reload --config \(config.path) >/dev/null
            sleep 1
            curl -s http://127.0.0.1:8080/
            \(binary) stop --config \(config.path) >/dev/null
            """
        let result = try run("unshare", ["-n", "sh", "-c", script])
        #expect(result.status == 0 && result.output == "both\nboth\n", "\(result.status) \(result.output) \(result.error)")
        let log = try String(contentsOf: directory.appendingPathComponent("error.log"), encoding: .utf8)
        #expect(log.contains("[::1]:8080 (listen, \(config.path):4) left out: this machine has no IPv6"), "\(log)")
        #expect(log.contains("listening on http://127.0.0.1:8080"))
        #expect(!log.contains("reload failed"), "\(log)")
    }

    @Test func versionNamesTheLinkedLibraries() throws {
        let result = try run(webserverBinary, ["--version"])
        #expect(result.status == 0)
        // The versions come from the linked libssl and libz, so this fails if either is not linked.
        #expect(result.output.contains("OpenSSL 3."))
        #expect(result.output.contains("zlib 1."))
    }

    @Test func helpListsEveryFlagAndCommand() throws {
        let top = try run(webserverBinary, ["--help"])
        for word in ["serve", "check", "stop", "reload", "reopen-logs", "SIGHUP", "SIGUSR1"] {
            #expect(top.output.contains(word), "\(word)")
        }
        let serve = try run(webserverBinary, ["serve", "--help"])
        for flag in ["--config", "--root", "--listen", "--workers", "--pid-file", "--access-log", "--error-log", "--log-level", "--daemon"] {
            #expect(serve.output.contains(flag), "\(flag)")
        }
    }

    @Test func reloadAppliesAGoodConfigAndKeepsServingOnABadOne() throws {
        let server = try TestServer { site in
            try TestServer.defaultSite(site)
            try "<p>home two</p>\n".write(to: site.appendingPathComponent("home.html"), atomically: true, encoding: .utf8)
        }.start()
        defer { server.stop() }
        let original = try String(contentsOf: server.configFile, encoding: .utf8)
        // A bad edit: the reload fails, names the line, and the old configuration keeps serving.
        try (original + "index: [oops]\n").write(to: server.configFile, atomically: true, encoding: .utf8)
        var command: Int32 = -1
        #expect(try server.reload(expecting: false) { command = try run(webserverBinary, ["reload", "--pid-file", server.pidFile.path]).status })
        #expect(command == 0)
        #expect(server.log().contains("reload failed: still serving with the previous configuration"))
        #expect(server.log().contains("webserver.yaml:6:8: index: expected a single value"))
        #expect(try curl([server.url + "/"]).contains("hello"))
        // A good edit: new workers start with it, old ones drain.
        try (original + "index: home.html\n").write(to: server.configFile, atomically: true, encoding: .utf8)
        let old = try #require(server.pids(of: "worker").first)
        #expect(try server.reload { command = try run(webserverBinary, ["reload", "--pid-file", server.pidFile.path]).status })
        #expect(command == 0)
        #expect(waitUntil(seconds: 10) { ((try? curl([server.url + "/"])) ?? "").contains("home two") })
        #expect(waitUntil(seconds: 10) { !server.pids(of: "worker").contains(old) })
    }

    @Test func reopenLogsAfterRotation() throws {
        let server = try TestServer().start()
        defer { server.stop() }
        #expect(try status(server.url + "/") == 200)
        #expect(waitUntil(seconds: 5) { ((try? String(contentsOf: server.accessLog, encoding: .utf8)) ?? "").contains("GET / ") })
        let rotated = server.directory.appendingPathComponent("access.log.1")
        try FileManager.default.moveItem(at: server.accessLog, to: rotated)
        let result = try run(webserverBinary, ["reopen-logs", "--pid-file", server.pidFile.path])
        #expect(result.status == 0)
        // Once the worker has its new file, a request's line lands there; from then on, none goes to the
        // rotated one.
        func newLog() -> String { (try? String(contentsOf: server.accessLog, encoding: .utf8)) ?? "" }
        var attempt = 0
        #expect(waitUntil(seconds: 5) {
            attempt += 1
            _ = try? status(server.url + "/index.html?before=\(attempt)")
            return newLog().contains("GET /index.html?before=\(attempt) ")
        })
        #expect(try status(server.url + "/index.html?after") == 200)
        #expect(waitUntil(seconds: 5) { newLog().contains("GET /index.html?after ") })
        #expect(try !String(contentsOf: rotated, encoding: .utf8).contains("GET /index.html?after "))
    }

    /// A server started at the moment another took the pid file's lock finds the file still empty: it
    /// waits for the pid to appear and names it, and never names an empty pid (issue 14). The test holds
    /// the lock itself, as the other server would.
    @Test func aPidFileLockedButNotYetWrittenIsWaitedFor() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let pidFile = directory.appendingPathComponent("webserver.pid").path
        let fd = open(pidFile, O_RDWR | O_CREAT, 0o644)
        #expect(fd >= 0 && flock(fd, LOCK_EX) == 0)
        defer { close(fd) }
        let arguments = ["serve", "--root", directory.path, "--listen", "127.0.0.1:0", "--pid-file", pidFile]
        // Written a moment after the second server looked.
        let writer = Thread {
            usleep(150_000)
            _ = "4242\n".withCString { pwrite(fd, $0, 5, 0) }
        }
        writer.start()
        let second = try run(webserverBinary, arguments, directory: directory)
        #expect(second.status == 1)
        #expect(second.error.contains("another webserver is running (pid 4242, pid file \(pidFile))"), "\(second.error)")
        // Never written: it says what it knows.
        _ = ftruncate(fd, 0)
        let third = try run(webserverBinary, arguments, directory: directory)
        #expect(third.status == 1)
        #expect(third.error.contains("another webserver holds the pid file \(pidFile) and has written no pid in it"), "\(third.error)")
        #expect(!third.error.contains("(pid ,"))
    }

    @Test func stopAndThePidFileLock() throws {
        let server = try TestServer().start()
        // A second server with the same pid file refuses to start and says who is running.
        let second = try run(webserverBinary, ["serve", "--config", server.configFile.path, "--listen", "127.0.0.1:0"], directory: server.directory)
        #expect(second.status == 1)
        #expect(second.error.contains("another webserver is running (pid \(server.pid)"))
        let stop = try run(webserverBinary, ["stop", "--pid-file", server.pidFile.path])
        #expect(stop.status == 0)
        #expect(stop.output.contains("webserver: stopped"))
        #expect(!server.process.isRunning || waitUntil(seconds: 5) { !server.process.isRunning })
        let again = try run(webserverBinary, ["stop", "--pid-file", server.pidFile.path])
        #expect(again.status == 1)
        #expect(again.error.contains("no server is running"))
    }

    @Test func daemonDetachesAndStops() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "daemon\n".write(to: directory.appendingPathComponent("site/index.html"), atomically: true, encoding: .utf8)
        let pidFile = directory.appendingPathComponent("d.pid").path
        let errorLog = directory.appendingPathComponent("error.log").path
        // Through a shell with output to a file: the detached server must not hold the caller's pipes.
        let output = directory.appendingPathComponent("out.txt").path
        let command = "exec '\(webserverBinary)' serve --daemon --root site --listen 127.0.0.1:0 --pid-file d.pid"
            + " --error-log error.log --access-log off >'\(output)' 2>&1 </dev/null"
        #expect(shell(command, directory: directory) == 0)
        let started = try String(contentsOfFile: output, encoding: .utf8)
        #expect(started.contains("started in the background"))
        #expect(!started.contains("--daemon with the error log"))  // it has one: --error-log
        let log = try String(contentsOfFile: errorLog, encoding: .utf8)
        let port = try #require(TestServer.announcedPort(in: log))
        let pid = try #require(Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(getsid(pid) == pid)  // its own session, no terminal
        #expect(try curl(["http://127.0.0.1:\(port)/"]) == "daemon\n")
        let stop = try run(webserverBinary, ["stop", "--pid-file", pidFile])
        #expect(stop.status == 0)
        // A daemon that cannot start says why, and the command fails.
        let blocker = try openListener()
        defer { close(blocker.fd) }
        let busyCommand = "exec '\(webserverBinary)' serve --daemon --root site --listen 127.0.0.1:\(blocker.port)"
            + " --pid-file busy.pid >'\(output)' 2>&1 </dev/null"
        #expect(shell(busyCommand, directory: directory) == 1)
        let said = try String(contentsOfFile: output, encoding: .utf8)
        #expect(said.contains("failed to start: error: bind 127.0.0.1:\(blocker.port) (--listen)"))
        // Without --error-log the detached server's log would go nowhere: the command says so.
        #expect(said.contains("--daemon with the error log on standard error"))
    }
}

