import CSystemShims
import Foundation
import Glibc

/// The supervisor: binds the listening sockets, writes the pid file, starts the listener and the
/// manager, watches both by heartbeat and pidfd, restarts them with backoff, and orchestrates reload,
/// log reopening and graceful shutdown. The process a user starts; it never serves a request itself.
///
/// Owns: the listening sockets, both ends of the listener-manager channel and of the release channel
/// (so a restarted listener or manager finds queued fds and notices waiting), the config memfd, the
/// access-log fd, the pid file and its lock, and its own end of each child's channel.
public final class Supervisor {
    var config: ServerConfig
    let configPath: String?
    let overrides: ConfigOverrides
    let poller: Poller
    let ticker: Ticker
    let signals: SignalReader
    var sockets: [Int32] = []
    var configFD: Int32 = -1
    /// TLS session ticket keys: current then previous, 80 bytes each; empty without TLS.
    var ticketKeys: [UInt8] = []
    var ticketKeysRotatedAt: Int64 = 0
    /// Watches the certificate files so a replaced certificate is reloaded without a signal.
    var certificateWatch: CertificateWatch?
    var accessLogFD: Int32 = -1
    var pidFileFD: Int32 = -1
    let pidFilePath: String
    var listenerManager: (listenerEnd: Int32, managerEnd: Int32) = (-1, -1)
    var release: (listenerEnd: Int32, workerEnd: Int32) = (-1, -1)
    let listener = ChildSlot(role: "listener")
    let manager = ChildSlot(role: "manager")
    var restartPolicy: RestartPolicy
    var shuttingDown = false
    var shutdownPhase = 0
    var hardDeadline: Int64 = .max
    /// When the drain starts after SIGTERM (`timeouts.shutdown_delay` later).
    var drainBeginsAt: Int64 = 0
    var lastWatchdog: Int64 = 0
    /// An upgrade under way (SIGUSR2): the new supervisor, the pipe it says "ready" on, and whether it
    /// has taken over (then this one drains and leaves the pid file to it).
    var upgradeChild: ChildProcess?
    var upgradeReadyFD: Int32 = -1
    var handedOver = false
    /// The binary on disk, as it was when this process started (a new build installed at the same path
    /// is what an upgrade runs).
    let installedExecutable: String = {
        if let path = getenv("WEBSERVER_EXECUTABLE") { return String(cString: path) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return CommandLine.arguments[0] }
        let path = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.hasSuffix(" (deleted)") ? String(path.dropLast(10)) : path
    }()
    var lastStatus: Int64 = 0
    var exitCode: Int32 = 0
    var now: Int64
    /// The admin listener, and what it reports: the manager's last sum of the pool's figures (plus what
    /// earlier managers had counted), the last reload, worker crashes in the restart window, and each
    /// certificate's expiry.
    var admin: AdminServer?
    var managerStats = Stats()
    var statsOfPastManagers = Stats()
    var lastReload: (succeeded: Bool, at: Int64)?
    var workerCrashTimes: [Int64] = []
    var certificateExpiries: [(path: String, expiry: Int64)] = []
    let startedAt = time(nil)
    /// Written once everything is started (the `--daemon` parent waits for it); -1 when not daemonized.
    var readyFD: Int32

    /// Exit status of a child that found its configuration unusable: never restarted.
    public static let configErrorExit: Int32 = 78

    public init(config: ServerConfig, configPath: String?, overrides: ConfigOverrides, readyFD: Int32 = -1) throws {
        self.config = config
        self.configPath = configPath
        self.overrides = overrides
        self.readyFD = readyFD
        pidFilePath = Supervisor.pidFilePath(for: config)
        poller = try Poller()
        ticker = try Ticker(intervalMilliseconds: 100)
        signals = try SignalReader([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD, SIGPIPE])
        restartPolicy = Supervisor.restartPolicy(for: config)
        now = monotonicMilliseconds()
    }

    static func restartPolicy(for config: ServerConfig) -> RestartPolicy {
        RestartPolicy(
            baseDelay: config.supervisor.restartDelayMilliseconds, maxDelay: config.supervisor.restartDelayMaxMilliseconds,
            intensity: config.supervisor.restartIntensity, period: config.supervisor.restartPeriodMilliseconds)
    }

    /// The pid file: the configured one, else /run/webserver.pid for root, else one per user in
    /// $XDG_RUNTIME_DIR or /tmp.
    public static func pidFilePath(for config: ServerConfig) -> String {
        if let path = config.pidFile { return path }
        if getuid() == 0 { return "/run/webserver.pid" }
        let directory = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"] ?? "/tmp"
        return "\(directory)/webserver-\(getuid()).pid"
    }

