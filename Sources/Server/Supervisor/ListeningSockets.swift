import CSystemShims
import Glibc

/// Every listening socket, bound once by the supervisor before it drops privileges (or taken over from
/// systemd's socket activation or an upgrading server) and kept for the server's life, so a crashed
/// listener loses nothing: the kernel's backlog holds new connections until the next one starts.
///
/// Owns the sockets: `fds` in `allListen` order (plain, then TLS), which is also the order listeners
/// number them in, and with several listeners (`listeners`) each further listener's copy of every TCP
/// socket (`copies`): the same address bound again with SO_REUSEPORT, so the kernel keeps an accept
/// queue per listener, and a classic BPF program on each group choosing the copy by the client's
/// address alone. Closed when nothing accepts any more (shutdown) or at exit.
final class ListeningSockets {
    private(set) var fds: [Int32] = []
    /// Listener i's copies (i ≥ 1) at `copies[i - 1]`, one per TCP entry, in `allListen` order.
    private(set) var copies: [[Int32]] = []
    /// The `allListen` index of each TCP entry (what a copy's connections say they came in on).
    private(set) var tcpIndexes: [Int] = []
    /// The listener processes the sockets are made for: `listeners`, or 1 when the copies could not
    /// be made (a socket passed without SO_REUSEPORT), with the warning `announce` logs.
    private(set) var listenerCount = 1
    private var copyWarning: String?

    /// Listener `index`'s sockets, in the order its `socketIDs` names them.
    func fds(forListener index: Int) -> [Int32] { index == 0 ? fds : copies[index - 1] }

    /// Every socket, copies included (what an upgrade passes on, what a shutdown sweeps).
    var everyFD: [Int32] { fds + copies.joined() }
    /// IPv6 loopback and any-address entries left out because this machine has no IPv6 (`usable`),
    /// with the warning `announce` logs once the error log is open.
    private(set) var skipped: [String: String] = [:]

    /// Binds (or adopts) a socket for every `listen` and `tls.listen` entry. `passed` are sockets
    /// systemd or an upgrading server handed over: each is matched to an entry like socket activation
    /// (by address, a port-0 entry taking the socket bound for it; Unix sockets by path) and used instead
    /// of binding; any left over is closed with a warning.
    func open(_ config: ServerConfig, passed passedFDs: [Int32], fromUpgrade: Bool) throws {
        let wanted = config.listenerCount
        var passedUnix: [(fd: Int32, path: String)] = []
        var passed = passedFDs.compactMap { fd -> (fd: Int32, address: SocketAddress)? in
            if let path = Socket.unixPath(of: fd) {
                passedUnix.append((fd, path))
                return nil
            }
            guard let address = try? Socket.localAddress(of: fd) else {
                log.warning("socket activation: fd \(fd) is not a TCP socket; closed")
                closeDescriptor(fd)
                return nil
            }
            return (fd, address)
        }
        for socket in config.allListen {
            if let path = socket.unixPath {
                if let index = passedUnix.firstIndex(where: { $0.path == path }) {
                    let fd = passedUnix.remove(at: index).fd
                    Socket.adopt(fd)
                    fds.append(fd)
                } else {
                    fds.append(try Socket.listenUnix(
                        path: path, backlog: Int32(config.backlog), mode: socket.mode, owner: socket.owner, group: socket.group))
                }
                continue
            }
            guard let address = SocketAddress(parsing: socket.address) else { continue }
            let fd: Int32
            if let index = passed.firstIndex(where: { ListeningSockets.sameSocket($0.address, address) }) {
                // Passed by systemd (socket activation) or the server before an upgrade: bound and listening.
                fd = passed.remove(at: index).fd
                Socket.adopt(fd)
                log.info("\(fromUpgrade ? "upgrade" : "socket activation"): using the socket passed for \(socket.address)")
                if wanted > 1 && !Socket.reusesPort(fd) && copyWarning == nil {
                    copyWarning = "listeners: \(wanted) needs SO_REUSEPORT on every TCP socket, and the one passed for \(socket.address) has none"
                        + (fromUpgrade ? " (the server before the upgrade ran one listener)" : " (systemd: ReusePort=yes)") + "; running one listener"
                }
            } else {
                do {
                    fd = try Socket.listen(on: address, backlog: Int32(config.backlog), reusePort: wanted > 1 ? .first : .no)
                } catch {
                    // The shipped configuration listens on [::1] beside 127.0.0.1 (browsers try ::1
                    // first for local names); a machine or container without IPv6 serves on the rest.
                    if ListeningSockets.isIPv6LoopbackOrAny(address), error.errno == EADDRNOTAVAIL || error.errno == EAFNOSUPPORT,
                        config.allListen.count > skipped.count + 1 {
                        skipped[socket.address] =
                            "\(socket.address) (\(socket.origin ?? "listen")) left out: this machine has no IPv6 (\(String(cString: strerror(error.errno)))); serving on the other addresses"
                        continue
                    }
                    // Which line asked for it: the file's, or a flag.
                    throw SystemError(call: "bind \(socket.address) (\(socket.origin ?? "listen"))", errno: error.errno)
                }
            }
            try ListeningSockets.configure(fd, config)
            tcpIndexes.append(fds.count)
            fds.append(fd)
        }
        if wanted > 1 && copyWarning == nil { try makeCopies(config, count: wanted, passed: &passed) }
        for (fd, address) in passed {
            log.warning("socket activation: the socket for \(address) is not in listen or tls.listen; closed")
            closeDescriptor(fd)
        }
        for (fd, path) in passedUnix {
            log.warning("socket activation: the socket unix:\(path) is not in listen or tls.listen; closed")
            closeDescriptor(fd)
        }
    }

