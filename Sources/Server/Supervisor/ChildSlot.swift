/// One supervised role (listener or manager): its current process, channel and restart history.
final class ChildSlot {
    enum State: Equatable {
        /// Not started yet, or waiting for its restart time.
        case waiting(until: Int64)
        case running
        /// Sent SIGTERM (missed heartbeats or shutdown); SIGKILL at `killAt`.
        case stopping(killAt: Int64)
        /// Crash loop past the intensity window, or a configuration error: not restarted.
        case failed
        /// Shut down on purpose.
        case stopped
    }

    let role: Role
    /// A listener's number (0 for the other roles), and whether there are several to tell apart.
    let index: Int
    let numbered: Bool
    var state = State.waiting(until: 0)
    var process: ChildProcess?
    /// The supervisor's end of this child's channel; owned here.
    var channel: Channel?
    var lastHeartbeatAt: Int64 = 0
    var lastBeat = Heartbeat()
    var startedAt: Int64 = 0
    /// Monotonic times of recent restarts, for the intensity window.
    var restarts: [Int64] = []
    /// Restarts since the server started (for the status and metrics of issue 7).
    var restartTotal = 0

    init(role: Role, state: State = .waiting(until: 0), index: Int = 0, numbered: Bool = false) {
        self.role = role
        self.state = state
        self.index = index
        self.numbered = numbered
    }

    /// The role's name, for the log ("listener 2" when there are several).
    var name: String { numbered ? "\(role.rawValue) \(index)" : role.rawValue }
}

/// Restart timing: exponential backoff with jitter, and a crash-loop limit over a sliding window
/// (systemd's StartLimitBurst within StartLimitIntervalSec; OTP's intensity within period).
struct RestartPolicy {
    var baseDelay: Int
    var maxDelay: Int
    var intensity: Int
    var period: Int

    init(baseDelay: Int, maxDelay: Int, intensity: Int, period: Int) {
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.intensity = intensity
        self.period = period
    }

    /// The policy `supervisor` configures.
    init(_ supervisor: ServerConfig.Supervision) {
        self.init(
            baseDelay: supervisor.restartDelayMilliseconds, maxDelay: supervisor.restartDelayMaxMilliseconds,
            intensity: supervisor.restartIntensity, period: supervisor.restartPeriodMilliseconds)
    }

    /// Records a restart at `now` in `history`; returns the delay before it, or nil when the crash loop
    /// limit is passed and the child must not be restarted.
    func nextDelay(now: Int64, history: inout [Int64], random: Double) -> Int? {
        history.removeAll { now - $0 > Int64(period) }
        history.append(now)
        if history.count > intensity { return nil }
        let exponent = min(history.count - 1, 20)
        let ceiling = min(maxDelay, baseDelay << exponent)
        // Full jitter over the upper half: between half the ceiling and the ceiling.
        return ceiling / 2 + Int(Double(ceiling - ceiling / 2) * random)
    }
}
