import Glibc

/// The connections the kernel has already accepted on a listening socket and queued: what the
/// listener (when it stops) and the supervisor (just before it closes the sockets) take and hand to
/// the manager, so that a shutdown answers them instead of resetting them.
package enum ListeningBacklog {
    /// At most this many are taken in one sweep (a backlog is at most `backlog` deep per socket).
    package static let sweepLimit = 65_536

    /// One queued connection and its peer, or nil when none is left (or accepting fails now).
    package static func acceptOne(_ socket: Int32, peer: inout sockaddr_storage) -> (Int32, SocketAddress)? {
        while true {
            guard case .processed(let fd)? = try? Socket.accept(socket, peer: &peer) else { return nil }
            if let address = SocketAddress(storage: peer) { return (fd, address) }
            closeDescriptor(fd)
        }
    }
}