    /// The options every TCP listening socket gets; accepted sockets inherit TCP_NODELAY and
    /// TCP_NOTSENT_LOWAT.
    static func configure(_ fd: Int32, _ config: ServerConfig) throws {
        Socket.setNoDelay(fd)
        try Socket.setNotSentLowat(fd, bytes: config.notSentLowat)
        if config.deferAcceptMilliseconds > 0 {
            try Socket.setDeferAccept(fd, seconds: Int32((config.deferAcceptMilliseconds + 999) / 1000))
        }
    }

    /// Listeners 1...count-1's copies of each TCP socket: the ones an upgrading server passed for the
    /// same address, else bound now beside the first (SO_REUSEPORT, on the port it has). Then each
    /// group gets the program that sends one client address to one copy. A copy that cannot be bound
    /// leaves the server with one listener and a warning, never without its sockets.
    func makeCopies(_ config: ServerConfig, count: Int, passed: inout [(fd: Int32, address: SocketAddress)]) throws {
        var made: [[Int32]] = Array(repeating: [], count: count - 1)
        for index in tcpIndexes {
            guard let address = try Socket.localAddress(of: fds[index]) else { continue }
            for copy in 1..<count {
                if let found = passed.firstIndex(where: { $0.address == address }) {
                    let fd = passed.remove(at: found).fd
                    Socket.adopt(fd)
                    try ListeningSockets.configure(fd, config)
                    made[copy - 1].append(fd)
                    continue
                }
                do {
                    let fd = try Socket.listen(on: address, backlog: Int32(config.backlog), reusePort: .join)
                    try ListeningSockets.configure(fd, config)
                    made[copy - 1].append(fd)
                } catch {
                    for fd in made.joined() { closeDescriptor(fd) }
                    copyWarning = "listeners: \(count): cannot bind another socket on \(address) (\(error)); running one listener"
                    return
                }
            }
            if cs_attach_reuseport_address_hash(fds[index], UInt32(count)) != 0 {
                log.warning("listeners: cannot attach the address hash to \(address)'s sockets (\(String(cString: strerror(errno)))): the kernel spreads connections by their ports, and limits.connections_per_ip counts per listener")
            }
        }
        copies = made
        listenerCount = count
    }

    /// `config` with the number of listeners the sockets were made for, so every process agrees on it.
    func listening(_ config: ServerConfig) -> ServerConfig {
        var config = config
        config.listeners = listenerCount
        return config
    }

    /// `config` without the entries `open` left out, so that `fds` and `allListen` stay in step for
    /// every process; applied to a reloaded file too, which names them again.
    func usable(_ config: ServerConfig) -> ServerConfig {
        guard !skipped.isEmpty else { return config }
        var config = config
        config.listen.removeAll { skipped[$0.address] != nil }
        config.tls.listen.removeAll { skipped[$0.address] != nil }
        return config
    }

    static func isIPv6LoopbackOrAny(_ address: SocketAddress) -> Bool {
        guard address.family == UInt8(AF_INET6) else { return false }
        // In network order: :: is all zeros, ::1 ends in the byte 1.
        return address.bytes.0 == 0 && (address.bytes.1 == 0 || address.bytes.1 == UInt64(bigEndian: 1))
    }

    /// Says where the server listens (with the ports the kernel chose for port 0).
    func announce(_ config: ServerConfig) throws {
        for warning in skipped.values.sorted() { log.warning("\(warning)") }
        if let copyWarning { log.warning("\(copyWarning)") }
        if listenerCount > 1 { log.notice("\(listenerCount) listeners, each with its own copy of the TCP sockets (SO_REUSEPORT, one client address to one listener)") }
        for (index, fd) in fds.enumerated() {
            let scheme = index < config.listen.count ? "http" : "https"
            if let path = config.allListen[index].unixPath {
                log.notice("listening on \(scheme)+unix://\(path)")
            } else if let bound = try Socket.localAddress(of: fd) {
                log.notice("listening on \(scheme)://\(bound)")
            }
        }
    }

