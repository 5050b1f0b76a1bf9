package import CSystemShims
import Glibc

/// A listener process: accepts on the sockets the supervisor bound, in batches, and sends each batch
/// of fds with peer addresses in one sendmsg to a worker: the one with the fewest of this listener's
/// connections open, on the worker's connection channel, which the manager gives every listener (and
/// takes back when the worker retires). A batch no worker can take (none yet, every channel full) goes
/// to the manager's wait queue instead. With `listeners: N` there are N of them,
/// each on its own copy of every TCP socket (SO_REUSEPORT, the kernel choosing the copy by the client's
/// address), sharing the channel to the manager; Unix-domain sockets are listener 0's. Enforces
/// `max_connections` through the admission counts all of them share (`Admissions`), and
/// `limits.connections_per_ip` alone (every connection of one address comes to it).
///
/// Fd slots (`ListenerSlot`): its channel to the supervisor, the send end of the manager channel, the
/// receive end of its release channel, the config memfd, the admission counts, then its listening
/// sockets in `allListen` order. The listening sockets stay the supervisor's too, so a listener that
/// dies loses nothing: the backlog waits for the next one.
public final class Listener {
    package var config: ServerConfig
    package let poller: Poller
    package let ticker: Ticker
    package let signals: SignalReader
    package let supervisor: Channel
    package let manager: Channel
    package let releases: Channel
    package let sockets: [Int32]
    /// Per socket, its index in `allListen` (what a connection's `listenerID` says).
    package let socketIDs: [UInt16]
    /// This listener's number (what a connection's `admittedBy` says).
    package let index: Int
    package let admissions: Admissions
    package let startedAt: Int64
    /// The workers this listener hands connections to (their connection channels, from the manager).
    package var workers: [DirectWorker] = []
    /// Per worker (pid): connections this listener handed it, and the running total of closes it has
    /// reported here (see `workerGone`).
    package var tallies: [UInt32: Tally] = [:]
    /// Each flush's number, to mark the workers whose channel was full in it.
    package var flushes = 0
    /// Where the next scan for the least-loaded worker starts (ties go round).
    package var rotation = 0

    package var acceptedTotal: UInt32 = 0
    /// Accepted connections not yet taken by the manager's channel; owned here.
    package var pendingFDs: [Int32] = []
    package var pendingInfo: [ConnectionInfo] = []
    package var accepting = true
    package var waitingForManager = false
    /// After EMFILE/ENFILE, accepting resumes at this time instead of spinning.
    package var pausedUntil: Int64 = 0
    package var draining = false
    package var drainDeadline: Int64 = .max
    package var lastHeartbeat: Int64 = 0
    package var now: Int64
    package var peer = sockaddr_storage()
    /// `limits.connections_per_ip`: connections open per client address, counted for the sockets
    /// without PROXY protocol and for peers outside `proxy.trusted` (a proxy is many clients; behind
    /// one, the limit is the proxy's to keep). Refused connections are closed at once.
    package var perAddress: [AddressKey: UInt32] = [:]
    /// Per socket: whether its connections are counted (not PROXY protocol).
    package var countsSocket: [Bool]
    package var trusted: Networks
    package var refusedTotal: UInt64 = 0

    public init(config: ServerConfig, index: Int, socketCount: Int) throws {
        self.config = config
        self.index = index
        poller = try Poller()
        ticker = try Ticker(intervalMilliseconds: 100)
        signals = try SignalReader([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGPIPE])
        supervisor = Channel(fd: ListenerSlot.supervisor.fd)
        manager = Channel(fd: ListenerSlot.connections.fd)
        releases = Channel(fd: ListenerSlot.release.fd)
        sockets = (0..<socketCount).map { ListenerSlot.firstSocket.fd + Int32($0) }
        socketIDs = Listener.socketIDs(config, listener: index)
        guard socketIDs.count == socketCount else {
            throw SystemError(call: "listener \(index): \(socketCount) sockets passed for \(socketIDs.count) listen entries", errno: EINVAL)
        }
        admissions = try Admissions(fd: ListenerSlot.admissions.fd)
        closeDescriptor(ListenerSlot.admissions.fd)
        now = monotonicMilliseconds()
        startedAt = now
        countsSocket = config.allListen.map { !$0.proxyProtocol }
        trusted = Networks(config.proxy.trusted) ?? Networks()
        for fd in [ListenerSlot.supervisor.fd, ListenerSlot.connections.fd, ListenerSlot.release.fd] + sockets { Socket.setNonBlocking(fd) }
        try poller.add(supervisor.fd, events: Poller.readable)
        try poller.add(releases.fd, events: Poller.readable)
        try poller.add(manager.fd, events: 0)
        try poller.add(ticker.fd, events: Poller.readable)
        try poller.add(signals.fd, events: Poller.readable)
        for socket in sockets { try poller.add(socket, events: Poller.readable) }
    }

