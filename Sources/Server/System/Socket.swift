import CSystemShims
import Glibc

/// Socket calls, one wrapper each.
enum Socket {
    /// Creates a listening TCP socket bound to `address`, non-blocking and close-on-exec.
    ///
    /// The caller owns the returned fd. IPv6 sockets are IPv6-only so `[::]:80` and `0.0.0.0:80` can coexist.
    static func listen(on address: SocketAddress, backlog: Int32) throws(SystemError) -> Int32 {
        let fd = try syscall("socket") {
            Glibc.socket(Int32(address.family), Int32(SOCK_STREAM.rawValue) | cs_SOCK_NONBLOCK | cs_SOCK_CLOEXEC, 0)
        }
        do {
            var on: Int32 = 1
            try syscall("setsockopt(SO_REUSEADDR)") {
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
            }
            if address.family == UInt8(AF_INET6) {
                try syscall("setsockopt(IPV6_V6ONLY)") {
                    setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &on, socklen_t(MemoryLayout<Int32>.size))
                }
            }
            _ = try address.withSockaddr { (pointer, length) throws(SystemError) in
                try syscall("bind(\(address))") { Glibc.bind(fd, pointer, length) }
            }
            try syscall("listen") { Glibc.listen(fd, backlog) }
            return fd
        } catch {
            closeDescriptor(fd)
            throw error
        }
    }

    /// The address a bound socket actually has (the port the kernel chose for port 0).
    static func localAddress(of fd: Int32) throws(SystemError) -> SocketAddress? {
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
    static func accept(
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
    static func seqpacketPair(nonBlocking: Bool = true) throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let flags = Int32(SOCK_SEQPACKET.rawValue) | cs_SOCK_CLOEXEC | (nonBlocking ? cs_SOCK_NONBLOCK : 0)
        try syscall("socketpair") { socketpair(AF_UNIX, flags, 0, &fds) }
        return (fds[0], fds[1])
    }

    /// Sets `O_NONBLOCK` on an fd received from another process.
    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 && flags & cs_O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, flags | cs_O_NONBLOCK) }
    }

    /// Sets TCP_DEFER_ACCEPT: accept4 returns a connection only once data has arrived on it, or after
    /// about `seconds` (the kernel then resends its SYN-ACK and accepts on the client's next ACK).
    static func setDeferAccept(_ fd: Int32, seconds: Int32) throws(SystemError) {
        var value = seconds
        try syscall("setsockopt(TCP_DEFER_ACCEPT)") {
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// Sets TCP_NODELAY so response heads are not held back by Nagle's algorithm.
    static func setNoDelay(_ fd: Int32) {
        var on: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
    }
}
