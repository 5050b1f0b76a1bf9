import CSystemShims
import Glibc

/// systemd's side of a `Type=notify` service, written by hand (no libsystemd): state messages to
/// `$NOTIFY_SOCKET`, the watchdog interval from `$WATCHDOG_USEC`, and sockets passed by socket
/// activation (`$LISTEN_FDS`, `$LISTEN_PID`). Without those variables every function does nothing.
public enum Systemd {
    /// The notification socket's address, read once (and removed from the environment, so children
    /// do not inherit it: only the main process speaks for the service).
    nonisolated(unsafe) static var notifySocket: String? = {
        guard let value = getenv("NOTIFY_SOCKET").map({ String(cString: $0) }), !value.isEmpty else { return nil }
        unsetenv("NOTIFY_SOCKET")
        return value
    }()

    /// Half of WatchdogSec in milliseconds (systemd's advice: ping at half the interval), or nil.
    nonisolated(unsafe) static var watchdogInterval: Int64? = {
        defer {
            unsetenv("WATCHDOG_USEC")
            unsetenv("WATCHDOG_PID")
        }
        guard let text = getenv("WATCHDOG_USEC").map({ String(cString: $0) }), let usec = Int64(text), usec > 0 else { return nil }
        if let pid = getenv("WATCHDOG_PID").map({ String(cString: $0) }), Int32(pid) != getpid() { return nil }
        return max(1, usec / 2000)
    }()

    /// Reads and removes the notification variables before any child is spawned (they inherit the
    /// environment as it is then).
    static func takeEnvironment() {
        _ = notifySocket
        _ = watchdogInterval
    }

    /// Sends `state` (lines such as `READY=1`, `STATUS=...`) as one datagram; true when it went.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        guard let path = notifySocket else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | cs_SOCK_CLOEXEC, 0)
        guard fd >= 0 else { return false }
        defer { closeDescriptor(fd) }
        let sent = state.withCString { text in
            Socket.withUnixAddress(path) { sendto(fd, text, strlen(text), cs_MSG_NOSIGNAL, $0, $1) } ?? -1
        }
        return sent >= 0
    }

    /// `MONOTONIC_USEC=...`, which systemd wants beside `RELOADING=1`.
    static var monotonicMicroseconds: String {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return "MONOTONIC_USEC=\(Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000)"
    }

    /// The listening sockets systemd passed (fds 3 ...), when they are for this process; taken once.
    static func activatedSockets() -> [Int32] {
        defer {
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pidText = getenv("LISTEN_PID").map({ String(cString: $0) }), Int32(pidText) == getpid(),
              let countText = getenv("LISTEN_FDS").map({ String(cString: $0) }), let count = Int32(countText), count > 0, count < 1024
        else { return [] }
        return (0..<count).map { 3 + $0 }
    }
}

extension Supervisor {
    /// The watchdog ping (while no child is given up on, so a crash loop gets the service restarted),
    /// and a STATUS line every 5 seconds.
    func notifySystemd() {
        guard Systemd.notifySocket != nil else { return }
        if let interval = Systemd.watchdogInterval, now - lastWatchdog >= interval, liveness().0 {
            lastWatchdog = now
            Systemd.notify("WATCHDOG=1")
        }
        if now - lastStatus >= 5000 && !lifecycle.isShuttingDown {
            lastStatus = now
            let stats = managerStats
            Systemd.notify("STATUS=\(admissions?.total ?? 0) connections, \(stats[Stats.workersTotal]) workers, \(manager.lastBeat.requestsTotal) requests")
        }
    }
}