    /// The `allListen` entries listener `listener` has a socket for: all for listener 0, the TCP ones
    /// for the others.
    package static func socketIDs(_ config: ServerConfig, listener: Int) -> [UInt16] {
        config.allListen.indices.filter { listener == 0 || config.allListen[$0].unixPath == nil }.map { UInt16($0) }
    }

    public func run() -> Int32 {
        let lost = admissions.takeOverFromPredecessor(of: index)
        if lost > 0 { log.warning("the listener before this one died holding \(lost) accepted connections; they are closed") }
        sendHeartbeat()
        updateAccepting()
        while true {
            poller.wait(timeoutMilliseconds: 1000) { fd, events in
                if fd == releases.fd {
                    receiveReleases()
                } else if fd == manager.fd {
                    flush()
                } else if fd == supervisor.fd {
                    handleSupervisor()
                } else if fd == ticker.fd {
                    ticker.drain()
                    tick()
                } else if fd == signals.fd {
                    for signal in signals.pending() where signal == SIGTERM { beginDrain(reason: "SIGTERM") }
                } else if let position = sockets.firstIndex(of: fd) {
                    acceptBatch(from: fd, listenerID: socketIDs[position])
                }
            }
            flush()
            updateAccepting()
            if draining && (pendingFDs.isEmpty || monotonicMilliseconds() >= drainDeadline) { break }
        }
        for fd in pendingFDs { closeDescriptor(fd) }
        admissions.released(pendingFDs.count, by: index)
        admissions.setPending(0, of: index)
        return 0
    }

    /// Accepts until the backlog is empty, the batch is full, or the limit is reached (a place among
    /// `max_connections` is reserved before each accept, so every listener together stays under it).
    package func acceptBatch(from socket: Int32, listenerID: UInt16) {
        defer { admissions.setPending(pendingFDs.count, of: index) }
        while accepting && pendingFDs.count < Message.maxBatch {
            guard admissions.reserve(limit: config.maxConnections) else {
                updateAccepting()
                return
            }
            let result: IOResult<Int32>
            do {
                result = try Socket.accept(socket, peer: &peer)
            } catch {
                admissions.unreserve()
                switch error.errno {
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    log.error("accept: \(error); pausing accepts for 100ms")
                    pausedUntil = monotonicMilliseconds() + 100
                    updateAccepting()
                case ECONNABORTED, EPROTO, EPERM:
                    continue
                default:
                    log.error("accept: \(error)")
                }
                return
            }
            guard case .processed(let fd) = result else {
                admissions.unreserve()
                return
            }
            guard let address = SocketAddress(storage: peer) else {
                admissions.unreserve()
                closeDescriptor(fd)
                continue
            }
            var counted = false
            let perAddressLimit = config.limits.connectionsPerIP
            if perAddressLimit > 0 && Int(listenerID) < countsSocket.count && countsSocket[Int(listenerID)] && !address.isUnix
                && !trusted.contains(address) {
                let key = AddressKey(family: address.family, high: address.bytes.0, low: address.bytes.1)
                let open = perAddress[key, default: 0]
                if open >= UInt32(perAddressLimit) {
                    // Closed at accept: the client's other connections are its share.
                    admissions.unreserve()
                    closeDescriptor(fd)
                    refusedTotal &+= 1
                    acceptedTotal &+= 1
                    continue
                }
                perAddress[key] = open + 1
                counted = true
            }
            pendingFDs.append(fd)
            pendingInfo.append(ConnectionInfo(listenerID: listenerID, peer: address, countedPerIP: counted, admittedBy: UInt8(index)))
            admissions.admitted(by: index)
            acceptedTotal &+= 1
        }
    }

