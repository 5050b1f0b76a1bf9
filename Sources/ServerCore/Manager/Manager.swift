import CSystemShims
import Glibc

/// The manager process: a pool of workers it grows and shrinks, reaping and replacing dead or silent
/// workers, and a wait queue of accepted connections. The listeners hand connections to the workers
/// themselves (the manager gives each listener every worker's connection channel, and takes it back when
/// the worker retires); the wait queue takes what a listener could not place (no worker yet, every
/// worker's channel full), and hands it to the least-loaded worker.
///
/// Fd slots (`ManagerSlot`): its channel to the supervisor, the receive end of the listeners' channel,
/// the config memfd, the server's executable (workers are started from it), the access log when there
/// is one, then the workers' end of each listener's release channel (passed on to every worker). Owns
/// the connections in its wait queue until a worker's channel takes them.
public final class Manager {
    package var config: ServerConfig
    package let poller: Poller
    package let ticker: Ticker
    package let signals: SignalReader
    package let supervisor: Channel
    package let listener: Channel
    /// The workers' end of each listener's release channel: passed to every worker, and written here
    /// only to say that a worker is gone (`workerGone`).
    package let releases: [Channel]
    package var configFD = ManagerSlot.config.fd
    package var accessLogFD: Int32
    package var errorLogFD: Int32 = -1

    package var workers: [WorkerHandle] = []
    package var workersByFD: [Int32: WorkerHandle] = [:]
    /// The TLS session ticket keys from the supervisor, for every worker now and every one started later.
    package var ticketKeys: [UInt8] = []
    package var nextWorkerID = 1
    package var policy: ScalingPolicy
    /// Accepted connections waiting for a worker, oldest first; the fds are owned here.
    package var queue: [(fd: Int32, info: ConnectionInfo)] = []
    package var queueHead = 0
    /// Requests answered by workers that have exited, so the total never goes backwards.
    package var requestsOfExited: UInt64 = 0
    package var draining = false
    package var drainDeadline: Int64 = .max
    package var lastTick: Int64 = 0
    package var lastHeartbeat: Int64 = 0
    /// Counters of workers that have exited (their last report), so the pool's totals never go down;
    /// and how many workers died without being asked to.
    package var statsOfExited = Stats()
    package var now: Int64
    package var spawnFailures = 0
    /// Scratch for the fds of one outgoing message.
    package let sendFDs = UnsafeMutableBufferPointer<Int32>.allocate(capacity: Message.maxBatch)

    deinit { sendFDs.deallocate() }

    public init(config: ServerConfig, hasAccessLog: Bool) throws {
        self.config = config
        poller = try Poller()
        ticker = try Ticker(intervalMilliseconds: 100)
        signals = try SignalReader([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD, SIGPIPE])
        supervisor = Channel(fd: ManagerSlot.supervisor.fd)
        listener = Channel(fd: ManagerSlot.connections.fd)
        let firstRelease = ManagerSlot.firstRelease(hasAccessLog: hasAccessLog)
        releases = (0..<config.listenerCount).map { Channel(fd: firstRelease + Int32($0)) }
        accessLogFD = hasAccessLog ? ManagerSlot.accessLog.fd : -1
        policy = Manager.policy(for: config)
        now = monotonicMilliseconds()
        Socket.setNonBlocking(ManagerSlot.supervisor.fd)
        Socket.setNonBlocking(ManagerSlot.connections.fd)
        try poller.add(supervisor.fd, events: Poller.readable)
        try poller.add(listener.fd, events: Poller.readable)
        try poller.add(ticker.fd, events: Poller.readable)
        try poller.add(signals.fd, events: Poller.readable)
    }

    package static func policy(for config: ServerConfig) -> ScalingPolicy {
        ScalingPolicy(
            minimum: config.workers.min, maximum: config.workers.max,
            connectionsPerWorker: config.workers.connectionsPerWorker,
            idleTicks: max(1, config.workers.idleMilliseconds / config.supervisor.heartbeatIntervalMilliseconds))
    }

