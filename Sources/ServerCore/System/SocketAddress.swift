import Glibc
package import CSystemShims

/// An IPv4 or IPv6 address with a port, in a fixed 20-byte layout that travels in IPC messages.
///
/// IPv4 addresses occupy the first 4 bytes of `bytes`. Parsing accepts `1.2.3.4:80`, `[::1]:80`,
/// `*:80` and `:80` (all IPv4 addresses).
public struct SocketAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// `AF_INET` or `AF_INET6`.
    public var family: UInt8
    /// Port in host byte order.
    public var port: UInt16
    /// Address bytes in network order; 4 used for IPv4, 16 for IPv6.
    public var bytes: (UInt64, UInt64)

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.family == b.family && a.port == b.port && a.bytes.0 == b.bytes.0 && a.bytes.1 == b.bytes.1
    }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(family)
        hasher.combine(port)
        hasher.combine(bytes.0)
        hasher.combine(bytes.1)
    }

    public init(family: UInt8, port: UInt16, bytes: (UInt64, UInt64)) {
        self.family = family
        self.port = port
        self.bytes = bytes
    }

    /// Parses `HOST:PORT` where HOST is an IPv4 literal, `[IPv6]`, `*` or empty. Returns nil when invalid.
    public init?(parsing text: String) {
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
            guard !host.isEmpty else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
            if host.isEmpty || host == "*" { host = "0.0.0.0" }
        }
        guard let port = Int(portText), (0...65535).contains(port), portText.allSatisfy(\.isASCII) else {
            return nil
        }
        var v6 = in6_addr()
        var v4 = in_addr()
        if text.hasPrefix("[") {
            guard inet_pton(AF_INET6, String(host), &v6) == 1 else { return nil }
            self.init(family: UInt8(AF_INET6), port: UInt16(port), bytes: unsafeBitCast(v6, to: (UInt64, UInt64).self))
        } else {
            guard inet_pton(AF_INET, String(host), &v4) == 1 else { return nil }
            self.init(family: UInt8(AF_INET), port: UInt16(port), bytes: (UInt64(v4.s_addr), 0))
        }
    }

    /// Reads a kernel `sockaddr_storage`; nil for families other than IPv4 and IPv6.
    package init?(storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let address = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            self.init(family: UInt8(AF_INET), port: UInt16(bigEndian: address.sin_port),
                      bytes: (UInt64(address.sin_addr.s_addr), 0))
        case AF_INET6:
            let address = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            self.init(family: UInt8(AF_INET6), port: UInt16(bigEndian: address.sin6_port),
                      bytes: unsafeBitCast(address.sin6_addr, to: (UInt64, UInt64).self))
        case AF_UNIX:
            // A peer on a Unix-domain socket: no address to speak of.
            self.init(family: UInt8(AF_UNIX), port: 0, bytes: (0, 0))
        default:
            return nil
        }
    }

    /// A peer that came in on a Unix-domain socket.
    public var isUnix: Bool { family == UInt8(AF_UNIX) }

    /// Calls `body` with this address as a kernel `sockaddr` and its length.
    package func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(SystemError) -> R) throws(SystemError) -> R {
        if family == UInt8(AF_INET) {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = UInt32(truncatingIfNeeded: bytes.0)
            return try withUnsafePointer(to: &address) { (pointer) throws(SystemError) -> R in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (raw) throws(SystemError) -> R in
                    try body(raw, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        } else {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            address.sin6_addr = unsafeBitCast(bytes, to: in6_addr.self)
            return try withUnsafePointer(to: &address) { (pointer) throws(SystemError) -> R in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (raw) throws(SystemError) -> R in
                    try body(raw, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }

    /// Writes the host part as text (`127.0.0.1`, `::1`) into `buffer`; returns the byte count.
    package func formatHost(into buffer: UnsafeMutablePointer<CChar>, capacity: Int) -> Int {
        if isUnix {
            let text: StaticString = "unix:"
            guard capacity > 5 else { return 0 }
            for index in 0..<5 { buffer[index] = CChar(bitPattern: text.utf8Start[index]) }
            buffer[5] = 0
            return 5
        }
        var copy = bytes
        let family = Int32(self.family)
        let result = withUnsafePointer(to: &copy) { pointer in
            inet_ntop(family, UnsafeRawPointer(pointer), buffer, socklen_t(capacity))
        }
        return result == nil ? 0 : strlen(buffer)
    }

    /// The host as text, for logs and messages (not the hot path).
    public var hostText: String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
            let count = formatHost(into: buffer.baseAddress!, capacity: 64)
            return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress, count: count), as: UTF8.self)
        }
    }

    public var description: String {
        family == UInt8(AF_INET6) ? "[\(hostText)]:\(port)" : "\(hostText):\(port)"
    }
}
