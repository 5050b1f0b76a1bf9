import CSystemShims
import CTicketKeys
import Glibc

/// A worker process: one epoll loop over its connections, its channel to the manager, a 250 ms ticker
/// and its signals. The loop is all this type does; the connections are the `ConnectionDriver`'s, the
/// protocols are `HTTP1Codec` and `HTTP2Codec`, answers come from the `RequestHandler`, lines go to the
/// `AccessLog`.
///
/// Fd slots (`WorkerSlot`): the manager channel, its connection channel (the listeners and the manager
/// send it batches), the config memfd, the access log when there is one, then one release channel per
/// listener process. The worker owns every connection handed to it.
public final class Worker {
    let id: Int
    let config: ServerConfig
    let poller: Poller
    let ticker: Ticker
    let signals: SignalReader
    let channel: Channel
    /// Batches of connections, from the listeners and the manager's wait queue; open until every sender
    /// has closed its end (`connectionsOpen`), which a draining worker waits for before it exits.
    let connections: Channel
    var connectionsOpen = true
    /// The manager channel is read once before the first batch: the ticket keys sent there at the start
    /// come before any connection.
    var readControlFirst = true
    /// Per listener process, the channel its close notices go to, and how many it has reported there.
    let releaseChannels: [Channel]
    var releasedTotals: [UInt32]
    let pid = UInt32(truncatingIfNeeded: getpid())
    let driver: ConnectionDriver
    let accessLog: AccessLog
    /// The sites, whose roots and password files are looked at again from the tick.
    let handler: RequestHandler
    /// This worker's figures for /metrics (`Stats` slots), sent to the manager with each heartbeat.
    let stats: UnsafeMutablePointer<UInt64>
    /// The fields a response's head is built with, shared by the handler and the files (this worker's).
    let fields: FieldBuffer
    var drainDeadline: Int64 = 0
    var lastHeartbeat: Int64 = 0
    /// The connections closed when the heap was last given back (`malloc_trim`).
    var closedAtTrim: UInt64 = 0
    /// The wall-clock second the Date header and the log's time fields were built for.
    var dateSecond: Int64 = -1

    /// What this worker allocated for the others; they are released with it.
    deinit {
        stats.deallocate()
        fields.base.deallocate()
    }

    public init(id: Int, config: ServerConfig, hasAccessLog: Bool) throws {
        self.id = id
        self.config = config
        poller = try Poller()
        ticker = try Ticker(intervalMilliseconds: 250)
        signals = try SignalReader([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGPIPE])
        channel = Channel(fd: WorkerSlot.manager.fd)
        connections = Channel(fd: WorkerSlot.connections.fd)
        let firstRelease = WorkerSlot.firstRelease(hasAccessLog: hasAccessLog)
        releaseChannels = (0..<config.listenerCount).map { Channel(fd: firstRelease + Int32($0)) }
        releasedTotals = Array(repeating: 0, count: config.listenerCount)
        stats = .allocate(capacity: Stats.count)
        stats.initialize(repeating: 0, count: Stats.count)
        var tlsSites: TLSSites? = nil
        if !config.tls.listen.isEmpty {
            do {
                tlsSites = try TLSSites(config: config)
            } catch {
                throw SystemError(call: "TLS: \(error.description)", errno: EINVAL)
            }
        }
        fields = FieldBuffer.allocate()
        handler = try RequestHandler(config: config, fields: fields)
        accessLog = AccessLog(fd: hasAccessLog ? WorkerSlot.accessLog.fd : -1, format: config.accessLogFormat, stats: stats)
        let output = OutputWriter(headCapacity: HTTP1Codec.headCapacity, stats: stats, accessLog: accessLog)
        let http1 = HTTP1Codec(config: config, handler: handler, accessLog: accessLog, output: output, stats: stats)
        let http2 = HTTP2Codec(config: config, handler: handler, accessLog: accessLog, output: output, stats: stats, date: http1.date)
        driver = ConnectionDriver(
            config: config, poller: poller, http1: http1, http2: http2, output: output, stats: stats, tlsSites: tlsSites)
        Socket.setNonBlocking(WorkerSlot.manager.fd)
        Socket.setNonBlocking(WorkerSlot.connections.fd)
        for release in releaseChannels { Socket.setNonBlocking(release.fd) }
        try poller.add(channel.fd, events: Poller.readable)
        try poller.add(connections.fd, events: Poller.readable)
        try poller.add(ticker.fd, events: Poller.readable)
        try poller.add(signals.fd, events: Poller.readable)
        if let helper = handler.compressed.helper { try poller.add(helper.eventFD, events: Poller.readable) }
        refreshDate()
    }

    /// Runs until the worker has drained; returns the process exit status.
    public func run() -> Int32 {
        log.debug("worker started", metadata: ["id": "\(id)"])
        sendHeartbeat()
        while true {
            // The clock as of this wake-up (a coarse vDSO read): deadlines and the file cache's
            // `valid` window are measured from it, not from the last 250 ms tick, which could make a
            // changed file be served from the cache for up to `valid` + 250 ms.
            poller.wait(timeoutMilliseconds: 1000, woke: { driver.now = monotonicMilliseconds() }) { fd, events in
                if fd == connections.fd {
                    takeConnections()
                } else if fd == channel.fd {
                    handleChannel()
                } else if fd == ticker.fd {
                    ticker.drain()
                    tick()
                } else if fd == handler.compressed.helper?.eventFD {
                    handler.compressed.takeFinished()
                } else if fd == signals.fd {
                    for signal in signals.pending() where signal == SIGTERM {
                        log.info("SIGTERM: draining")
                        startDrain(deadline: config.timeouts.shutdownMilliseconds)
                    }
                } else if let connection = driver.connection(for: fd) {
                    driver.onEvent(connection, events: events)
                }
            }
            endOfIteration()
            // Drained: nothing open, and no sender left that could still hand it a connection.
            if driver.draining && ((driver.live == 0 && !connectionsOpen) || driver.now >= drainDeadline) { break }
        }
        driver.closeAll()
        endOfIteration()
        log.debug("worker exiting", metadata: ["id": "\(id)", "requests": "\(driver.http1.requestsTotal + driver.http2.requestsTotal)"])
        return 0
    }

