package import CSystemShims
import Glibc

/// Socket calls, one wrapper each.
package enum Socket {
    /// Calls `body` with `path` as a Unix-domain `sockaddr` and its length (`@name` is an abstract
    /// socket); nil when the path does not fit.
    package static func withUnixAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        if bytes[0] == 64 { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes[0] == 0 ? 0 : 1))
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }

    /// Takes over a listening socket another process bound (systemd, an upgrading supervisor):
    /// close-on-exec and non-blocking like the ones bound here.
    package static func adopt(_ fd: Int32) {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        setNonBlocking(fd)
    }

    /// A listening Unix-domain stream socket at `path`, non-blocking and close-on-exec: a stale socket
    /// file left by a crash is replaced (anything else at the path is an error), and the file gets `mode`
    /// and, when given, `owner`/`group` (names) before anyone can connect.
    package static func listenUnix(path: String, backlog: Int32, mode: Int, owner: String?, group: String?) throws(SystemError) -> Int32 {
        guard withUnixAddress(path, { _, _ in true }) != nil else { throw SystemError(call: "bind(\(path)): path too long", errno: ENAMETOOLONG) }
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else { throw SystemError(call: "bind(\(path)): not a socket", errno: EEXIST) }
            // Someone still listening there is another server, not a leftover: refuse, as for a busy port.
            let probe = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | cs_SOCK_CLOEXEC, 0)
            let live = withUnixAddress(path) { Glibc.connect(probe, $0, $1) } == 0
            closeDescriptor(probe)
            if live { throw SystemError(call: "bind(\(path))", errno: EADDRINUSE) }
            unlink(path)
        }
        let fd = try syscall("socket(AF_UNIX)") { Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | cs_SOCK_NONBLOCK | cs_SOCK_CLOEXEC, 0) }
        do throws(SystemError) {
            try syscall("bind(\(path))") { withUnixAddress(path) { Glibc.bind(fd, $0, $1) } ?? -1 }
            try syscall("chmod(\(path))") { chmod(path, mode_t(mode)) }
            if owner != nil || group != nil {
                let uid = owner.flatMap { getpwnam($0)?.pointee.pw_uid } ?? UInt32.max
                let gid = group.flatMap { getgrnam($0)?.pointee.gr_gid } ?? UInt32.max
                if (owner != nil && uid == .max) || (group != nil && gid == .max) {
                    throw SystemError(call: "chown(\(path)): no such user or group \(owner ?? ""):\(group ?? "")", errno: EINVAL)
                }
                try syscall("chown(\(path))") { chown(path, uid, gid) }
            }
            try syscall("listen(\(path))") { Glibc.listen(fd, backlog) }
        } catch {
            closeDescriptor(fd)
            throw error
        }
        return fd
    }

    /// The path a Unix-domain socket is bound to, or nil for any other socket.
    package static func unixPath(of fd: Int32) -> String? {
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let result = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard result == 0, Int32(address.sun_family) == AF_UNIX else { return nil }
        return withUnsafeBytes(of: &address.sun_path) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
        }
    }

    /// Creates a listening TCP socket bound to `address`, non-blocking and close-on-exec.
    ///
    /// The caller owns the returned fd. IPv6 sockets are IPv6-only so `[::]:80` and `0.0.0.0:80` can coexist.
    /// SO_REUSEPORT for the listeners' copies of a socket: the kernel spreads new connections over
    /// sockets of one user bound to the same address.
    package enum ReusePort {
        case no
        /// The first of a group: bound without it, so an address anyone holds already (another server
        /// with SO_REUSEPORT too) is "in use", then set before `listen` so the copies can join.
        case first
        /// A copy joining the first.
        case join
    }

    package static func listen(on address: SocketAddress, backlog: Int32, reusePort: ReusePort = .no) throws(SystemError) -> Int32 {
        let fd = try syscall("socket") {
            Glibc.socket(Int32(address.family), Int32(SOCK_STREAM.rawValue) | cs_SOCK_NONBLOCK | cs_SOCK_CLOEXEC, 0)
        }
        do {
            var on: Int32 = 1
            try syscall("setsockopt(SO_REUSEADDR)") {
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
            }
            func setReusePort() throws(SystemError) {
                try syscall("setsockopt(SO_REUSEPORT)") {
                    setsockopt(fd, SOL_SOCKET, cs_SO_REUSEPORT, &on, socklen_t(MemoryLayout<Int32>.size))
                }
            }
            if reusePort == .join { try setReusePort() }
            if address.family == UInt8(AF_INET6) {
                try syscall("setsockopt(IPV6_V6ONLY)") {
                    setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &on, socklen_t(MemoryLayout<Int32>.size))
                }
            }
            _ = try address.withSockaddr { (pointer, length) throws(SystemError) in
                try syscall("bind(\(address))") { Glibc.bind(fd, pointer, length) }
            }
            if reusePort == .first { try setReusePort() }
            try syscall("listen") { Glibc.listen(fd, backlog) }
            return fd
        } catch {
            closeDescriptor(fd)
            throw error
        }
    }

    /// Whether SO_REUSEPORT is set on `fd` (a socket systemd or an upgrading server passed).
    package static func reusesPort(_ fd: Int32) -> Bool {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, cs_SO_REUSEPORT, &value, &length) == 0 && value != 0
    }

    /// The address a bound socket actually has (the port the kernel chose for port 0).
    package static func localAddress(of fd: Int32) throws(SystemError) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { (pointer) throws(SystemError) in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (raw) throws(SystemError) in
                try syscall("getsockname") { getsockname(fd, raw, &length) }
            }
        }
        return SocketAddress(storage: storage)
    }

    /// Accepts one connection, non-blocking and close-on-exec, with its peer address.
    @inline(never)
    package static func accept(
        _ fd: Int32, peer: inout sockaddr_storage
    ) throws(SystemError) -> IOResult<Int32> {
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return try nonBlockingSyscall("accept4") {
            withUnsafeMutablePointer(to: &peer) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                    cs_accept4(fd, raw, &length, cs_SOCK_NONBLOCK | cs_SOCK_CLOEXEC)
                }
            }
        }
    }

    /// A connected pair of SOCK_SEQPACKET sockets, close-on-exec; the caller owns both.
    package static func seqpacketPair(nonBlocking: Bool = true) throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let flags = Int32(SOCK_SEQPACKET.rawValue) | cs_SOCK_CLOEXEC | (nonBlocking ? cs_SOCK_NONBLOCK : 0)
        try syscall("socketpair") { socketpair(AF_UNIX, flags, 0, &fds) }
        return (fds[0], fds[1])
    }

    /// Sets `O_NONBLOCK` on an fd received from another process.
    package static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 && flags & cs_O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, flags | cs_O_NONBLOCK) }
    }

    /// Sets TCP_DEFER_ACCEPT: accept4 returns a connection only once data has arrived on it, or after
    /// about `seconds` (the kernel then resends its SYN-ACK and accepts on the client's next ACK).
    package static func setDeferAccept(_ fd: Int32, seconds: Int32) throws(SystemError) {
        var value = seconds
        try syscall("setsockopt(TCP_DEFER_ACCEPT)") {
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// Sets TCP_NOTSENT_LOWAT (`bytes`, or 0 for the kernel's default, no limit) on a TCP socket; a
    /// listening socket passes it on to the connections it accepts.
    package static func setNotSentLowat(_ fd: Int32, bytes: Int) throws(SystemError) {
        var value = UInt32(bytes)
        try syscall("setsockopt(TCP_NOTSENT_LOWAT)") {
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NOTSENT_LOWAT, &value, socklen_t(MemoryLayout<UInt32>.size))
        }
    }

    /// Sets TCP_NODELAY so response heads are not held back by Nagle's algorithm.
    package static func setNoDelay(_ fd: Int32) {
        var on: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
    }
}
