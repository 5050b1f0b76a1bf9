/// The processes below the supervisor, each the same executable started with `--role=ROLE`.
public enum Role: String, Sendable, CaseIterable {
    case listener
    case manager
    case worker

    /// What `ps` shows (argv[0]).
    var displayName: String { "webserver: \(rawValue)" }
    /// The kernel's 15-byte name (`comm`, PR_SET_NAME), for top and pidstat.
    var processName: String { "ws-\(rawValue)" }
}

/// The fd slots each role is started with, defined once: the parent builds the list of fds it passes
/// with `arrange` (each fd at its slot's position), and the child finds each one at its slot and keeps
/// `count` slots (everything above is closed). Slot 3 is the first (`Spawner.firstSlot`).
enum ListenerSlots {
    /// Its channel to the supervisor.
    static let supervisor: Int32 = 3
    /// The send end of the listener→manager channel.
    static let connections: Int32 = 4
    /// The receive end of the release channel (workers' close notices).
    static let release: Int32 = 5
    /// The configuration memfd.
    static let config: Int32 = 6
    /// The listening sockets from here on, `listen` then `tls.listen`.
    static let firstSocket: Int32 = 7

    static func arrange(supervisor: Int32, connections: Int32, release: Int32, config: Int32, sockets: [Int32]) -> [Int32] {
        Slots.arrange([(Self.supervisor, supervisor), (Self.connections, connections), (Self.release, release), (Self.config, config)])
            + sockets
    }

    static func count(sockets: Int) -> Int32 { firstSocket - Spawner.firstSlot + Int32(sockets) }
}

enum ManagerSlots {
    /// Its channel to the supervisor.
    static let supervisor: Int32 = 3
    /// The receive end of the listener→manager channel.
    static let connections: Int32 = 4
    /// The workers' end of the release channel: passed on to every worker; read only to release a
    /// crashed worker's connections.
    static let release: Int32 = 5
    /// The configuration memfd.
    static let config: Int32 = 6
    /// The access log, when there is one.
    static let accessLog: Int32 = 7

    static func arrange(supervisor: Int32, connections: Int32, release: Int32, config: Int32, accessLog: Int32?) -> [Int32] {
        Slots.arrange([(Self.supervisor, supervisor), (Self.connections, connections), (Self.release, release), (Self.config, config)]
            + (accessLog.map { [(Self.accessLog, $0)] } ?? []))
    }

    static func count(accessLog: Bool) -> Int32 { (accessLog ? Self.accessLog + 1 : Self.accessLog) - Spawner.firstSlot }
}

enum WorkerSlots {
    /// Its channel to the manager.
    static let manager: Int32 = 3
    /// The workers' end of the release channel.
    static let release: Int32 = 4
    /// The configuration memfd.
    static let config: Int32 = 5
    /// The access log, when there is one.
    static let accessLog: Int32 = 6

    static func arrange(manager: Int32, release: Int32, config: Int32, accessLog: Int32?) -> [Int32] {
        Slots.arrange([(Self.manager, manager), (Self.release, release), (Self.config, config)]
            + (accessLog.map { [(Self.accessLog, $0)] } ?? []))
    }

    static func count(accessLog: Bool) -> Int32 { (accessLog ? Self.accessLog + 1 : Self.accessLog) - Spawner.firstSlot }
}

enum Slots {
    /// The fds in slot order; the slots must run from `Spawner.firstSlot` without a gap.
    static func arrange(_ pairs: [(slot: Int32, fd: Int32)]) -> [Int32] {
        let sorted = pairs.sorted { $0.slot < $1.slot }
        precondition(sorted.enumerated().allSatisfy { $0.element.slot == Spawner.firstSlot + Int32($0.offset) }, "fd slots with a gap")
        return sorted.map(\.fd)
    }
}