    /// A connection counted per address has closed.
    package func releasePeer(_ address: SocketAddress) {
        let key = AddressKey(family: address.family, high: address.bytes.0, low: address.bytes.1)
        guard let open = perAddress[key] else { return }  // counted by a listener before this one
        if open <= 1 { perAddress[key] = nil } else { perAddress[key] = open - 1 }
    }

    /// Sends the pending batch to the workers, each connection to the one with the fewest of this
    /// listener's connections open (one sendmsg per worker, a run of the batch each); what no worker can
    /// take (none yet, every channel full) goes to the manager's wait queue; on a full manager channel
    /// too, the batch waits for it to drain.
    package func flush() {
        guard !pendingFDs.isEmpty else {
            if waitingForManager {
                waitingForManager = false
                try? poller.modify(manager.fd, events: 0)
            }
            return
        }
        flushes &+= 1
        while !pendingFDs.isEmpty && shareOut() {}
        if pendingFDs.isEmpty {
            batchDone()
        } else if send(count: pendingFDs.count, to: manager) {
            sent(pendingFDs.count)
            batchDone()
        } else if !waitingForManager {
            // The manager is slow or being restarted: hold this batch, stop accepting, let the backlog wait.
            waitingForManager = true
            try? poller.modify(manager.fd, events: Poller.writable)
        }
    }

    /// One round: shares the pending connections among the workers not yet tried in this flush, the
    /// least loaded first (filling up the lowest), and sends each its share from the front of the batch.
    /// False when no worker is left to try.
    package func shareOut() -> Bool {
        var any = false
        for worker in workers where worker.triedAt != flushes {
            worker.share = 0
            worker.load = worker.tally.open
            any = true
        }
        guard any else { return false }
        // Ties go round: the scan starts one worker further on each time, so sequential connections
        // (each closed before the next) spread over the workers instead of all going to the first.
        for _ in 0..<pendingFDs.count {
            var best: DirectWorker?
            for step in 0..<workers.count {
                let worker = workers[(rotation + step) % workers.count]
                if worker.triedAt != flushes && worker.load + worker.share < (best.map { $0.load + $0.share } ?? .max) { best = worker }
            }
            best?.share += 1
            rotation = rotation &+ 1 < workers.count ? rotation &+ 1 : 0
        }
        for worker in workers where worker.triedAt != flushes && worker.share > 0 {
            if send(count: worker.share, to: worker.channel) {
                worker.tally.sent &+= UInt32(worker.share)
                sent(worker.share)
            } else {
                worker.triedAt = flushes  // full (or gone): the rest goes elsewhere
            }
        }
        return true
    }

    /// The first `count` pending connections are the receiver's: our copies close.
    package func sent(_ count: Int) {
        pendingFDs.withUnsafeBufferPointer { closeDescriptors(UnsafeBufferPointer(rebasing: $0[0..<count])) }
        if count == pendingFDs.count {
            pendingFDs.removeAll(keepingCapacity: true)
            pendingInfo.removeAll(keepingCapacity: true)
        } else {
            pendingFDs.removeFirst(count)
            pendingInfo.removeFirst(count)
        }
    }

    package func batchDone() {
        admissions.setPending(0, of: index)
        if waitingForManager {
            waitingForManager = false
            try? poller.modify(manager.fd, events: 0)
        }
    }

    /// One `connections` message of the first `count` pending connections on `channel`; false when its
    /// queue is full or the receiver is gone (a worker that died: dropped here, its channel closed).
    package func send(count: Int, to channel: Channel) -> Bool {
        let buffer = channel.encodingBuffer
        Message.encodeConnectionsHeader(count: count, into: buffer)
        for position in 0..<count {
            Message.encode(pendingInfo[position], into: buffer, at: Message.headerSize + position * Message.connectionEntrySize)
        }
        let length = Message.headerSize + count * Message.connectionEntrySize
        do {
            return try pendingFDs.withUnsafeBufferPointer { try channel.sendEncoded(length: length, fds: UnsafeBufferPointer(rebasing: $0[0..<count])) }
        } catch {
            if channel === manager {
                log.error("cannot pass connections to the manager: \(error)")
            } else if let position = workers.firstIndex(where: { $0.channel === channel }) {
                // The worker has exited (its manager says so on the release channel, after this).
                log.info("worker \(workers[position].pid) takes no more connections (\(error)); others get them")
                workers.remove(at: position).channel.close()
            }
            return false
        }
    }