    public func run() -> Int32 {
        for _ in 0..<config.workers.min { spawnWorker() }
        sendHeartbeat()
        while true {
            // The clock as of this wake-up: a heartbeat read now counts as now, even after this process
            // itself was stopped for a while (a long page fault, a VM pause).
            poller.wait(timeoutMilliseconds: 1000, woke: { now = monotonicMilliseconds() }) { fd, events in
                if fd == listener.fd {
                    receiveConnections()
                } else if fd == supervisor.fd {
                    handleSupervisor()
                } else if fd == ticker.fd {
                    ticker.drain()
                    tick()
                } else if fd == signals.fd {
                    for signal in signals.pending() {
                        if signal == SIGTERM { beginDrain(deadline: config.timeouts.shutdownMilliseconds, reason: "SIGTERM") }
                        if signal == SIGCHLD { reap() }
                    }
                } else if let worker = workersByFD[fd] {
                    if fd == worker.child.pidfd { reap() } else { handleWorker(worker, events: events) }
                }
            }
            now = monotonicMilliseconds()
            if draining && workers.isEmpty { break }
            if draining && now >= drainDeadline + Int64(config.supervisor.killGraceMilliseconds) {
                for worker in workers {
                    worker.child.signal(SIGKILL)
                    worker.sentKill = true
                }
                reap()
                if now >= drainDeadline + 2 * Int64(config.supervisor.killGraceMilliseconds) { break }
            }
        }
        for index in queueHead..<queue.count { closeDescriptor(queue[index].fd) }
        log.info("manager stopped")
        return 0
    }

    // MARK: Listener and supervisor channels

    /// Takes up to 16 batches from the listener per wake-up (so workers' heartbeats are not starved),
    /// then dispatches once: several small batches from the listener leave as one message per worker.
    package func receiveConnections() {
        _ = listener.receiveAll(from: "listener", limit: 16) { message, fds in
            guard case .connections(let entries) = message else {
                return Channel.reject(message, fds: fds, from: "listener")
            }
            for (entry, fd) in zip(entries, fds) { queue.append((fd, entry)) }
        }
        dispatch()
    }

    /// Hands queued connections to the least-loaded workers, one sendmsg per worker per round.
    /// Allocation-free once warm: each worker's `staged` list and the queue keep their capacity.
    package func dispatch() {
        while queueHead < queue.count {
            var progress = false
            while queueHead < queue.count {
                var best: WorkerHandle?
                var bestLoad = Int.max
                for worker in workers where worker.isActive && worker.staged.count < Message.maxBatch {
                    let load = worker.load + worker.staged.count
                    if load < bestLoad {
                        best = worker
                        bestLoad = load
                    }
                }
                guard let worker = best else { break }
                worker.staged.append(queue[queueHead])
                queueHead += 1
            }
            var stalled: [(fd: Int32, info: ConnectionInfo)] = []
            for worker in workers where !worker.staged.isEmpty {
                if send(worker.staged, to: worker) {
                    progress = true
                } else {
                    stalled += worker.staged
                }
                worker.staged.removeAll(keepingCapacity: true)
            }
            if !stalled.isEmpty {
                // Back to the front of the queue, in order; the next wake-up tries again.
                queue.replaceSubrange(0..<queueHead, with: stalled)
                queueHead = 0
            }
            if !progress { break }
        }
        if queueHead == queue.count {
            queue.removeAll(keepingCapacity: true)
            queueHead = 0
        }
    }

    /// One `connections` message to `worker`; on success the fds are the worker's and ours are closed.
    package func send(_ batch: [(fd: Int32, info: ConnectionInfo)], to worker: WorkerHandle) -> Bool {
        let buffer = worker.connections.encodingBuffer
        Message.encodeConnectionsHeader(count: batch.count, into: buffer)
        for (position, entry) in batch.enumerated() {
            Message.encode(entry.info, into: buffer, at: Message.headerSize + position * Message.connectionEntrySize)
            sendFDs[position] = entry.fd
            if Int(entry.info.admittedBy) < worker.assignedBy.count { worker.assignedBy[Int(entry.info.admittedBy)] &+= 1 }
        }
        let length = Message.headerSize + batch.count * Message.connectionEntrySize
        do {
            guard try worker.connections.sendEncoded(length: length, fds: UnsafeBufferPointer(rebasing: sendFDs[0..<batch.count])) else {
                return false
            }
        } catch {
            log.warning("worker \(worker.id) channel failed: \(error)")
            retire(worker, reason: "channel failed")
            return false
        }
        closeDescriptors(UnsafeBufferPointer(rebasing: sendFDs[0..<batch.count]))
        worker.assignedSinceBeat += batch.count
        return true
    }