    /// `config` with what only binding tells: the port of the first TLS socket (for HTTP-to-HTTPS
    /// redirects, when the configuration said port 0).
    func boundConfig(_ config: ServerConfig) -> ServerConfig {
        var config = config
        let first = config.listen.count
        if first < sockets.count, let bound = try? Socket.localAddress(of: sockets[first]) {
            config.tls.redirectPort = Int(bound.port)
        }
        return config
    }

    /// Everything that must happen before children start; any failure here is reported and fatal.
    func start() throws {
        Systemd.takeEnvironment()
        let inherited = Supervisor.inheritedFromUpgrade()
        _ = cs_prctl_set_child_subreaper()
        _ = cs_prctl_set_name("ws-supervisor")
        try lockPidFile(inherited: inherited.pidFile)
        raiseDescriptorLimit()
        // Unix-domain sockets passed on are matched by path, the others by address.
        var passedUnix: [(Int32, String)] = []
        var passed = (Systemd.activatedSockets() + inherited.sockets).compactMap { fd -> (Int32, SocketAddress)? in
            if let path = Socket.unixPath(of: fd) {
                passedUnix.append((fd, path))
                return nil
            }
            guard let address = try? Socket.localAddress(of: fd) else {
                log.warning("socket activation: fd \(fd) is not a TCP socket; closed")
                closeDescriptor(fd)
                return nil
            }
            return (fd, address)
        }
        for socket in config.allListen {
            let text = socket.address
            if let path = socket.unixPath {
                if let index = passedUnix.firstIndex(where: { $0.1 == path }) {
                    let fd = passedUnix.remove(at: index).0
                    Socket.adopt(fd)
                    sockets.append(fd)
                    continue
                }
                sockets.append(try Socket.listenUnix(
                    path: path, backlog: Int32(config.backlog), mode: socket.mode, owner: socket.owner, group: socket.group))
                continue
            }
            guard let address = SocketAddress(parsing: text) else { continue }
            let fd: Int32
            if let index = passed.firstIndex(where: { Supervisor.sameSocket($0.1, address) }) {
                // Passed by systemd (socket activation): already bound and listening.
                fd = passed.remove(at: index).0
                Socket.adopt(fd)
                log.info("\(inherited.sockets.isEmpty ? "socket activation" : "upgrade"): using the socket passed for \(text)")
            } else {
                fd = try Socket.listen(on: address, backlog: Int32(config.backlog))
            }
            Socket.setNoDelay(fd)  // accepted sockets inherit TCP_NODELAY and TCP_NOTSENT_LOWAT
            try Socket.setNotSentLowat(fd, bytes: config.notSentLowat)
            if config.deferAcceptMilliseconds > 0 {
                try Socket.setDeferAccept(fd, seconds: Int32((config.deferAcceptMilliseconds + 999) / 1000))
            }
            sockets.append(fd)
        }
        if let fd = inherited.admin, let text = config.adminListen, let address = SocketAddress(parsing: text),
           let bound = try? Socket.localAddress(of: fd), Supervisor.sameSocket(bound, address) {
            let server = AdminServer(adopting: fd)
            admin = server
            try poller.add(server.fd, events: Poller.readable)
        } else if let text = config.adminListen, let address = SocketAddress(parsing: text) {
            if let fd = inherited.admin { closeDescriptor(fd) }
            let server = try AdminServer(address: address)
            admin = server
            try poller.add(server.fd, events: Poller.readable)
        }
        for (fd, address) in passed {
            log.warning("socket activation: the socket for \(address) is not in listen or tls.listen; closed")
            closeDescriptor(fd)
        }
        for (fd, path) in passedUnix {
            log.warning("socket activation: the socket unix:\(path) is not in listen or tls.listen; closed")
            closeDescriptor(fd)
        }
        try openLogs()
        if let admin, let bound = try Socket.localAddress(of: admin.fd) { log.notice("admin on http://\(bound) (/livez, /readyz, /metrics)") }
        for (index, fd) in sockets.enumerated() {
            let scheme = index < config.listen.count ? "http" : "https"
            if let path = config.allListen[index].unixPath {
                log.notice("listening on \(scheme)+unix://\(path)")
            } else if let bound = try Socket.localAddress(of: fd) {
                log.notice("listening on \(scheme)://\(bound)")
            }
        }
        if let ca = config.tls.madeDevCertificate {
            log.notice("made a development certificate for localhost, 127.0.0.1 and ::1, signed by the local CA \(ca); trust it with: curl --cacert \(ca) (or: webserver cert dev --install)")
        }
        noteCertificateExpiries()
        for pair in config.tls.listen.isEmpty ? [] : config.tls.allSites.flatMap(\.certificates) {
            guard let expiry = TLSContext.expiry(ofCertificate: pair.certificate) else { continue }
            let date = ISO8601DateFormatter.string(from: Date(timeIntervalSince1970: TimeInterval(expiry)), timeZone: TimeZone(identifier: "UTC")!,
                                                   formatOptions: [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime])
            let days = (expiry - Int64(time(nil))) / 86400
            if expiry < Int64(time(nil)) {
                log.warning("the certificate \(pair.certificate) expired on \(date) UTC; clients will refuse it")
            } else if days < 14 {
                log.warning("the certificate \(pair.certificate) expires on \(date) UTC (in \(days == 1 ? "1 day" : "\(days) days"))")
            }
        }
        try dropPrivileges()
        config = boundConfig(config)
        if !config.tls.listen.isEmpty && config.tls.sessionResumption { rotateTicketKeys() }
        if !config.tls.listen.isEmpty, let watch = CertificateWatch(paths: Supervisor.certificatePaths(config)) {
            certificateWatch = watch
            try poller.add(watch.fd, events: Poller.readable)
        }
        configFD = try ConfigTransport.makeDescriptor(config)
        listenerManager = try Socket.seqpacketPair()
        release = try Socket.seqpacketPair()
        try poller.add(ticker.fd, events: Poller.readable)
        try poller.add(signals.fd, events: Poller.readable)
    }

