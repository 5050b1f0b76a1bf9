import Glibc

/// Child supervision: starting the listener and the manager with their fd slots, reading their
/// heartbeats, stopping one that misses them, reaping, and restarting with backoff until a crash loop.
extension Supervisor {
    func slot(forChannel fd: Int32) -> ChildSlot? {
        if let listener = listeners.first(where: { $0.channel?.fd == fd }) { return listener }
        if manager.channel?.fd == fd { return manager }
        if acme.channel?.fd == fd { return acme }
        return nil
    }

    func startChild(_ slot: ChildSlot) {
        do {
            let (mine, theirs) = try Socket.seqpacketPair()
            defer { closeDescriptor(theirs) }
            let process: ChildProcess
            switch slot.role {
            case .listener:
                // A restarted listener takes its predecessor's counts from the admissions it shares.
                let own = sockets.fds(forListener: slot.index)
                process = try Spawner.spawn(
                    role: .listener,
                    arguments: ["--parent", "\(getpid())", "--index", "\(slot.index)", "--sockets", "\(own.count)"],
                    fds: ListenerSlot.arrange(
                        [(.supervisor, theirs), (.connections, listenerManager.listenerEnd), (.release, releaseChannels[slot.index].listenerEnd),
                         (.config, configFD), (.admissions, admissionsFD)],
                        then: own),
                    image: executables?.core)
            case .acme:
                process = try Spawner.spawn(
                    role: .acme, arguments: ["--parent", "\(getpid())"],
                    fds: AcmeSlot.arrange([(.supervisor, theirs), (.config, configFD)]))
            case .manager, .worker:
                guard let serverImage = executables?.server else { throw SystemError(call: "open(\(Spawner.executable))", errno: EBADF) }
                let accessLog = logs.accessLogFD >= 0 ? logs.accessLogFD : nil
                process = try Spawner.spawn(
                    role: .manager,
                    arguments: ["--parent", "\(getpid())", "--listeners", "\(releaseChannels.count)"] + (accessLog == nil ? [] : ["--access-log"]),
                    fds: ManagerSlot.arrange(
                        [(.supervisor, theirs), (.connections, listenerManager.managerEnd), (.config, configFD), (.server, serverImage)]
                            + (accessLog.map { [(.accessLog, $0)] } ?? []),
                        then: releaseChannels.map(\.workerEnd)),
                    image: executables?.core)
            }
            let channel = Channel(fd: mine)
            if slot === manager && !ticketKeys.isEmpty { _ = try? channel.send(.ticketKeys(ticketKeys.bytes)) }
            // A listener started again has no worker yet: the manager gives it every one (a manager
            // started later gives each listener its workers as it starts them).
            if slot.role == .listener, let managerChannel = manager.channel {
                _ = try? managerChannel.send(.listenerStarted(index: UInt32(slot.index)))
            }
            try poller.add(mine, events: Poller.readable)
            if process.pidfd >= 0 { try poller.add(process.pidfd, events: Poller.readable) }
            slot.process = process
            slot.channel = channel
            slot.state = .running
            slot.startedAt = now
            slot.lastHeartbeatAt = now
            log.info("\(slot.name) started", metadata: ["pid": "\(process.pid)"])
        } catch {
            log.error("cannot start the \(slot.name): \(error)")
            scheduleRestart(slot)
        }
    }

    func scheduleRestart(_ slot: ChildSlot) {
        guard !lifecycle.isShuttingDown else {
            slot.state = .stopped
            return
        }
        if let delay = restartPolicy.nextDelay(now: now, history: &slot.restarts, random: Double.random(in: 0...1)) {
            slot.state = .waiting(until: now + Int64(delay))
            slot.restartTotal += 1
            log.warning("restarting the \(slot.name) in \(delay)ms")
        } else if slot === acme {
            // Certificates wait; serving goes on with the ones there are. A reload starts it again.
            slot.state = .failed
            log.critical("the ACME process crashed \(slot.restarts.count) times within \(config.supervisor.restartPeriodMilliseconds)ms: not restarting it until a reload; the server goes on serving the certificates it has")
        } else {
            // A server without a listener (or a manager) would keep its sockets bound and take
            // connections nobody answers. Stop instead: the sockets close (clients are refused at once,
            // balancers fail over), what is in flight drains, and the exit status asks a service
            // manager to restart the whole tree (systemd's Restart=on-failure).
            slot.state = .failed
            log.critical(
                "the \(slot.name) crashed \(slot.restarts.count) times within \(config.supervisor.restartPeriodMilliseconds)ms: crash loop, not restarting it; stopping the server (exit status \(Supervisor.crashLoopExit))")
            exitCode = Supervisor.crashLoopExit
            beginShutdown(reason: "the \(slot.name) is in a crash loop")
        }
    }