    /// `config` with what only binding tells: the port of the first TLS socket (for HTTP-to-HTTPS
    /// redirects, when the configuration said port 0).
    func bound(_ config: ServerConfig) -> ServerConfig {
        var config = config
        let first = config.listen.count
        if first < fds.count, let address = try? Socket.localAddress(of: fds[first]) {
            config.tls.redirectPort = Int(address.port)
        }
        return config
    }

    /// Sets a new `notsent_lowat` on the TCP sockets: connections accepted from now on inherit it; open
    /// ones keep theirs.
    func setNotSentLowat(_ bytes: Int) {
        for fd in everyFD where Socket.unixPath(of: fd) == nil {
            do { try Socket.setNotSentLowat(fd, bytes: bytes) } catch {
                log.warning("reload: \(error); new connections keep the previous notsent_lowat")
            }
        }
    }

    /// At the start of a shutdown: connections stop waiting in the kernel for their first bytes
    /// (`defer_accept`). Such a connection is established for its client but is not in the accept
    /// queue until data comes, so no sweep could take it and the close would reset it; from now on a
    /// new one is queued at once, and one already waiting is queued when its request arrives (usually
    /// the next instant), in time for the sweeps before the close.
    func stopDeferringAccept() {
        for fd in everyFD where Socket.unixPath(of: fd) == nil { try? Socket.setDeferAccept(fd, seconds: 0) }
    }

    /// Takes the connections the kernel queued on the sockets while no listener runs and sends them to
    /// the manager over the listener's end of their channel (`channelFD`, which the supervisor keeps);
    /// returns how many went. With `thenClose`, each socket is closed the moment an accept finds its
    /// queue empty, and only then are the connections sent: one the kernel completes between that accept
    /// and the close is reset, and that window is kept to the two system calls. (A socket filter could
    /// shut it, but attaching one needs privileges the server has given up; `timeouts.shutdown_delay`
    /// with a balancer's health checks sends nobody there in the first place.)
    func handOverBacklog(through channelFD: Int32, thenClose: Bool) -> Int {
        var peer = sockaddr_storage()
        var taken: [(fd: Int32, info: ConnectionInfo)] = []
        let sockets = Array(fds.enumerated()) + copies.flatMap { zip(tcpIndexes, $0) }
        for (index, socket) in sockets {
            while let (fd, address) = ListeningBacklog.acceptOne(socket, peer: &peer) {
                taken.append((fd, ConnectionInfo(listenerID: UInt16(index), peer: address)))
            }
            if thenClose { closeDescriptor(socket) }
        }
        if thenClose {
            fds = []
            copies = copies.map { _ in [] }
        }
        guard !taken.isEmpty else { return 0 }
        let copy = fcntl(channelFD, F_DUPFD_CLOEXEC, 0)
        let channel = copy >= 0 ? Channel(fd: copy) : nil
        defer { channel?.close() }
        var sent = 0
        for start in stride(from: 0, to: taken.count, by: Message.maxBatch) {
            let batch = taken[start..<min(start + Message.maxBatch, taken.count)]
            let fds = batch.map(\.fd)
            let went = fds.withUnsafeBufferPointer { (try? channel?.send(.connections(batch.map(\.info)), fds: $0)) ?? false }
            if went { sent += fds.count } else { log.warning("shutdown: the manager could not take \(fds.count) queued connections; closed") }
            for fd in fds { closeDescriptor(fd) }
        }
        return sent
    }

    /// Closes every socket: nothing accepts any more, so clients are refused rather than left in a
    /// backlog nobody reads.
    func close() {
        for fd in everyFD { closeDescriptor(fd) }
        fds = []
        copies = copies.map { _ in [] }
    }

    /// Removes the Unix socket files (at stop; after an upgrade they are the new server's).
    static func removeFiles(_ config: ServerConfig) {
        for socket in config.allListen { if let path = socket.unixPath { unlink(path) } }
    }

    /// Whether a socket passed by systemd or an upgrading supervisor is the one `listen` names (a
    /// `*:PORT` entry also takes an IPv6 any-address socket on that port, which is what
    /// `ListenStream=PORT` makes; a port-0 entry takes a socket on any port of its address).
    static func sameSocket(_ passed: SocketAddress, _ wanted: SocketAddress) -> Bool {
        if passed == wanted { return true }
        // Port 0 asks for any port: the socket bound for it earlier (an upgrade hands it over) is it.
        if wanted.port == 0 && passed.family == wanted.family && passed.bytes == wanted.bytes { return true }
        let wildcard = wanted.family == UInt8(AF_INET) && wanted.bytes.0 == 0
        return wildcard && passed.family == UInt8(AF_INET6) && passed.bytes == (0, 0) && passed.port == wanted.port
    }
}
