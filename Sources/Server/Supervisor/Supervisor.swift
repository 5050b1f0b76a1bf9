import CSystemShims
import Foundation
import Glibc

/// The supervisor: the process a user starts. It never serves a request itself. This file is its loop
/// and its lifecycle; each job is in its own file: the sockets (`ListeningSockets`), the pid file
/// (`PidFile`), the logs (`ServerLogs`), the children (`Supervisor+Children`), shutdown
/// (`Supervisor+Shutdown`), reload (`Supervisor+Reload`), upgrade (`Supervisor+Upgrade`), certificates
/// and ticket keys (`Supervisor+Certificates`, `TicketKeys`), the admin listener (`Supervisor+Admin`),
/// systemd (`Systemd`).
///
/// Owns: the listening sockets, both ends of the listener-manager channel and of each listener's
/// release channel (so a restarted listener or manager finds queued fds and notices waiting), the
/// listeners' admission counts, the config memfd, the access-log fd, the pid file and its lock, and its
/// own end of each child's channel.
public final class Supervisor {
    /// Where the server is in its life. Serving until a signal (or an upgrade, or a child's
    /// configuration error) starts the shutdown, which then moves through its phases in order.
    enum Lifecycle {
        case serving
        case shuttingDown(Shutdown)

        var isShuttingDown: Bool {
            if case .shuttingDown = self { return true }
            return false
        }
    }

    var config: ServerConfig
    let configPath: String?
    let overrides: ConfigOverrides
    let poller: Poller
    let ticker: Ticker
    let signals: SignalReader
    var lifecycle = Lifecycle.serving
    let sockets = ListeningSockets()
    let pidFile: PidFile
    let logs = ServerLogs()
    var configFD: Int32 = -1
    /// The executables the children run (`Executables`), open from the start.
    var executables: Executables?
    var ticketKeys = TicketKeys()
    /// Watches the certificate files so a replaced certificate is reloaded without a signal.
    var certificateWatch: CertificateWatch?
    var listenerManager: (listenerEnd: Int32, managerEnd: Int32) = (-1, -1)
    /// Per listener, its release channel: workers write the worker end, the listener reads its own.
    var releaseChannels: [(listenerEnd: Int32, workerEnd: Int32)] = []
    /// The admission counts the listeners share (made here, so they outlive any one listener).
    var admissionsFD: Int32 = -1
    var admissions: Admissions?
    /// One slot per listener process (`listeners`; made once the sockets say how many there can be).
    var listeners: [ChildSlot] = [ChildSlot(role: .listener)]
    /// `listeners` as the file says it (`auto` is 0); the running count is in `config.listeners`.
    var listenersAsConfigured = 0
    let manager = ChildSlot(role: .manager)
    /// The ACME process, when a site gets its certificate by ACME (else `.stopped`).
    let acme = ChildSlot(role: .acme, state: .stopped)
    /// The listeners, the manager and the ACME process (made once: the tick walks it every 100 ms).
    private(set) var children: [ChildSlot] = []
    var restartPolicy: RestartPolicy
    /// An upgrade under way (SIGUSR2), and whether the new server has taken over.
    var upgrade = Upgrade()
    var lastWatchdog: Int64 = 0
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
    /// Reloads applied and refused since the server started.
    var reloads: (applied: UInt64, refused: UInt64) = (0, 0)
    var workerCrashTimes: [Int64] = []
    var certificateExpiries: [(path: String, expiry: Int64)] = []
    let startedAt = time(nil)
    /// Written once everything is started (the `--daemon` parent waits for it); -1 when not daemonized.
    var readyFD: Int32

    /// Exit status of a child that found its configuration unusable: never restarted.
    public static let configErrorExit = ChildMain.configErrorExit
    /// Exit status after the listener or the manager crash-looped (EX_SOFTWARE): the server stopped
    /// itself, and a service manager should start it again.
    public static let crashLoopExit: Int32 = 70

    public init(config: ServerConfig, configPath: String?, overrides: ConfigOverrides, readyFD: Int32 = -1) throws {
        self.config = config
        self.configPath = configPath
        self.overrides = overrides
        self.readyFD = readyFD
        pidFile = PidFile(path: PidFile.path(for: config))
        poller = try Poller()
        ticker = try Ticker(intervalMilliseconds: 100)
        signals = try SignalReader([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD, SIGPIPE])
        restartPolicy = RestartPolicy(config.supervisor)
        now = monotonicMilliseconds()
        children = listeners + [manager, acme]
    }

    /// The pid file a configuration names (for the commands that signal a running server).
    public static func pidFilePath(for config: ServerConfig) -> String { PidFile.path(for: config) }