    package func handleSupervisor() {
        let open = supervisor.receiveAll(from: "supervisor") { message, fds in
            switch message {
            case .shutdown(let deadline):
                beginDrain(deadline: Int(deadline), reason: "shutdown requested")
            case .reload:
                reload(from: fds[0])
            case .reopenLogs(let access, let error):
                reopenLogs(fds: fds, access: access, error: error)
            case .ticketKeys(let keys):
                ticketKeys = keys
                for worker in workers where worker.isActive { _ = try? worker.channel.send(.ticketKeys(keys)) }
            case .listenerStarted(let index):
                // A new listener process starts with no worker: give it every active one.
                guard Int(index) < releases.count else { break }
                for worker in workers where worker.isActive { offer(worker, to: releases[Int(index)]) }
            default:
                Channel.reject(message, fds: fds, from: "supervisor")
            }
        }
        if !open {
            poller.remove(supervisor.fd)
            beginDrain(deadline: config.timeouts.shutdownMilliseconds, reason: "supervisor is gone")
        }
    }

    package func reload(from fd: Int32) {
        do {
            let newConfig = try ConfigTransport.read(from: fd)
            closeDescriptor(configFD)
            configFD = fd
            config = newConfig
            policy = Manager.policy(for: newConfig)
            if newConfig.accessLog == nil && accessLogFD >= 0 {
                // Access logging turned off: the new workers start without the file.
                closeDescriptor(accessLogFD)
                accessLogFD = -1
            }
            let old = workers.filter(\.isActive)
            for _ in 0..<newConfig.workers.min { spawnWorker() }
            for worker in old { retire(worker, reason: "reload") }
            log.info("reloaded: \(newConfig.workers.min) new workers, \(old.count) draining")
        } catch {
            closeDescriptor(fd)
            log.error("reload: cannot read the new configuration: \(error)")
        }
    }

    /// Takes the new log fds for itself and future workers, and passes them to every running worker.
    package func reopenLogs(fds: [Int32], access: Bool, error: Bool) {
        let errorLog = adoptReopenedLogs(fds, access: access, error: error, accessLog: &accessLogFD)
        for worker in workers {
            _ = try? fds.withUnsafeBufferPointer {
                try worker.channel.send(.reopenLogs(accessLog: access, errorLog: error), fds: $0)
            }
        }
        if errorLog >= 0 { closeDescriptor(errorLog) }
    }

    // MARK: Workers

    /// Gives a listener (through its release channel, which only the manager and the workers write) the
    /// send end of `worker`'s connection channel.
    package func offer(_ worker: WorkerHandle, to listener: Channel) {
        do {
            if try !listener.send(.workerChannel(worker: worker.pid), fd: worker.connections.fd) {
                log.warning("a listener's release channel is full: worker \(worker.id) gets its connections through the wait queue there")
            }
        } catch {
            log.warning("cannot give a listener worker \(worker.id)'s connection channel: \(error)")
        }
    }

    package func spawnWorker() {
        let pair: (Int32, Int32)
        let connectionPair: (Int32, Int32)
        do {
            pair = try Socket.seqpacketPair()
        } catch {
            log.error("cannot create a worker channel: \(error)")
            return
        }
        do {
            connectionPair = try Socket.seqpacketPair()
        } catch {
            closeDescriptor(pair.0)
            closeDescriptor(pair.1)
            log.error("cannot create a worker's connection channel: \(error)")
            return
        }
        let id = nextWorkerID
        nextWorkerID += 1
        let fds = WorkerSlot.arrange(
            [(.manager, pair.1), (.connections, connectionPair.1), (.config, configFD)] + (accessLogFD >= 0 ? [(.accessLog, accessLogFD)] : []),
            then: releases.map(\.fd))
        var arguments = ["--id", "\(id)", "--parent", "\(getpid())", "--listeners", "\(releases.count)"]
        if accessLogFD >= 0 { arguments.append("--access-log") }
        do {
            let child = try Spawner.spawn(role: .worker, arguments: arguments, fds: fds, image: ManagerSlot.server.fd)
            closeDescriptor(pair.1)
            closeDescriptor(connectionPair.1)
            let worker = WorkerHandle(
                id: id, child: child, channel: Channel(fd: pair.0), connections: Channel(fd: connectionPair.0), now: now, listeners: releases.count)
            // Before any connection: the worker reads this channel once before its first batch.
            if !ticketKeys.isEmpty { _ = try? worker.channel.send(.ticketKeys(ticketKeys)) }
            if !draining { for listener in releases { offer(worker, to: listener) } }
            try poller.add(pair.0, events: Poller.readable)
            if child.pidfd >= 0 { try poller.add(child.pidfd, events: Poller.readable) }
            workers.append(worker)
            workersByFD[pair.0] = worker
            if child.pidfd >= 0 { workersByFD[child.pidfd] = worker }
            log.info("worker \(id) started", metadata: ["pid": "\(child.pid)"])
            spawnFailures = 0
        } catch {
            closeDescriptor(pair.0)
            closeDescriptor(pair.1)
            closeDescriptor(connectionPair.0)
            closeDescriptor(connectionPair.1)
            spawnFailures += 1
            log.error("cannot start worker \(id): \(error)")
        }
    }