    /// Watches the listening sockets only while a new connection could be admitted. At
    /// `max_connections` a listener learns of closes from its own release channel; closes of another
    /// listener's connections it sees at its next tick (100 ms), the backlog holding what comes meanwhile.
    package func updateAccepting() {
        let full = admissions.total >= Int64(config.maxConnections)
        let should = !draining && !waitingForManager && !full && monotonicMilliseconds() >= pausedUntil
        guard should != accepting else { return }
        accepting = should
        for socket in sockets { try? poller.modify(socket, events: should ? Poller.readable : 0) }
        if !should && full {
            log.notice("max_connections (\(config.maxConnections)) reached: accepting paused")
        }
    }

    package func receiveReleases() {
        // The supervisor holds the other end too, so this channel never reads as closed.
        _ = releases.receiveAll(from: "workers (release channel)") { message, fds in
            switch message {
            case .released(let count, let worker, let total):
                admissions.released(Int(count), by: index)
                tally(of: worker).reported = total
            case .releasedPeers(let peers, let worker, let total):
                admissions.released(peers.count, by: index)
                tally(of: worker).reported = total
                for peer in peers { releasePeer(peer) }
            case .workerChannel(let worker):
                // A new worker, or (after this listener restarted, or a full release channel earlier)
                // one this listener may already have: the newer copy replaces the older.
                drop(worker)
                workers.append(DirectWorker(pid: worker, channel: Channel(fd: fds[0]), tally: tally(of: worker)))
            case .workerRetired(let worker):
                drop(worker)
            case .managerGone:
                // Its workers drain and exit once nobody can send them more; the next manager's come
                // with their own channels.
                for worker in workers { worker.channel.close() }
                workers.removeAll()
            case .workerGone(let worker, let assigned, let workerStartedAt):
                drop(worker)
                workerGone(worker, assigned: assigned, startedAt: workerStartedAt)
            default:
                Channel.reject(message, fds: fds, from: "workers (release channel)")
            }
        }
    }

    /// What this listener knows of `worker` (kept until the worker is gone).
    package func tally(of worker: UInt32) -> Tally {
        if let tally = tallies[worker] { return tally }
        let tally = Tally()
        tallies[worker] = tally
        return tally
    }

    /// Stops handing `worker` connections and closes this listener's copy of its connection channel.
    package func drop(_ worker: UInt32) {
        guard let position = workers.firstIndex(where: { $0.pid == worker }) else { return }
        workers.remove(at: position).channel.close()
    }

    /// A worker has exited, and every close it reported is read (they came before this, on the same
    /// channel): what it was handed of this listener's connections (by this listener, and by the
    /// manager from its wait queue: `assigned`) and never reported closed died with it. Exact while this
    /// listener has run since before the worker started; what a predecessor handed it is not known here
    /// (an under-count, never an over-count).
    package func workerGone(_ worker: UInt32, assigned: UInt32?, startedAt workerStartedAt: UInt64) {
        let tally = tallies.removeValue(forKey: worker)
        let lost: Int
        if let tally {
            lost = Int(Int32(bitPattern: (tally.sent &+ (assigned ?? 0)) &- tally.reported))
        } else {
            lost = workerStartedAt >= UInt64(max(0, startedAt)) ? Int(assigned ?? 0) : 0
        }
        guard lost > 0 else { return }
        log.warning("worker \(worker) exited holding \(lost) connections this listener admitted; they are closed")
        admissions.released(lost, by: index)
        // Which addresses its connections had is not known, so the counts per address start again
        // (lenient until the connections open now close) rather than hold clients back for
        // connections that are gone.
        if !perAddress.isEmpty {
            perAddress = [:]
            log.notice("a worker died holding \(lost) connections: the counts per address for limits.connections_per_ip start again")
        }
    }

