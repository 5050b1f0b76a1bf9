import Glibc

/// A set of networks (CIDR blocks) whose connections are trusted to say who the client is.
public struct Networks: Equatable, Sendable {
    package struct Block: Equatable {
        package var family: UInt8
        package var address: (UInt64, UInt64)
        package var prefix: Int
        package static func == (a: Block, b: Block) -> Bool {
            a.family == b.family && a.address.0 == b.address.0 && a.address.1 == b.address.1 && a.prefix == b.prefix
        }
    }

    package var blocks: [Block] = []

    public init() {}

    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a single host). Nil when any entry is invalid.
    public init?(_ entries: [String]) {
        for entry in entries {
            guard let block = Networks.block(entry) else { return nil }
            blocks.append(block)
        }
    }

    public var isEmpty: Bool { blocks.isEmpty }

    package static func block(_ text: String) -> Block? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let host = parts.first else { return nil }
        var v4 = in_addr()
        var v6 = in6_addr()
        let family: UInt8
        let address: (UInt64, UInt64)
        let bits: Int
        if inet_pton(AF_INET, String(host), &v4) == 1 {
            family = UInt8(AF_INET)
            address = (UInt64(v4.s_addr), 0)
            bits = 32
        } else if inet_pton(AF_INET6, String(host), &v6) == 1 {
            family = UInt8(AF_INET6)
            address = unsafeBitCast(v6, to: (UInt64, UInt64).self)
            bits = 128
        } else {
            return nil
        }
        var prefix = bits
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...bits).contains(value), parts[1].allSatisfy(\.isASCII) else { return nil }
            prefix = value
        }
        return Block(family: family, address: address, prefix: prefix)
    }

    /// Whether `address` lies in one of the blocks (an IPv4-mapped IPv6 address counts as IPv4). A peer
    /// on a Unix-domain socket does when `unixMatches` (for trusting proxies: who may connect there is
    /// decided by the socket file's owner and mode, which the configuration sets), and does not for
    /// access rules (it has no address to allow).
    public func contains(_ address: SocketAddress, unixMatches: Bool = true) -> Bool {
        if address.isUnix { return unixMatches }
        var address = address
        if address.family == UInt8(AF_INET6) && address.bytes.0 == 0 && address.bytes.1 & 0xFFFF_FFFF == 0xFFFF_0000 {
            address = SocketAddress(family: UInt8(AF_INET), port: address.port, bytes: (address.bytes.1 >> 32, 0))
        }
        for block in blocks where block.family == address.family {
            if Networks.matches(address.bytes, block.address, prefix: block.prefix) { return true }
        }
        return false
    }

    /// Compares the first `prefix` bits of two addresses in network byte order.
    package static func matches(_ a: (UInt64, UInt64), _ b: (UInt64, UInt64), prefix: Int) -> Bool {
        var left = a
        var right = b
        return withUnsafeBytes(of: &left) { first in
            withUnsafeBytes(of: &right) { second in
                var remaining = prefix
                var index = 0
                while remaining >= 8 {
                    if first[index] != second[index] { return false }
                    remaining -= 8
                    index += 1
                }
                if remaining == 0 { return true }
                let mask = UInt8(0xFF) << UInt8(8 - remaining)
                return first[index] & mask == second[index] & mask
            }
        }
    }
}