    package func handleWorker(_ worker: WorkerHandle, events: UInt32) {
        let open = worker.channel.receiveAll(from: "worker \(worker.id)", malformed: { _ in retire(worker, reason: "malformed message") }) { message, fds in
            switch message {
            case .heartbeat(let beat):
                worker.lastBeat = beat
                worker.assignedSinceBeat = 0
                worker.lastHeartbeatAt = now
            case .stats(let stats):
                worker.lastStats = stats
            default:
                Channel.reject(message, fds: fds, from: "worker \(worker.id)")
            }
        }
        if !open {
            poller.remove(worker.channel.fd)
            workersByFD[worker.channel.fd] = nil
            worker.channelOpen = false  // it is exiting; reap() says how
        }
    }

    /// Stops giving `worker` connections and asks it to drain; it gets SIGKILL if it outstays the deadline.
    /// Every listener is told to close its copy of the worker's connection channel, and the manager closes
    /// its own: once the last copy is closed the worker reads end-of-file there, and with its connections
    /// done it exits, so no batch already on its way is lost.
    package func retire(_ worker: WorkerHandle, reason: String) {
        guard !worker.retiring else { return }
        worker.retiring = true
        for listener in releases { _ = try? listener.send(.workerRetired(worker: worker.pid)) }
        worker.connections.close()
        worker.killAt = now + Int64(config.timeouts.shutdownMilliseconds + config.supervisor.killGraceMilliseconds)
        if (try? worker.channel.send(.shutdown(deadlineMilliseconds: UInt32(config.timeouts.shutdownMilliseconds)))) != true {
            worker.child.signal(SIGTERM)
            worker.sentTerm = true
        }
        log.info("worker \(worker.id) retiring: \(reason)")
    }

