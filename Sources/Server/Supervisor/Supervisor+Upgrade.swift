import CSystemShims
import Glibc

/// An upgrade (SIGUSR2, `webserver upgrade`): the new supervisor started from the binary on disk, the
/// pipe it says "ready" on, and whether it has taken over (then this one drains and leaves the pid file,
/// the sockets' files and the admin socket to it).
struct Upgrade {
    var child: ChildProcess?
    /// The read end of the new server's "ready" pipe; -1 when none is pending.
    var readyFD: Int32 = -1
    /// When the new server must have said "ready" (`timeouts.upgrade` after it started).
    var deadline: Int64 = .max
    /// It was stopped for missing its deadline, or because this server stops: its exit is expected.
    var abandoned = false
    var handedOver = false

    /// A new server is starting and has not said "ready" yet.
    var isPending: Bool { child != nil && readyFD >= 0 && !handedOver }

    /// What an upgrading supervisor handed over (`WEBSERVER_UPGRADE=pid=4,listen=5:6,admin=7`), taken
    /// out of the environment so children do not see it.
    static func inherited() -> (pidFile: Int32?, sockets: [Int32], admin: Int32?) {
        guard let value = getenv("WEBSERVER_UPGRADE").map({ String(cString: $0) }) else { return (nil, [], nil) }
        unsetenv("WEBSERVER_UPGRADE")
        var pidFile: Int32?
        var sockets: [Int32] = []
        var admin: Int32?
        for part in value.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { continue }
            switch pair[0] {
            case "pid": pidFile = Int32(pair[1])
            case "listen": sockets = pair[1].split(separator: ":").compactMap { Int32($0) }
            case "admin": admin = Int32(pair[1])
            default: break
            }
        }
        return (pidFile, sockets, admin)
    }

    /// The binary on disk, as it was when this process started (a new build installed at the same path
    /// is what an upgrade runs).
    static let installedExecutable: String = {
        if let path = getenv("WEBSERVER_EXECUTABLE") { return String(cString: path) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return CommandLine.arguments[0] }
        let path = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.hasSuffix(" (deleted)") ? String(path.dropLast(10)) : path
    }()
}

extension Supervisor {
    /// SIGUSR2: start the binary on disk as a new supervisor, handing it the pid file (and so its
    /// lock), every listening socket and the admin socket. It starts its own listener, manager and
    /// workers on the same sockets; when it says "ready", this one stops accepting and drains. If it
    /// fails to start, this one never stopped serving.
    func startUpgrade() {
        guard !lifecycle.isShuttingDown, upgrade.child == nil else {
            log.warning("upgrade: \(lifecycle.isShuttingDown ? "shutting down" : "one is already under way"); ignored")
            return
        }
        var ends: [Int32] = [-1, -1]
        guard cs_pipe2(&ends, cs_O_CLOEXEC) == 0 else {
            log.error("upgrade failed: \(SystemError(call: "pipe2", errno: errno))")
            return
        }
        let listening = sockets.everyFD
        var fds = [ends[1], pidFile.fd] + listening
        var description = "pid=4,listen=" + listening.indices.map { String(5 + $0) }.joined(separator: ":")
        if let admin {
            description += ",admin=\(5 + listening.count)"
            fds.append(admin.fd)
        }
        var environment = ["WEBSERVER_READY_FD=3", "WEBSERVER_UPGRADE=\(description)"]
        if let socket = Systemd.notifySocket { environment.append("NOTIFY_SOCKET=\(socket)") }
        let arguments = Array(CommandLine.arguments.dropFirst()).filter { $0 != "--daemon" }
        let executable = Upgrade.installedExecutable
        do {
            upgrade.child = try Spawner.spawn(
                role: nil, displayName: "webserver", arguments: arguments, fds: fds, extraEnvironment: environment,
                executable: executable)
        } catch {
            closeDescriptor(ends[0])
            closeDescriptor(ends[1])
            log.error("upgrade failed: cannot start \(executable): \(error)")
            return
        }
        closeDescriptor(ends[1])
        upgrade.readyFD = ends[0]
        upgrade.deadline = now + Int64(config.timeouts.upgradeMilliseconds)
        upgrade.abandoned = false
        try? poller.add(upgrade.readyFD, events: Poller.readable)
        log.notice("upgrade: started \(executable) as pid \(upgrade.child!.pid); serving until it is ready")
    }

    /// The new supervisor's word: "ready" (it serves: this one hands over and drains), or why it could
    /// not start, or nothing (it exited).
    func finishUpgrade() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(upgrade.readyFD, &buffer, buffer.count)
        if count < 0 && (errno == EAGAIN || errno == EINTR) { return }
        poller.remove(upgrade.readyFD)
        closeDescriptor(upgrade.readyFD)
        upgrade.readyFD = -1
        let message = count > 0 ? String(decoding: buffer.prefix(count), as: UTF8.self) : ""
        guard message == "ready", let child = upgrade.child else {
            log.error("upgrade failed: \(message.isEmpty ? "the new server exited before it was ready" : message); still serving")
            return
        }
        upgrade.handedOver = true
        log.notice("upgrade: pid \(child.pid) is serving; this one (pid \(getpid())) stops accepting and drains")
        Systemd.notify("MAINPID=\(child.pid)")
        // The admin socket is the new server's now: a draining /readyz here would say 503 for it.
        admin?.close(poller: poller)
        admin = nil
        beginShutdown(reason: "upgrade")
    }

    /// Whether `pid` was the upgrade's new server (reaped: it exited); logs why when it had not taken over.
    func upgradeExited(_ pid: Int32, _ exit: ExitStatus) -> Bool {
        guard pid == upgrade.child?.pid else { return false }
        upgrade.child = nil
        if upgrade.readyFD >= 0 {
            poller.remove(upgrade.readyFD)
            closeDescriptor(upgrade.readyFD)
            upgrade.readyFD = -1
        }
        if !upgrade.handedOver && !upgrade.abandoned {
            log.error("upgrade failed: the new server exited (\(exit)) before it was ready; still serving")
        }
        return true
    }

    /// A new server that has not said "ready" by its deadline is stopped: it holds the listening
    /// sockets and the pid file too, and left alone it would keep them after this server stops (a port
    /// that takes connections nobody answers).
    func checkUpgradeDeadline() {
        guard upgrade.isPending, now >= upgrade.deadline, let child = upgrade.child else { return }
        log.error("upgrade failed: the new server (pid \(child.pid)) was not ready within \(config.timeouts.upgradeMilliseconds)ms (timeouts.upgrade); stopped it; still serving")
        abandonUpgrade()
    }

    /// Kills a pending upgrade's new server and everything it started (SIGKILL: it has not served
    /// anything, and it must let go of the sockets now); `reap` collects them.
    func abandonUpgrade() {
        guard upgrade.isPending, let child = upgrade.child else { return }
        upgrade.abandoned = true
        for pid in [child.pid] + ProcessTree.descendants(of: child.pid) { kill(pid, SIGKILL) }
        poller.remove(upgrade.readyFD)
        closeDescriptor(upgrade.readyFD)
        upgrade.readyFD = -1
    }

    /// The new supervisor and everything below it.
    func upgradeTree() -> Set<Int32> {
        guard let child = upgrade.child else { return [] }
        return Set([child.pid] + ProcessTree.descendants(of: child.pid))
    }
}
