/// One worker as the manager sees it. Owns the manager's end of the worker's channel, the manager's
/// send end of its connection channel (closed at retirement) and its pidfd.
package final class WorkerHandle {
    package let id: Int
    package let child: ChildProcess
    package let channel: Channel
    /// The send end of the worker's connection channel; each listener holds a copy of it.
    package let connections: Channel
    package var pid: UInt32 { UInt32(truncatingIfNeeded: child.pid) }
    package let startedAt: Int64
    /// Connections this manager handed to the worker from its wait queue since the worker's last
    /// heartbeat, and in all per admitting listener (wrapping). The listeners hand it the rest.
    package var assignedSinceBeat = 0
    package var assignedBy: [UInt32]
    /// The worker's last heartbeat.
    package var lastBeat = Heartbeat()
    /// The worker's last figures for /metrics.
    package var lastStats = Stats()
    package var lastHeartbeatAt: Int64
    /// Told to drain (retired, reloaded, recycled, or silent); gets no new connections.
    package var retiring = false
    /// When a retiring worker is sent SIGKILL if it has not exited.
    package var killAt: Int64 = .max
    /// Sent SIGTERM because the shutdown message could not be sent.
    package var sentTerm = false
    /// Sent SIGKILL for outstaying its drain deadline (not for silence: that is a failure, a restart).
    package var sentKill = false
    /// False once the worker's end of the channel is gone (it exited or crashed).
    package var channelOpen = true

    /// Can take new connections.
    package var isActive: Bool { !retiring && channelOpen }
    /// Connections chosen for this worker in the current dispatch round (at most one message's worth).
    package var staged: [(fd: Int32, info: ConnectionInfo)] = []

    package init(id: Int, child: ChildProcess, channel: Channel, connections: Channel, now: Int64, listeners: Int) {
        assignedBy = Array(repeating: 0, count: listeners)
        self.connections = connections
        self.id = id
        self.child = child
        self.channel = channel
        startedAt = now
        lastHeartbeatAt = now
    }

    /// Open connections: what the worker last reported, plus what this manager handed it since.
    package var load: Int { Int(lastBeat.liveConnections) + assignedSinceBeat }
}

/// The pool's scaling policy, apart from processes so it can be tested alone.
///
/// Apache prefork's spare-server idea, adapted to event-loop workers that each hold many connections:
/// grow when the wait queue is not empty or utilization (open connections over `connectionsPerWorker`
/// times workers) is above 75% for two ticks in a row, by a burst that doubles each such tick up to 8
/// (Apache's 1, 2, 4, ... 32 per second); shrink by one worker when utilization has stayed under 25% for
/// the idle time, one retirement per idle period.
package struct ScalingPolicy {
    package var minimum: Int
    package var maximum: Int
    package var connectionsPerWorker: Int
    package var idleTicks: Int

    package private(set) var busyTicks = 0
    package private(set) var quietTicks = 0
    package private(set) var burst = 1

    package init(minimum: Int, maximum: Int, connectionsPerWorker: Int, idleTicks: Int) {
        self.minimum = minimum
        self.maximum = maximum
        self.connectionsPerWorker = connectionsPerWorker
        self.idleTicks = idleTicks
    }

    package enum Decision: Equatable {
        case hold
        case spawn(Int)
        case retire
    }

    /// One decision per tick from the active worker count, open connections and the wait queue's depth.
    package mutating func decide(workers: Int, load: Int, queued: Int) -> Decision {
        if workers < minimum {
            busyTicks = 0
            quietTicks = 0
            return .spawn(minimum - workers)
        }
        let capacity = max(1, workers * connectionsPerWorker)
        let utilization = Double(load + queued) / Double(capacity)
        if queued > 0 || utilization > 0.75 {
            quietTicks = 0
            busyTicks += 1
            if busyTicks >= 2 && workers < maximum {
                let count = min(burst, maximum - workers)
                burst = min(burst * 2, 8)
                return .spawn(count)
            }
            return .hold
        }
        busyTicks = 0
        burst = 1
        if utilization < 0.25 && workers > minimum {
            quietTicks += 1
            if quietTicks >= idleTicks {
                quietTicks = 0
                return .retire
            }
        } else {
            quietTicks = 0
        }
        return .hold
    }
}
