/// The processes below the supervisor, each started with `--role=ROLE`: the listener and the manager
/// from webserver-core, the worker and the ACME process from webserver (`Executables`).
public enum Role: String, Sendable, CaseIterable {
    case listener
    case manager
    case worker
    /// Gets and renews the certificates of the sites with `acme` (started only when there are some).
    case acme

    /// What `ps` shows (argv[0]).
    package var displayName: String { "webserver: \(rawValue)" }
    /// The kernel's 15-byte name (`comm`, PR_SET_NAME), for top and pidstat.
    package var processName: String { "ws-\(rawValue)" }
}

/// The fd slots a role is started with, defined once, as an enum whose raw values are the slots (3, 4,
/// ... in order, so there can be no gap): the parent builds the list of fds it passes with `arrange`,
/// and the child finds each one at its slot and keeps the slots `kept` says (everything above is
/// closed). Slot 3 is the first (`Spawner.firstSlot`).
package protocol FdSlots: RawRepresentable<Int32>, CaseIterable, Hashable {}

extension FdSlots {
    /// The descriptor number in the child.
    package var fd: Int32 { rawValue }

    /// The fds a parent passes, in slot order: one for each slot named, from the first without a gap,
    /// then `more` (the listening sockets).
    package static func arrange(_ given: [(slot: Self, fd: Int32)], then more: [Int32] = []) -> [Int32] {
        let sorted = given.sorted { $0.slot.rawValue < $1.slot.rawValue }
        precondition(sorted.enumerated().allSatisfy { $0.element.slot.rawValue == Spawner.firstSlot + Int32($0.offset) }, "fd slots with a gap")
        return sorted.map(\.fd) + more
    }

    /// How many slots a child keeps: through `last`, and `extra` after it.
    package static func kept(through last: Self, extra: Int = 0) -> Int32 { last.rawValue - Spawner.firstSlot + 1 + Int32(extra) }
}

package enum ListenerSlot: Int32, FdSlots {
    /// Its channel to the supervisor.
    case supervisor = 3
    /// The send end of the listener→manager channel.
    case connections
    /// The receive end of the release channel (workers' close notices).
    case release
    /// The configuration memfd.
    case config
    /// The admission counts every listener shares (`Admissions`).
    case admissions
    /// This listener's listening sockets from here on: its copy of each `listen` then `tls.listen`
    /// entry (Unix-domain sockets with listener 0 only).
    case firstSocket
}

package enum ManagerSlot: Int32, FdSlots {
    /// Its channel to the supervisor.
    case supervisor = 3
    /// The receive end of the listener→manager channel.
    case connections
    /// The configuration memfd.
    case config
    /// The server's executable (O_PATH), which workers are started from (the manager itself may run from
    /// webserver-core).
    case server
    /// The access log, when there is one. After the last slot: the workers' end of each listener's
    /// release channel, passed on to every worker (and written only to say a worker is gone).
    case accessLog

    /// Where the release channels start.
    package static func firstRelease(hasAccessLog: Bool) -> Int32 { (hasAccessLog ? accessLog : server).fd + 1 }
}

package enum WorkerSlot: Int32, FdSlots {
    /// Its channel to the manager (control, heartbeats and stats).
    case manager = 3
    /// The receive end of its connection channel: batches from the listeners (and the manager's wait
    /// queue). It reads end-of-file once every sender has closed its end.
    case connections
    /// The configuration memfd.
    case config
    /// The access log, when there is one. After the last slot: the workers' end of each listener's
    /// release channel, in listener order.
    case accessLog

    /// Where the release channels start.
    package static func firstRelease(hasAccessLog: Bool) -> Int32 { (hasAccessLog ? accessLog : config).fd + 1 }
}

package enum AcmeSlot: Int32, FdSlots {
    /// Its channel to the supervisor.
    case supervisor = 3
    /// The configuration memfd.
    case config
}
