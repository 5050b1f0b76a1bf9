import Glibc

/// A graceful shutdown in its phases: (after SIGTERM) a delay with everything serving and /readyz 503,
/// then the listener stops and hands over what it accepted, then the manager drains the workers; past
/// the hard deadline everything left is killed.
struct Shutdown {
    enum Phase: Equatable {
        /// `timeouts.shutdown_delay`: still accepting, so load balancers stop sending before anything is
        /// refused.
        case delaying
        /// The listener was told to stop; once it has exited, the supervisor takes what queues.
        case stoppingListener
        /// The listener is gone; until the given time the supervisor still takes what queues on the
        /// sockets and hands it to the manager, then closes them.
        case settling(until: Int64)
        /// The manager was told to drain its workers; done when no process below is left.
        case drainingManager
    }

    var phase = Phase.delaying
    /// Connections the supervisor took off the sockets' queues and handed to the manager.
    var handedOver = 0
    /// Why (for the log, and: only SIGTERM waits for the delay).
    let reason: String
    /// When the delay ends and the drain starts.
    let drainAt: Int64
    /// When whatever is left is killed: the delay, `timeouts.shutdown` and twice `kill_grace` after the
    /// signal (or at once, after a second Ctrl-C).
    var hardDeadline: Int64

    /// How long the sockets stay open after the listener is gone, their queues taken by the supervisor:
    /// a connection that was waiting for its first bytes under `defer_accept` when the stop began is
    /// established for its client but not yet queued, and a close would reset it. A fifth of a second
    /// lets such a request arrive (a client, or a balancer in TCP mode, sends it right after connecting).
    static let settleMilliseconds: Int64 = 200
}

extension Supervisor {
    func beginShutdown(reason: String) {
        guard !lifecycle.isShuttingDown else { return }
        // SIGTERM (a service manager, Kubernetes) waits `shutdown_delay` with the listeners open, /readyz
        // already 503, so load balancers stop sending before anything is refused; Ctrl-C does not wait.
        let delay = reason == "SIGTERM" ? config.timeouts.shutdownDelayMilliseconds : 0
        let drainAt = now + Int64(delay)
        lifecycle = .shuttingDown(Shutdown(
            reason: reason, drainAt: drainAt,
            hardDeadline: drainAt + Int64(config.timeouts.shutdownMilliseconds + 2 * config.supervisor.killGraceMilliseconds)))
        if !upgrade.handedOver { Systemd.notify("STOPPING=1\nSTATUS=draining") }
        if upgrade.isPending, let child = upgrade.child {
            log.warning("stopping with an upgrade under way: stopped the new server (pid \(child.pid)), which was not ready yet")
            abandonUpgrade()
        }
        if delay > 0 {
            log.notice("shutting down (\(reason)): not ready; still accepting for \(delay)ms (timeouts.shutdown_delay), then draining")
        } else {
            log.notice("shutting down (\(reason)): no new connections; in-flight requests have \(config.timeouts.shutdownMilliseconds)ms")
        }
        for slot in children where slot.process == nil { slot.state = .stopped }
        // The ACME process holds nothing a client waits for: it stops at once (an order in flight is
        // placed again at the next start).
        if let channel = acme.channel, acme.process != nil {
            _ = try? channel.send(.shutdown(deadlineMilliseconds: 0))
            acme.state = .stopping(killAt: now + Int64(config.supervisor.killGraceMilliseconds))
        }
    }

    /// Once no listener will run again: what waits unread on their release channels is dropped. A
    /// worker's connection channel passed to a listener that never read it is still open in the queue,
    /// and the worker, which finishes only when every sender has closed its end, would wait for it until
    /// its deadline. (Done at every pass of the loop while the manager drains: it may start a worker
    /// until it reads its own shutdown.)
    func discardListenerMail() {
        for ends in releaseChannels {
            let copy = fcntl(ends.listenerEnd, F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else { continue }
            _ = Channel(fd: copy).receiveAll(from: "release channel") { _, fds in
                for fd in fds { closeDescriptor(fd) }
            }
        }
    }

    /// A second Ctrl-C: the hard deadline is now.
    func stopNow() {
        guard case .shuttingDown(var shutdown) = lifecycle else { return }
        shutdown.hardDeadline = now
        lifecycle = .shuttingDown(shutdown)
    }

    /// Moves the shutdown on as far as it can go now; true when it is done (no process below is left,
    /// but an upgrade's new server, which is ours only until we exit).
    func advanceShutdown() -> Bool {
        guard case .shuttingDown(var shutdown) = lifecycle else { return false }
        defer { lifecycle = .shuttingDown(shutdown) }
        if shutdown.phase == .delaying {
            if now < shutdown.drainAt && now < shutdown.hardDeadline { return false }
            // The sockets are the new server's too once an upgrade handed them over: left as they are.
            if config.deferAcceptMilliseconds > 0 && !upgrade.handedOver { sockets.stopDeferringAccept() }
            for listener in listeners {
                guard let channel = listener.channel, listener.process != nil else { continue }
                _ = try? channel.send(.shutdown(deadlineMilliseconds: UInt32(config.supervisor.killGraceMilliseconds)))
                listener.state = .stopping(killAt: now + 2 * Int64(config.supervisor.killGraceMilliseconds))
            }
            shutdown.phase = .stoppingListener
        }
        if shutdown.phase == .stoppingListener && listeners.allSatisfy({ $0.process == nil }) {
            shutdown.phase = manager.process != nil ? .settling(until: now + Shutdown.settleMilliseconds) : .settling(until: now)
        }
        if case .settling(let until) = shutdown.phase {
            // The listener is gone: what the kernel queues goes to the manager from here, for a moment,
            // then the sockets close, so clients are refused rather than stuck in a backlog nobody reads.
            if manager.process == nil {
                sockets.close()
            } else if now < until && now < shutdown.hardDeadline {
                shutdown.handedOver += sockets.handOverBacklog(through: listenerManager.listenerEnd, thenClose: false)
                return false
            } else {
                shutdown.handedOver += sockets.handOverBacklog(through: listenerManager.listenerEnd, thenClose: true)
            }
            if shutdown.handedOver > 0 { log.info("shutdown: handed \(shutdown.handedOver) queued connections to the manager") }
            if let channel = manager.channel, manager.process != nil {
                _ = try? channel.send(.shutdown(deadlineMilliseconds: UInt32(config.timeouts.shutdownMilliseconds)))
                manager.state = .stopping(killAt: now + Int64(config.timeouts.shutdownMilliseconds + config.supervisor.killGraceMilliseconds))
            }
            shutdown.phase = .drainingManager
        }
        if shutdown.phase == .drainingManager { discardListenerMail() }
        if now >= shutdown.hardDeadline {
            // Past the deadline: end every process below us, including workers orphaned to us.
            for slot in children { slot.process?.signal(SIGKILL) }
            let successor = upgradeTree()
            for pid in ProcessTree.descendants(of: getpid()) where !successor.contains(pid) { kill(pid, SIGKILL) }
            if now >= shutdown.hardDeadline + 2000 { return true }
        }
        if shutdown.phase == .drainingManager && listeners.allSatisfy({ $0.process == nil }) && manager.process == nil {
            // Wait for orphaned workers (reparented to us as subreaper) too, but not for the supervisor
            // an upgrade started: it is our child only until we exit.
            let successor = upgradeTree()
            return ProcessTree.descendants(of: getpid()).allSatisfy { successor.contains($0) }
        }
        return false
    }
}