    package func handleSupervisor() {
        let open = supervisor.receiveAll(from: "supervisor") { message, fds in
            switch message {
            case .shutdown(let deadline):
                drainDeadline = monotonicMilliseconds() + Int64(deadline)
                beginDrain(reason: "shutdown requested")
            case .reload:
                if let newConfig = try? ConfigTransport.read(from: fds[0]) {
                    config = newConfig
                    // Counts already kept go on (their releases still come); a limit turned off forgets them.
                    if newConfig.limits.connectionsPerIP == 0 { perAddress = [:] }
                    countsSocket = newConfig.allListen.map { !$0.proxyProtocol }
                    trusted = Networks(newConfig.proxy.trusted) ?? Networks()
                }
                closeDescriptor(fds[0])
            case .reopenLogs(let access, let error):
                // The listener writes no access log; it only points its error log at the new file.
                adoptReopenedErrorLog(fds, access: access, error: error)
            default:
                Channel.reject(message, fds: fds, from: "supervisor")
            }
        }
        if !open {
            poller.remove(supervisor.fd)
            beginDrain(reason: "supervisor is gone")
        }
    }

    package func beginDrain(reason: String) {
        guard !draining else { return }
        draining = true
        if drainDeadline == .max { drainDeadline = monotonicMilliseconds() + Int64(config.supervisor.killGraceMilliseconds) }
        log.info("listener stopping: \(reason)")
        updateAccepting()
        takeTheBacklog()
    }

    /// Accepts every connection the kernel has already queued (past `max_connections`: they were
    /// accepted by the kernel, and closing the listening sockets would reset them) and hands them on
    /// like any other (the manager drains the workers only after every listener has stopped).
    package func takeTheBacklog() {
        var taken = 0
        defer { admissions.setPending(pendingFDs.count, of: index) }
        for (position, socket) in sockets.enumerated() {
            while taken < ListeningBacklog.sweepLimit {
                if pendingFDs.count >= Message.maxBatch {
                    flush()
                    if waitingForManager { return }  // the run loop sends the rest as the manager takes it
                }
                guard let (fd, address) = ListeningBacklog.acceptOne(socket, peer: &peer) else { break }
                pendingFDs.append(fd)
                pendingInfo.append(ConnectionInfo(listenerID: socketIDs[position], peer: address, admittedBy: UInt8(index)))
                _ = admissions.reserve(limit: .max)
                admissions.admitted(by: index)
                acceptedTotal &+= 1
                taken += 1
            }
        }
        flush()
        if taken > 0 { log.info("took \(taken) queued connections before stopping") }
    }

    package func tick() {
        now = monotonicMilliseconds()
        updateAccepting()  // another listener's connections may have closed
        if now - lastHeartbeat >= Int64(config.supervisor.heartbeatIntervalMilliseconds) { sendHeartbeat() }
        ResidentPages.trimIfDue(now)
    }

    package func sendHeartbeat() {
        lastHeartbeat = now
        // The listener's `closedTotal` is the connections it closed at accept (connections_per_ip).
        let beat = Heartbeat(
            liveConnections: UInt32(max(0, admissions.liveCount(of: index))), queueDepth: UInt32(pendingFDs.count), acceptedTotal: acceptedTotal, closedTotal: refusedTotal)
        _ = try? supervisor.send(.heartbeat(beat))
    }
}

/// A worker a listener hands connections to: the listener's copy of the send end of its connection
/// channel (owned, closed when the worker retires or is gone).
package final class DirectWorker {
    package let pid: UInt32
    package let channel: Channel
    /// The listener's tally of it (the same object as in `tallies`, reached here without a lookup).
    package let tally: Tally
    /// The flush that last found its channel full (tried once per flush).
    package var triedAt = 0
    /// In a flush: this listener's connections open on it, and how many of the batch it gets.
    package var load = 0
    package var share = 0

    package init(pid: UInt32, channel: Channel, tally: Tally) {
        self.pid = pid
        self.channel = channel
        self.tally = tally
    }
}

/// What one listener knows of one worker: the connections it handed it, and the running total of
/// closes the worker reported (both wrapping).
package final class Tally {
    package var sent: UInt32 = 0
    package var reported: UInt32 = 0
    /// This listener's connections open on the worker (those the manager handed it and the worker has
    /// closed are in `reported` too, so it can read low; never below zero).
    var open: Int { max(0, Int(Int32(bitPattern: sent &- reported))) }
}