    /// Everything that must happen before children start; any failure here is reported and fatal.
    func start() throws {
        Systemd.takeEnvironment()
        let inherited = Upgrade.inherited()
        _ = cs_prctl_set_child_subreaper()
        _ = cs_prctl_set_name("ws-supervisor")
        try pidFile.lock(inherited: inherited.pidFile)
        Privileges.raiseDescriptorLimit(for: config)
        let executables = try Executables.open()
        self.executables = executables
        if executables.core != nil {
            log.info("the listener and the manager run from \(executables.coreDescription)")
        } else {
            log.warning("the listener and the manager run from this executable, each with about 1.5 MiB more memory: \(executables.coreDescription)")
        }
        try sockets.open(config, passed: Systemd.activatedSockets() + inherited.sockets, fromUpgrade: !inherited.sockets.isEmpty)
        listenersAsConfigured = config.listeners
        config = sockets.listening(sockets.usable(config))
        if sockets.listenerCount > 1 {
            listeners = (0..<sockets.listenerCount).map { ChildSlot(role: .listener, index: $0, numbered: true) }
            children = listeners + [manager, acme]
        }
        try openAdmin(inherited: inherited.admin)
        try logs.open(config)
        if let admin, let bound = try Socket.localAddress(of: admin.fd) { log.notice("admin on http://\(bound) (/livez, /readyz, /metrics)") }
        try sockets.announce(config)
        if let ca = config.tls.madeDevCertificate {
            log.notice("made a development certificate for localhost, 127.0.0.1 and ::1, signed by the local CA \(ca); trust it with: curl --cacert \(ca) (or: webserver cert dev --install)")
        }
        noteCertificateExpiries()
        warnAboutExpiringCertificates()
        try AcmeFiles.prepare(config)
        // /proc/self/pagemap is root's once the process changes its user (it is no longer dumpable).
        ResidentPages.openPageMap()
        try Privileges.drop(to: config, logs: logs)
        config = sockets.bound(config)
        if !config.tls.listen.isEmpty && config.tls.sessionResumption { rotateTicketKeys() }
        if !config.tls.listen.isEmpty, let watch = CertificateWatch(paths: config.watchedCertificateFiles) {
            certificateWatch = watch
            try poller.add(watch.fd, events: Poller.readable)
        }
        configFD = try ConfigTransport.makeDescriptor(config)
        listenerManager = try Socket.seqpacketPair()
        for _ in listeners { releaseChannels.append(try Socket.seqpacketPair()) }
        admissionsFD = try Admissions.makeDescriptor()
        admissions = try Admissions(fd: admissionsFD)
        try poller.add(ticker.fd, events: Poller.readable)
        try poller.add(signals.fd, events: Poller.readable)
    }

    /// The admin listener: the upgrading server's socket when it is the one configured, else a new one.
    func openAdmin(inherited: Int32?) throws {
        guard let text = config.adminListen, let address = SocketAddress(parsing: text) else {
            if let inherited { closeDescriptor(inherited) }
            return
        }
        if let fd = inherited, let bound = try? Socket.localAddress(of: fd), ListeningSockets.sameSocket(bound, address) {
            admin = AdminServer(adopting: fd)
        } else {
            if let inherited { closeDescriptor(inherited) }
            admin = try AdminServer(address: address)
        }
        try poller.add(admin!.fd, events: Poller.readable)
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
        for listener in listeners { startChild(listener) }
        startChild(manager)
        startOrStopAcme()
        reportReady("ready")
        Systemd.notify("READY=1\nMAINPID=\(getpid())\nSTATUS=serving \(config.root)")
        log.notice("webserver started", metadata: ["pid": "\(getpid())", "root": "\(config.root)", "config": "\(configPath ?? "none (command line only)")"])
        // Loading the configuration, binding and starting touched much code that the loop never runs again.
        ResidentPages.trimAfterStartup()
        while true {
            // The clock as of this wake-up: heartbeats read now count as now, even after this process
            // itself was stopped for a while (SIGSTOP, a long page fault, a VM pause).
            poller.wait(timeoutMilliseconds: 500, woke: { now = monotonicMilliseconds() }) { fd, _ in
                if fd == signals.fd {
                    for signal in signals.pending() { handleSignal(signal) }
                } else if fd == certificateWatch?.fd {
                    certificateWatch?.drain(now: monotonicMilliseconds())
                } else if fd == ticker.fd {
                    ticker.drain()
                } else if let slot = slot(forChannel: fd) {
                    handleMessages(from: slot)
                } else if fd == upgrade.readyFD {
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
            if advanceShutdown() { break }
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

    /// Every 100 ms: the admin clients' deadlines, systemd, certificates and ticket keys, the children.
    func tick() {
        admin?.expire(now: now, poller: poller)
        ResidentPages.trimIfDue(now)
        notifySystemd()
        workerCrashTimes.removeAll { now - $0 > Int64(config.supervisor.restartPeriodMilliseconds) }
        if let watch = certificateWatch, watch.changed(now: now) {
            log.notice("certificate files changed on disk: reloading")
            reload(reason: "certificate files changed")
        }
        if ticketKeys.due(now: now, interval: config.tls.ticketKeyRotationMilliseconds) { rotateTicketKeys() }
        checkUpgradeDeadline()
        superviseChildren()
    }

    func handleSignal(_ signal: Int32) {
        switch signal {
        case SIGTERM, SIGINT, SIGQUIT:
            if lifecycle.isShuttingDown && signal == SIGINT {
                log.warning("second interrupt: stopping now")
                stopNow()
            }
            beginShutdown(reason: signal == SIGINT ? "SIGINT" : signal == SIGQUIT ? "SIGQUIT" : "SIGTERM")
        case SIGHUP:
            reload()
        case SIGUSR1:
            reopenLogs()
        case SIGUSR2:
            startUpgrade()
        case SIGCHLD:
            reap()
        default:
            break
        }
    }

    func cleanup() {
        admin?.close(poller: poller)
        admin = nil
        // Unix socket files and the pid file go with the server; after an upgrade they are the new one's.
        if !upgrade.handedOver { ListeningSockets.removeFiles(config) }
        sockets.close()
        pidFile.release(handedOver: upgrade.handedOver)
    }

    /// Every process below `pid` (the status command and the tests use it too).
    public static func descendants(of pid: Int32) -> [Int32] { ProcessTree.descendants(of: pid) }
}