    /// Collects every exited child; a worker that exits without being retired is logged as a crash.
    package func reap() {
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { break }
            guard let index = workers.firstIndex(where: { $0.child.pid == pid }) else { continue }
            let worker = workers.remove(at: index)
            requestsOfExited += worker.lastBeat.requestsTotal
            statsOfExited.add(worker.lastStats, gauges: false)
            if workersByFD[worker.channel.fd] === worker {
                poller.remove(worker.channel.fd)
                workersByFD[worker.channel.fd] = nil
            }
            if worker.child.pidfd >= 0 {
                poller.remove(worker.child.pidfd)
                workersByFD[worker.child.pidfd] = nil
            }
            worker.channel.close()
            worker.child.closePidfd()
            let exit = ExitStatus(status)
            let description = exit.description
            // What it held at its last heartbeat, for the log (the listeners count exactly, below).
            let unreleased = Int(worker.lastBeat.liveConnections)
            // A crash is an abnormal exit the manager did not cause: only death by a signal the manager
            // sent is its doing. Having sent one is not enough: a worker that died first is retired when
            // a send to it fails, and the SIGTERM then sent to its corpse did not kill it.
            let abnormal = !exit.exited || exit.code != 0
            let causedByManager = !exit.exited
                && ((exit.signal == SIGTERM && worker.sentTerm) || (exit.signal == SIGKILL && worker.sentKill))
            if !abnormal || causedByManager {
                log.info("worker \(worker.id) exited: \(description)")
            } else {
                statsOfExited[Stats.workerRestarts] &+= 1
                log.warning(
                    "worker \(worker.id) died: \(description); the connections it held are lost (\(unreleased) at its last heartbeat), the pool replaces it")
            }
            // What it was handed and never reported closed died with it (the kernel closed them): each
            // listener learns how many of its own it was handed, on the channel the worker's notices
            // came by, after every one of them; else its count of open connections would creep toward
            // max_connections with every crash (and its counts per address hold clients back).
            for (listener, channel) in releases.enumerated() {
                _ = try? channel.send(.workerGone(worker: worker.pid, assigned: worker.assignedBy[listener], startedAt: UInt64(max(0, worker.startedAt))))
            }
            worker.connections.close()
        }
        if !draining { dispatch() }
    }

    package func beginDrain(deadline: Int, reason: String) {
        guard !draining else { return }
        draining = true
        drainDeadline = now + Int64(deadline)
        log.info("draining: \(reason)")
        // Take what the listener already sent, hand it out, then tell every worker to finish.
        receiveConnections()
        dispatch()
        for worker in workers { retire(worker, reason: "shutdown") }
    }

    package func tick() {
        now = monotonicMilliseconds()
        let interval = Int64(config.supervisor.heartbeatIntervalMilliseconds)
        if now - lastHeartbeat >= interval { sendHeartbeat() }
        ResidentPages.trimIfDue(now)
        let timeout = Int64(config.supervisor.heartbeatTimeoutMilliseconds)
        for worker in workers {
            if !worker.retiring && now - worker.lastHeartbeatAt > timeout {
                // Judged on what the worker has sent: read what is queued first.
                handleWorker(worker, events: 0)
            }
            if !worker.retiring && now - worker.lastHeartbeatAt > timeout {
                // A worker that misses its heartbeats is stuck in its loop, where it would read a
                // SIGTERM too: SIGKILL at once, no grace to wait out.
                log.warning("worker \(worker.id) missed its heartbeats for \(now - worker.lastHeartbeatAt)ms; SIGKILL")
                // Not marked sentKill: a worker killed for silence had failed, and counts as a restart.
                worker.child.signal(SIGKILL)
                retire(worker, reason: "silent")
                worker.killAt = .max
            }
            if worker.retiring && now >= worker.killAt {
                log.warning("worker \(worker.id) did not exit in time; SIGKILL")
                worker.child.signal(SIGKILL)
                worker.sentKill = true
                worker.killAt = .max
            }
            if config.workers.recycleAfter > 0 && !worker.retiring && Int(worker.lastBeat.acceptedTotal) >= config.workers.recycleAfter {
                retire(worker, reason: "recycled after \(worker.lastBeat.acceptedTotal) connections")
            }
        }
        if queueHead < queue.count { dispatch() }
        guard !draining, now - lastTick >= interval else { return }
        lastTick = now
        let active = workers.filter(\.isActive)
        let load = active.reduce(0) { $0 + $1.load }
        switch policy.decide(workers: active.count, load: load, queued: queue.count - queueHead) {
        case .hold:
            break
        case .spawn(let count):
            // A worker that cannot start (spawn failing) is retried once per tick, not in a spin.
            for _ in 0..<(spawnFailures > 0 ? 1 : count) { spawnWorker() }
            dispatch()
        case .retire:
            if let idle = active.min(by: { $0.load < $1.load }) { retire(idle, reason: "pool is idle") }
        }
    }

    package func sendHeartbeat() {
        lastHeartbeat = now
        var beat = Heartbeat()
        beat.workers = UInt32(workers.filter(\.isActive).count)
        beat.queueDepth = UInt32(queue.count - queueHead)
        beat.liveConnections = UInt32(workers.reduce(0) { $0 + $1.load })
        beat.requestsTotal = requestsOfExited + workers.reduce(0) { $0 + $1.lastBeat.requestsTotal }
        beat.closedTotal = workers.reduce(0) { $0 + $1.lastBeat.closedTotal }
        _ = try? supervisor.send(.heartbeat(beat))
        // The pool's figures: what exited workers had counted, plus every live worker's last report.
        var stats = statsOfExited
        for worker in workers { stats.add(worker.lastStats, gauges: true) }
        stats[Stats.workersTotal] = UInt64(workers.filter(\.isActive).count)
        stats[Stats.workersBusy] = UInt64(workers.filter { $0.isActive && $0.load > 0 }.count)
        _ = try? supervisor.send(.stats(stats))
    }
}

/// A wait status, described for logs.
package struct ExitStatus: CustomStringConvertible {
    package let raw: Int32
    package init(_ raw: Int32) { self.raw = raw }
    package var exited: Bool { raw & 0x7f == 0 }
    package var code: Int32 { (raw >> 8) & 0xff }
    package var signal: Int32 { raw & 0x7f }
    package var description: String { exited ? "exit code \(code)" : "killed by signal \(signal)" }
}