    // MARK: Channels

    func takeConnections() {
        if readControlFirst {
            readControlFirst = false
            handleChannel()
        }
        let open = connections.receiveAll(from: "connection channel") { message, fds in
            guard case .connections(let entries) = message else { return Channel.reject(message, fds: fds, from: "connection channel") }
            for (entry, fd) in zip(entries, fds) { driver.adopt(fd: fd, info: entry) }
        }
        if !open {
            poller.remove(connections.fd)
            connectionsOpen = false
        }
    }

    func handleChannel() {
        let open = channel.receiveAll(from: "manager") { message, fds in
            switch message {
            case .shutdown(let deadline):
                startDrain(deadline: Int(deadline))
            case .ticketKeys(let keys):
                keys.withUnsafeBufferPointer { cs_set_ticket_keys($0.baseAddress, Int32(keys.count / Message.ticketKeySize)) }
            case .reopenLogs(let access, let error):
                accessLog.flush()
                let errorLog = adoptReopenedLogs(fds, access: access, error: error, accessLog: &accessLog.fd)
                if errorLog >= 0 { closeDescriptor(errorLog) }
            default:
                Channel.reject(message, fds: fds, from: "manager")
            }
        }
        if !open {
            poller.remove(channel.fd)
            if !driver.draining {
                log.warning("manager is gone: draining")
                startDrain(deadline: config.timeouts.shutdownMilliseconds)
            }
        }
    }

    func startDrain(deadline: Int) {
        guard !driver.draining else { return }
        drainDeadline = driver.now + Int64(deadline)
        driver.startDrain()
    }

    // MARK: Timers, heartbeats, batching

    /// The Date header and the access log's time, rebuilt when the second changes.
    func refreshDate() {
        var clock = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &clock)
        let second = Int64(clock.tv_sec)
        if second == dateSecond { return }
        dateSecond = second
        driver.http1.setDate(second)
        accessLog.setTime(second)
    }

    /// Every 250 ms (the ticker); `now` was read at this wake-up.
    func tick() {
        refreshDate()
        sendReleases()
        if driver.now - lastHeartbeat >= Int64(config.supervisor.heartbeatIntervalMilliseconds) { sendHeartbeat() }
        driver.expireDeadlines()
        handler.refresh(now: driver.now)
        ResidentPages.trimIfDue(driver.now)
        // Idle again after connections closed: glibc keeps the memory they freed in its arenas (16 MB
        // after a thousand TLS connections); give it back. Memory in use (caches) is not touched.
        if driver.live == 0 && driver.closedTotal != closedAtTrim {
            closedAtTrim = driver.closedTotal
            _ = cs_malloc_trim()
        }
    }

    func sendHeartbeat() {
        lastHeartbeat = driver.now
        let beat = Heartbeat(
            liveConnections: UInt32(driver.live), acceptedTotal: driver.acceptedTotal, requestsTotal: driver.http1.requestsTotal + driver.http2.requestsTotal,
            closedTotal: driver.closedTotal)
        _ = try? channel.send(.heartbeat(beat))
        // The gauges are counted now: what each connection is doing.
        let phases = driver.phaseCounts()
        stats[Stats.reading] = phases.reading
        stats[Stats.writing] = phases.writing
        stats[Stats.waiting] = phases.waiting
        stats[Stats.handled] = UInt64(driver.acceptedTotal)
        _ = try? channel.send(.stats(Stats(values: Array(UnsafeBufferPointer(start: stats, count: Stats.count)))))
    }

    /// Release notices go out in batches of 32, and at every tick (250ms) for the rest: the listener
    /// needs them only to admit new connections near max_connections, and each one costs a syscall here
    /// and a wake-up there.
    func endOfIteration() {
        if driver.releasedPending >= 32 || driver.draining && driver.releasedPending > 0 { sendReleases() }
        accessLog.flush()
    }

    func sendReleases() {
        guard driver.releasedPending > 0 else { return }
        for listener in releaseChannels.indices where driver.releasedPendingBy[listener] > 0 { sendReleases(to: listener) }
    }

    /// To the listener that admitted them: connections counted per client address with their addresses
    /// (64 to a message), the rest as a count; each notice with this worker's running total there.
    func sendReleases(to listener: Int) {
        let channel = releaseChannels[listener]
        while !driver.releasedPeers[listener].isEmpty {
            let batch = Array(driver.releasedPeers[listener].prefix(Message.maxBatch))
            let total = releasedTotals[listener] &+ UInt32(batch.count)
            guard (try? channel.send(.releasedPeers(batch, worker: pid, total: total))) == true else { return }
            releasedTotals[listener] = total
            driver.releasedPeers[listener].removeFirst(batch.count)
            driver.releasedPendingBy[listener] -= UInt32(batch.count)
            driver.releasedPending -= UInt32(batch.count)
        }
        let count = driver.releasedPendingBy[listener]
        guard count > 0 else { return }
        let total = releasedTotals[listener] &+ count
        if (try? channel.send(.released(count: count, worker: pid, total: total))) == true {
            releasedTotals[listener] = total
            driver.releasedPendingBy[listener] = 0
            driver.releasedPending -= count
        }
    }
}