    func handleMessages(from slot: ChildSlot) {
        guard let channel = slot.channel else { return }
        let open = channel.receiveAll(from: slot.name, malformed: { _ in stop(slot, reason: "malformed message") }) { message, fds in
            switch message {
            case .heartbeat(let beat):
                slot.lastBeat = beat
                slot.lastHeartbeatAt = now
            case .stats(let stats) where slot === manager:
                if stats[Stats.workerRestarts] > managerStats[Stats.workerRestarts] {
                    workerCrashTimes.append(now)
                }
                managerStats = stats
            case .certificateInstalled where slot === acme:
                reload(reason: "the ACME process installed a certificate")
            default:
                Channel.reject(message, fds: fds, from: slot.name)
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
        log.warning("stopping the \(slot.name) (pid \(process.pid)): \(reason)")
        process.signal(SIGTERM)
        slot.state = .stopping(killAt: now + Int64(config.supervisor.killGraceMilliseconds))
    }

    /// Starts what is due, stops what missed its heartbeats, kills what outstayed its grace.
    func superviseChildren() {
        for slot in children {
            switch slot.state {
            case .waiting(let until) where now >= until && !lifecycle.isShuttingDown:
                startChild(slot)
            case .running:
                let timeout = Int64(config.supervisor.heartbeatTimeoutMilliseconds)
                // Judged on what the child has sent: read what is queued first (after a stall of this
                // process, its heartbeats are waiting there).
                if now - slot.lastHeartbeatAt > timeout { handleMessages(from: slot) }
                if slot.state == .running && now - slot.lastHeartbeatAt > timeout, let process = slot.process {
                    // Missing heartbeats means stuck in its loop, where a SIGTERM would be read too.
                    log.warning("the \(slot.name) (pid \(process.pid)) sent no heartbeat for \(now - slot.lastHeartbeatAt)ms: SIGKILL")
                    process.signal(SIGKILL)
                    slot.state = .stopping(killAt: .max)
                }
            case .stopping(let killAt) where now >= killAt:
                log.error("the \(slot.name) did not stop in time: SIGKILL")
                slot.process?.signal(SIGKILL)
                slot.state = .stopping(killAt: .max)
            default:
                break
            }
        }
    }

    /// Collects exited children: ours are restarted (or not), orphaned workers are just reaped.
    func reap() {
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { break }
            let exit = ExitStatus(status)
            guard let slot = children.first(where: { $0.process?.pid == pid }) else {
                if !upgradeExited(pid, exit) {
                    log.debug("reaped orphan \(pid): \(exit)")
                    // A worker whose manager died before it: the listeners settle what they handed it.
                    tellListeners(.workerGone(worker: UInt32(truncatingIfNeeded: pid), assigned: nil, startedAt: 0))
                }
                continue
            }
            if slot === manager {
                // A new manager counts from zero: keep what this one had counted.
                statsOfPastManagers.add(managerStats, gauges: false)
                managerStats = Stats()
                // Its workers drain now: the listeners stop handing them connections.
                tellListeners(.managerGone)
            }
            if let channel = slot.channel {
                poller.remove(channel.fd)
                channel.close()
            }
            if let process = slot.process, process.pidfd >= 0 { poller.remove(process.pidfd) }
            slot.process?.closePidfd()
            slot.process = nil
            slot.channel = nil
            if lifecycle.isShuttingDown || (slot === acme && !acmeWanted) {
                slot.state = .stopped
                log.info("\(slot.name) exited: \(exit)")
            } else if exit.exited && exit.code == Supervisor.configErrorExit && slot === acme {
                slot.state = .failed
                log.critical("the ACME process rejected its configuration (exit 78); not restarting it until a reload")
            } else if exit.exited && exit.code == Supervisor.configErrorExit {
                slot.state = .failed
                log.critical("the \(slot.name) rejected its configuration (exit 78); not restarting; shutting down")
                exitCode = 1
                beginShutdown(reason: "configuration error in the \(slot.name)")
            } else {
                if case .stopping = slot.state {
                    log.error("the \(slot.name) (pid \(pid)) was stopped: \(exit)")
                } else {
                    log.error("the \(slot.name) (pid \(pid)) exited unexpectedly: \(exit)")
                }
                scheduleRestart(slot)
            }
        }
    }

    /// Sends `message` on every listener's release channel, as the manager and the workers do (so it
    /// arrives after whatever they sent there before).
    func tellListeners(_ message: Message) {
        for ends in releaseChannels {
            let copy = fcntl(ends.workerEnd, F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else { continue }
            _ = try? Channel(fd: copy).send(message)
        }
    }

    /// Whether the configuration has certificates for the ACME process to get.
    var acmeWanted: Bool { !config.acmeCertificates.isEmpty && !config.tls.listen.isEmpty }

    /// Starts the ACME process when the configuration wants one and it is not running, stops it when
    /// it no longer does (at start, and after each reload, which also gives a failed one another go).
    func startOrStopAcme() {
        if acmeWanted {
            switch acme.state {
            case .stopped, .failed:
                acme.restarts = []
                startChild(acme)
            default: break
            }
        } else if acme.process != nil {
            stop(acme, reason: "no site gets its certificate by ACME any more")
        } else {
            acme.state = .stopped
        }
    }
}