    /// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it), and warns when
    /// `max_connections` cannot fit: a worker at its fd limit would lose connections passed to it.
    func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        // Each connection costs its worker one fd (a second one only while a file is being sent).
        let needed = UInt64(config.maxConnections) + 256
        if UInt64(limit.rlim_cur) < needed {
            log.warning("the open-file limit (\(limit.rlim_cur)) is low for max_connections \(config.maxConnections): raise LimitNOFILE/ulimit -n to \(needed) or lower max_connections")
        }
    }

    /// What an upgrading supervisor handed over (`WEBSERVER_UPGRADE=pid=4,listen=5:6,admin=7`), taken
    /// out of the environment so children do not see it.
    static func inheritedFromUpgrade() -> (pidFile: Int32?, sockets: [Int32], admin: Int32?) {
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

    func lockPidFile(inherited: Int32? = nil) throws {
        if let fd = inherited {
            // The upgrading supervisor's pid file: the same open file, so the lock is already ours too.
            var mine = stat()
            var theirs = stat()
            if fstat(fd, &theirs) == 0, stat(pidFilePath, &mine) == 0, mine.st_ino == theirs.st_ino, mine.st_dev == theirs.st_dev {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                let text = "\(getpid())\n"
                _ = ftruncate(fd, 0)
                _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
                pidFileFD = fd
                return
            }
            closeDescriptor(fd)  // another pid file now: lock that one as usual
        }
        let fd = try syscall("open(\(pidFilePath))") { open(pidFilePath, O_RDWR | O_CREAT | cs_O_CLOEXEC, 0o644) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(fd, &buffer, 31, 0)
            closeDescriptor(fd)
            let pid = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw StartupError("another webserver is running (pid \(pid), pid file \(pidFilePath))")
        }
        let text = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        pidFileFD = fd
    }

    func openLogs() throws {
        if let path = config.accessLog {
            accessLogFD = try syscall("open(\(path))") { open(path, O_WRONLY | O_APPEND | O_CREAT | cs_O_CLOEXEC, 0o644) }
        }
        if let path = config.errorLog {
            let fd = try syscall("open(\(path))") { open(path, O_WRONLY | O_APPEND | O_CREAT | cs_O_CLOEXEC, 0o644) }
            _ = dup2(fd, 2)
            closeDescriptor(fd)
        }
    }

    func dropPrivileges() throws {
        guard getuid() == 0 || geteuid() == 0 else { return }
        guard let name = config.user else {
            log.warning("running as root: set 'user' in the config to drop privileges after binding")
            return
        }
        guard let entry = getpwnam(name) else { throw StartupError("user '\(name)' does not exist") }
        let uid = entry.pointee.pw_uid
        let gid = entry.pointee.pw_gid
        if accessLogFD >= 0 { _ = fchown(accessLogFD, uid, gid) }
        try syscall("setgroups") { setgroups(1, [gid]) }
        try syscall("setgid") { setgid(gid) }
        try syscall("setuid") { setuid(uid) }
        log.info("running as user \(name)")
    }

    /// Starts the children and runs until shutdown; returns the exit status.
    public func run() -> Int32 {
        do {
            try start()
        } catch {
            log.critical("cannot start: \(error)")
            reportReady("error: \(error)")
            cleanup()
            return 1
        }
        startChild(listener)
        startChild(manager)
        reportReady("ready")
        Systemd.notify("READY=1\nMAINPID=\(getpid())\nSTATUS=serving \(config.root)")
        log.notice("webserver started", metadata: ["pid": "\(getpid())", "root": "\(config.root)"])
        while true {
            poller.wait(timeoutMilliseconds: 500) { fd, _ in
                if fd == signals.fd {
                    for signal in signals.pending() { handleSignal(signal) }
                } else if fd == certificateWatch?.fd {
                    certificateWatch?.drain(now: monotonicMilliseconds())
                } else if fd == ticker.fd {
                    ticker.drain()
                } else if let slot = slot(forChannel: fd) {
                    handleMessages(from: slot)
                } else if fd == upgradeReadyFD {
                    finishUpgrade()
                } else if let admin, fd == admin.fd {
                    admin.acceptAll(poller: poller, now: monotonicMilliseconds())
                } else if let admin, admin.owns(fd) {
                    admin.readable(fd, poller: poller) { method, path in adminReply(path) }
                } else {
                    reap()  // a pidfd became readable
                }
            }
            now = monotonicMilliseconds()
            reap()
            tick()
            if shuttingDown && advanceShutdown() { break }
        }
        cleanup()
        log.notice("webserver stopped")
        return exitCode
    }

    func reportReady(_ message: String) {
        guard readyFD >= 0 else { return }
        _ = message.withCString { write(readyFD, $0, strlen($0)) }
        closeDescriptor(readyFD)
        readyFD = -1
    }

    func slot(forChannel fd: Int32) -> ChildSlot? {
        if listener.channel?.fd == fd { return listener }
        if manager.channel?.fd == fd { return manager }
        return nil
    }

    // MARK: Children

    func startChild(_ slot: ChildSlot) {
        do {
            let (mine, theirs) = try Socket.seqpacketPair()
            defer { closeDescriptor(theirs) }
            let process: ChildProcess
            if slot === listener {
                let initialLive = Int(manager.lastBeat.liveConnections + manager.lastBeat.queueDepth)
                process = try Spawner.spawn(
                    role: .listener,
                    arguments: ["--parent", "\(getpid())", "--sockets", "\(sockets.count)", "--initial-live", "\(initialLive)"],
                    fds: ListenerSlots.arrange(
                        supervisor: theirs, connections: listenerManager.listenerEnd, release: release.listenerEnd, config: configFD,
                        sockets: sockets))
            } else {
                var arguments = ["--parent", "\(getpid())"]
                if accessLogFD >= 0 { arguments.append("--access-log") }
                process = try Spawner.spawn(
                    role: .manager, arguments: arguments,
                    fds: ManagerSlots.arrange(
                        supervisor: theirs, connections: listenerManager.managerEnd, release: release.workerEnd, config: configFD,
                        accessLog: accessLogFD >= 0 ? accessLogFD : nil))
            }
            let channel = Channel(fd: mine)
            if slot === manager && !ticketKeys.isEmpty { _ = try? channel.send(.ticketKeys(ticketKeys)) }
            try poller.add(mine, events: Poller.readable)
            if process.pidfd >= 0 { try poller.add(process.pidfd, events: Poller.readable) }
            slot.process = process
            slot.channel = channel
            slot.state = .running
            slot.startedAt = now
            slot.lastHeartbeatAt = now
            log.info("\(slot.role) started", metadata: ["pid": "\(process.pid)"])
        } catch {
            log.error("cannot start the \(slot.role): \(error)")
            scheduleRestart(slot)
        }
    }

    func scheduleRestart(_ slot: ChildSlot) {
        guard !shuttingDown else {
            slot.state = .stopped
            return
        }
        if let delay = restartPolicy.nextDelay(now: now, history: &slot.restarts, random: Double.random(in: 0...1)) {
            slot.state = .waiting(until: now + Int64(delay))
            slot.restartTotal += 1
            log.warning("restarting the \(slot.role) in \(delay)ms")
        } else {
            slot.state = .failed
            log.critical(
                "the \(slot.role) crashed \(slot.restarts.count) times within \(config.supervisor.restartPeriodMilliseconds)ms: crash loop, not restarting it; fix the cause and restart webserver")
        }
    }

    func handleMessages(from slot: ChildSlot) {
        guard let channel = slot.channel else { return }
        let open = channel.receiveAll(from: slot.role, malformed: { _ in stop(slot, reason: "malformed message") }) { message, fds in
            switch message {
            case .heartbeat(let beat):
                slot.lastBeat = beat
                slot.lastHeartbeatAt = now
            case .stats(let stats) where slot === manager:
                if stats[Stats.workerRestarts] > managerStats[Stats.workerRestarts] {
                    workerCrashTimes.append(now)
                }
                managerStats = stats
            default:
                Channel.reject(message, fds: fds, from: slot.role)
            }
        }
        if !open {
            // The child is exiting; reap() restarts it. Its channel is done either way.
            poller.remove(channel.fd)
            channel.close()
        }
    }

    /// SIGTERM now, SIGKILL after the grace period if it has not exited.
    func stop(_ slot: ChildSlot, reason: String) {
        guard let process = slot.process, slot.state == .running else { return }
        log.warning("stopping the \(slot.role) (pid \(process.pid)): \(reason)")
        process.signal(SIGTERM)
        slot.state = .stopping(killAt: now + Int64(config.supervisor.killGraceMilliseconds))
    }

    /// Collects exited children: ours are restarted (or not), orphaned workers are just reaped.
    func reap() {
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { break }
            let exit = ExitStatus(status)
            guard let slot = [listener, manager].first(where: { $0.process?.pid == pid }) else {
                if pid == upgradeChild?.pid {
                    upgradeChild = nil
                    if !handedOver { log.error("upgrade failed: the new server exited (\(exit)) before it was ready; still serving") }
                } else {
                    log.debug("reaped orphan \(pid): \(exit)")
                }
                continue
            }
            if slot === manager {
                // A new manager counts from zero: keep what this one had counted.
                statsOfPastManagers.add(managerStats, gauges: false)
                managerStats = Stats()
            }
            if let channel = slot.channel {
                poller.remove(channel.fd)
                channel.close()
            }
            if let process = slot.process, process.pidfd >= 0 { poller.remove(process.pidfd) }
            slot.process?.closePidfd()
            slot.process = nil
            slot.channel = nil
            if shuttingDown {
                slot.state = .stopped
                log.info("\(slot.role) exited: \(exit)")
            } else if exit.exited && exit.code == Supervisor.configErrorExit {
                slot.state = .failed
                log.critical("the \(slot.role) rejected its configuration (exit 78); not restarting; shutting down")
                exitCode = 1
                beginShutdown(reason: "configuration error in the \(slot.role)")
            } else {
                log.error("the \(slot.role) (pid \(pid)) exited unexpectedly: \(exit)")
                scheduleRestart(slot)
            }
        }
    }

    /// Makes a new current ticket key and keeps the one before it for decryption only.
    func rotateTicketKeys() {
        var key = [UInt8](repeating: 0, count: Message.ticketKeySize)
        key.withUnsafeMutableBytes { _ = getrandom($0.baseAddress, $0.count, 0) }
        let first = ticketKeys.isEmpty
        ticketKeys = key + ticketKeys.prefix(Message.ticketKeySize)
        ticketKeysRotatedAt = now
        if !first { log.info("TLS session ticket keys rotated; the previous key still resumes sessions until the next rotation") }
        if let channel = manager.channel, case .running = manager.state { _ = try? channel.send(.ticketKeys(ticketKeys)) }
    }

    /// Every certificate and key file the TLS sockets use.
    static func certificatePaths(_ config: ServerConfig) -> [String] {
        config.tls.files
    }

    func tick() {
        admin?.expire(now: now, poller: poller)
        notifySystemd()
        workerCrashTimes.removeAll { now - $0 > Int64(config.supervisor.restartPeriodMilliseconds) }
        if let watch = certificateWatch, watch.changed(now: now) {
            log.notice("certificate files changed on disk: reloading")
            reload(reason: "certificate files changed")
        }
        if !ticketKeys.isEmpty && now - ticketKeysRotatedAt >= Int64(config.tls.ticketKeyRotationMilliseconds) {
            rotateTicketKeys()
        }
        for slot in [listener, manager] {
            switch slot.state {
            case .waiting(let until) where now >= until && !shuttingDown:
                startChild(slot)
            case .running:
                if now - slot.lastHeartbeatAt > Int64(config.supervisor.heartbeatTimeoutMilliseconds) {
                    stop(slot, reason: "no heartbeat for \(now - slot.lastHeartbeatAt)ms")
                }
            case .stopping(let killAt) where now >= killAt:
                log.error("the \(slot.role) did not stop in time: SIGKILL")
                slot.process?.signal(SIGKILL)
                slot.state = .stopping(killAt: .max)
            default:
                break
            }
        }
    }

    // MARK: Signals

    func handleSignal(_ signal: Int32) {
        switch signal {
        case SIGTERM, SIGINT, SIGQUIT:
            if shuttingDown && signal == SIGINT {
                log.warning("second interrupt: stopping now")
                hardDeadline = now
            }
            beginShutdown(reason: signal == SIGINT ? "SIGINT" : signal == SIGQUIT ? "SIGQUIT" : "SIGTERM")
        case SIGHUP:
            reload()
        case SIGUSR1:
            reopenLogs()
        case SIGUSR2:
            upgrade()
        case SIGCHLD:
            reap()
        default:
            break
        }
    }

    // MARK: Upgrade

    /// SIGUSR2: start the binary on disk as a new supervisor, handing it the pid file (and so its
    /// lock), every listening socket and the admin socket. It starts its own listener, manager and
    /// workers on the same sockets; when it says "ready", this one stops accepting and drains. If it
    /// fails to start, this one never stopped serving.
    func upgrade() {
        guard !shuttingDown, upgradeChild == nil else {
            log.warning("upgrade: \(shuttingDown ? "shutting down" : "one is already under way"); ignored")
            return
        }
        var ends: [Int32] = [-1, -1]
        guard cs_pipe2(&ends, cs_O_CLOEXEC) == 0 else {
            log.error("upgrade failed: \(SystemError(call: "pipe2", errno: errno))")
            return
        }
        var fds = [ends[1], pidFileFD] + sockets
        var description = "pid=4,listen=" + sockets.indices.map { String(5 + $0) }.joined(separator: ":")
        if let admin {
            description += ",admin=\(5 + sockets.count)"
            fds.append(admin.fd)
        }
        var environment = ["WEBSERVER_READY_FD=3", "WEBSERVER_UPGRADE=\(description)"]
        if let socket = Systemd.notifySocket { environment.append("NOTIFY_SOCKET=\(socket)") }
        let arguments = Array(CommandLine.arguments.dropFirst()).filter { $0 != "--daemon" }
        do {
            upgradeChild = try Spawner.spawn(
                role: nil, displayName: "webserver", arguments: arguments, fds: fds, extraEnvironment: environment,
                executable: installedExecutable)
        } catch {
            closeDescriptor(ends[0])
            closeDescriptor(ends[1])
            log.error("upgrade failed: cannot start \(installedExecutable): \(error)")
            return
        }
        closeDescriptor(ends[1])
        upgradeReadyFD = ends[0]
        try? poller.add(upgradeReadyFD, events: Poller.readable)
        log.notice("upgrade: started \(installedExecutable) as pid \(upgradeChild!.pid); serving until it is ready")
    }

    /// The new supervisor's word: "ready" (it serves: this one hands over and drains), or why it could
    /// not start, or nothing (it exited).
    func finishUpgrade() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(upgradeReadyFD, &buffer, buffer.count)
        if count < 0 && (errno == EAGAIN || errno == EINTR) { return }
        poller.remove(upgradeReadyFD)
        closeDescriptor(upgradeReadyFD)
        upgradeReadyFD = -1
        let message = count > 0 ? String(decoding: buffer.prefix(count), as: UTF8.self) : ""
        guard message == "ready", let child = upgradeChild else {
            log.error("upgrade failed: \(message.isEmpty ? "the new server exited before it was ready" : message); still serving")
            return
        }
        handedOver = true
        log.notice("upgrade: pid \(child.pid) is serving; this one (pid \(getpid())) stops accepting and drains")
        Systemd.notify("MAINPID=\(child.pid)")
        // The admin socket is the new server's now: a draining /readyz here would say 503 for it.
        admin?.close(poller: poller)
        admin = nil
        beginShutdown(reason: "upgrade")
    }

    /// The new supervisor and everything below it.
    func upgradeTree() -> Set<Int32> {
        guard let child = upgradeChild else { return [] }
        return Set([child.pid] + Supervisor.descendants(of: child.pid))
    }

    func beginShutdown(reason: String) {
        guard !shuttingDown else { return }
        shuttingDown = true
        shutdownPhase = 0
        // SIGTERM (a service manager, Kubernetes) waits `shutdown_delay` with the listeners open, /readyz
        // already 503, so load balancers stop sending before anything is refused; Ctrl-C does not wait.
        let delay = reason == "SIGTERM" ? config.timeouts.shutdownDelayMilliseconds : 0
        drainBeginsAt = now + Int64(delay)
        hardDeadline = drainBeginsAt + Int64(config.timeouts.shutdownMilliseconds + 2 * config.supervisor.killGraceMilliseconds)
        if !handedOver { Systemd.notify("STOPPING=1\nSTATUS=draining") }
        if delay > 0 {
            log.notice("shutting down (\(reason)): not ready; still accepting for \(delay)ms (timeouts.shutdown_delay), then draining")
        } else {
            log.notice("shutting down (\(reason)): no new connections; in-flight requests have \(config.timeouts.shutdownMilliseconds)ms")
        }
        for slot in [listener, manager] where slot.process == nil { slot.state = .stopped }
    }

    /// Shutdown in order: the listener stops and hands over what it accepted, then the manager drains
    /// the workers; the supervisor leaves when no child is left. Returns true when done.
    func advanceShutdown() -> Bool {
        if shutdownPhase == 0 && now < drainBeginsAt && now < hardDeadline { return false }
        if shutdownPhase == 0 {
            if let channel = listener.channel, listener.process != nil {
                _ = try? channel.send(.shutdown(deadlineMilliseconds: UInt32(config.supervisor.killGraceMilliseconds)))
                listener.state = .stopping(killAt: now + 2 * Int64(config.supervisor.killGraceMilliseconds))
            }
            shutdownPhase = 1
        }
        if shutdownPhase == 1 && listener.process == nil {
            // Nothing accepts any more: close the sockets so clients get refused rather than stuck in a backlog.
            for fd in sockets { closeDescriptor(fd) }
            sockets = []
            if let channel = manager.channel, manager.process != nil {
                _ = try? channel.send(.shutdown(deadlineMilliseconds: UInt32(config.timeouts.shutdownMilliseconds)))
                manager.state = .stopping(killAt: now + Int64(config.timeouts.shutdownMilliseconds + config.supervisor.killGraceMilliseconds))
            }
            shutdownPhase = 2
        }
        if now >= hardDeadline {
            // Past the deadline: end every process below us, including workers orphaned to us.
            for slot in [listener, manager] { slot.process?.signal(SIGKILL) }
            let successor = upgradeTree()
            for pid in Supervisor.descendants(of: getpid()) where !successor.contains(pid) { kill(pid, SIGKILL) }
            if now >= hardDeadline + 2000 { return true }
        }
        if shutdownPhase == 2 && listener.process == nil && manager.process == nil {
            // Wait for orphaned workers (reparented to us as subreaper) too, but not for the supervisor
            // an upgrade started: it is our child only until we exit.
            let successor = upgradeTree()
            return Supervisor.descendants(of: getpid()).allSatisfy { successor.contains($0) }
        }
        return false
    }

    /// The watchdog ping (while no child is given up on, so a crash loop gets the service restarted),
    /// and a STATUS line every 5 seconds.
    func notifySystemd() {
        guard Systemd.notifySocket != nil else { return }
        if let interval = Systemd.watchdogInterval, now - lastWatchdog >= interval, liveness().0 {
            lastWatchdog = now
            Systemd.notify("WATCHDOG=1")
        }
        if now - lastStatus >= 5000 && !shuttingDown {
            lastStatus = now
            let stats = managerStats
            Systemd.notify("STATUS=\(listener.lastBeat.liveConnections) connections, \(stats[Stats.workersTotal]) workers, \(manager.lastBeat.requestsTotal) requests")
        }
    }

    /// Whether a socket passed by systemd or an upgrading supervisor is the one `listen` names (a
    /// `*:PORT` entry also takes an IPv6 any-address socket on that port, which is what
    /// `ListenStream=PORT` makes; a port-0 entry takes a socket on any port of its address).
    static func sameSocket(_ passed: SocketAddress, _ wanted: SocketAddress) -> Bool {
        if passed == wanted { return true }
        // Port 0 asks for any port: the socket bound for it earlier (an upgrade hands it over) is it.
        if wanted.port == 0 && passed.family == wanted.family && passed.bytes == wanted.bytes { return true }
        let wildcard = wanted.family == UInt8(AF_INET) && wanted.bytes.0 == 0
        return wildcard && passed.family == UInt8(AF_INET6) && passed.bytes == (0, 0) && passed.port == wanted.port
    }

    // MARK: Reload and logs

    func reload(reason: String = "SIGHUP") {
        guard !shuttingDown else { return }
        log.notice("\(reason): reloading \(configPath ?? "the command-line configuration")")
        Systemd.notify("RELOADING=1\n\(Systemd.monotonicMicroseconds)")
        defer { Systemd.notify("READY=1") }
        var newConfig: ServerConfig
        do {
            newConfig = try ConfigLoader.load(path: configPath, overrides: overrides, makeDevCertificate: true)
        } catch {
            for issue in error.issues { log.error("reload: \(issue)") }
            log.error("reload failed: still serving with the previous configuration")
            lastReload = (false, Int64(time(nil)))
            return
        }
        if newConfig.allListen.map(\.address) != config.allListen.map(\.address) || newConfig.user != config.user || newConfig.backlog != config.backlog
            || newConfig.deferAcceptMilliseconds != config.deferAcceptMilliseconds || newConfig.adminListen != config.adminListen {
            log.error("reload failed: 'listen', 'user', 'backlog', 'defer_accept' and 'admin' change only with a restart; still serving with the previous configuration")
            lastReload = (false, Int64(time(nil)))
            return
        }
        newConfig = boundConfig(newConfig)
        let fd: Int32
        do {
            fd = try ConfigTransport.makeDescriptor(newConfig)
        } catch {
            log.error("reload failed: \(error)")
            return
        }
        let accessChanged = newConfig.accessLog != config.accessLog
        if newConfig.notSentLowat != config.notSentLowat {
            // Connections accepted from now on inherit the new value; open ones keep theirs.
            for fd in sockets where Socket.unixPath(of: fd) == nil {
                do { try Socket.setNotSentLowat(fd, bytes: newConfig.notSentLowat) } catch {
                    log.warning("reload: \(error); new connections keep the previous notsent_lowat")
                }
            }
        }
        config = newConfig
        restartPolicy = Supervisor.restartPolicy(for: newConfig)
        closeDescriptor(configFD)
        configFD = fd
        if accessChanged { reopenLogs() }
        for slot in [listener, manager] {
            guard let channel = slot.channel else { continue }
            _ = try? channel.send(.reload, fd: fd)
        }
        certificateWatch?.watch(Supervisor.certificatePaths(newConfig))
        lastReload = (true, Int64(time(nil)))
        noteCertificateExpiries()
        log.notice("reloaded: new workers start with the new configuration, old ones drain")
    }

    func reopenLogs() {
        var fds: [Int32] = []
        var access = false
        var error = false
        if let path = config.accessLog {
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | cs_O_CLOEXEC, 0o644)
            if fd >= 0 {
                if accessLogFD >= 0 { closeDescriptor(accessLogFD) }
                accessLogFD = fd
                fds.append(fd)
                access = true
            } else {
                log.error("cannot reopen \(path): \(SystemError(call: "open", errno: errno))")
            }
        } else if accessLogFD >= 0 {
            closeDescriptor(accessLogFD)
            accessLogFD = -1
        }
        if let path = config.errorLog {
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | cs_O_CLOEXEC, 0o644)
            if fd >= 0 {
                _ = dup2(fd, 2)
                fds.append(fd)
                error = true
            }
        }
        if let channel = manager.channel, access || error {
            _ = try? fds.withUnsafeBufferPointer { try channel.send(.reopenLogs(accessLog: access, errorLog: error), fds: $0) }
        }
        if let channel = listener.channel, error, let errorFD = fds.last {
            _ = try? channel.send(.reopenLogs(accessLog: false, errorLog: true), fd: errorFD)
        }
        if error, let last = fds.last { closeDescriptor(last) }
        log.notice("logs reopened")
    }

    /// Every process below `pid`, from /proc/PID/task/TID/children.
    public static func descendants(of pid: Int32) -> [Int32] {
        var result: [Int32] = []
        var pending = [pid]
        while let current = pending.popLast() {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(current)/task")) ?? []
            for task in tasks {
                let text = (try? String(contentsOfFile: "/proc/\(current)/task/\(task)/children", encoding: .utf8)) ?? ""
                for child in text.split(separator: " ").compactMap({ Int32($0) }) {
                    result.append(child)
                    pending.append(child)
                }
            }
        }
        return result
    }

    func cleanup() {
        admin?.close(poller: poller)
        admin = nil
        // Unix socket files go with the server (after an upgrade they are the new one's).
        if !handedOver { for socket in config.allListen { if let path = socket.unixPath { unlink(path) } } }
        for fd in sockets { closeDescriptor(fd) }
        sockets = []
        if pidFileFD >= 0 {
            if !handedOver { unlink(pidFilePath) }  // after an upgrade the file (and its lock) is the new server's
            closeDescriptor(pidFileFD)
            pidFileFD = -1
        }
    }
}

/// A startup failure explained in words.
public struct StartupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
