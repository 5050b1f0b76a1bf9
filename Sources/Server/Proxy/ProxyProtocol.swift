import Glibc

/// The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a load balancer sends before the
/// client's bytes, saying whose connection it is passing on. Strict: on a socket configured for it the
/// header must be there, whole and valid; nothing is guessed.
///
/// One pass over the bytes, no allocation, no I/O; the worker peeks at the socket and reads exactly the
/// header's length once `parse` says it is complete, so what follows (an HTTP request, a TLS
/// ClientHello) stays in the socket for the next reader.
public enum ProxyProtocol {
    /// What the bytes at the start of a connection are.
    public enum Result: Equatable, Sendable {
        /// So far a valid prefix of a header; every byte seen belongs to it.
        case incomplete
        /// Not a PROXY header, or a malformed one: the connection is closed.
        case invalid
        /// A whole header of `length` bytes. `source` is the client's address, nil when the header
        /// carries none to use (v2 LOCAL, as health checks send; v1 UNKNOWN; v2 UNSPEC or a UNIX or UDP
        /// family): the connection's own peer then stands.
        case complete(length: Int, source: SocketAddress?)
    }

    /// The longest header accepted: v1's limit is 107 bytes; a v2 header with more than this much in
    /// TLVs is refused (HAProxy's own TLVs, SSL and unique-id included, stay well below it).
    public static let maximumLength = 4096
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v1Prefix: [UInt8] = Array("PROXY ".utf8)

    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Result {
        guard !bytes.isEmpty else { return .incomplete }
        if bytes[0] == 0x0D { return parseV2(bytes) }
        if bytes[0] == 0x50 { return parseV1(bytes) }
        return .invalid
    }

    /// `PROXY TCP4|TCP6 SRC DST SRCPORT DSTPORT\r\n` or `PROXY UNKNOWN...\r\n`, at most 107 bytes.
    static func parseV1(_ bytes: UnsafeRawBufferPointer) -> Result {
        let prefix = min(bytes.count, v1Prefix.count)
        for index in 0..<prefix where bytes[index] != v1Prefix[index] { return .invalid }
        var end = -1
        for index in 0..<min(bytes.count, 107) where bytes[index] == 0x0A {
            end = index
            break
        }
        if end < 0 { return bytes.count >= 107 ? .invalid : .incomplete }
        guard end >= 7, bytes[end - 1] == 0x0D else { return .invalid }
        // The words between "PROXY " and CRLF, separated by single spaces: at most five are read.
        var bounds = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  // six (start, end) pairs
        var count = 0
        var wordStart = 6
        for index in 6...(end - 1) where index == end - 1 || bytes[index] == 0x20 {
            if count < 6 {
                withUnsafeMutableBytes(of: &bounds) { $0.storeBytes(of: (wordStart, index), toByteOffset: count * 16, as: (Int, Int).self) }
            }
            count += 1
            wordStart = index + 1
        }
        func word(_ position: Int) -> UnsafeRawBufferPointer {
            let (first, last) = withUnsafeBytes(of: bounds) { $0.load(fromByteOffset: position * 16, as: (Int, Int).self) }
            return UnsafeRawBufferPointer(rebasing: bytes[first..<last])
        }
        let name = word(0)
        if equals(name, "UNKNOWN") { return .complete(length: end + 1, source: nil) }
        let isV4 = equals(name, "TCP4")
        guard isV4 || equals(name, "TCP6"), count == 5 else { return .invalid }
        let family = isV4 ? AF_INET : AF_INET6
        guard let source = address(word(1), family: family), address(word(2), family: family) != nil,
              let sourcePort = port(word(3)), port(word(4)) != nil
        else { return .invalid }
        var result = source
        result.port = sourcePort
        return .complete(length: end + 1, source: result)
    }

    static func equals(_ bytes: UnsafeRawBufferPointer, _ word: StaticString) -> Bool {
        guard bytes.count == word.utf8CodeUnitCount else { return false }
        for index in 0..<bytes.count where bytes[index] != word.utf8Start[index] { return false }
        return true
    }

    /// A v1 address: the literal only (no brackets, no zone), in the family the header named.
    static func address(_ text: UnsafeRawBufferPointer, family: Int32) -> SocketAddress? {
        guard !text.isEmpty, text.count <= 45 else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 48) { buffer -> SocketAddress? in
            for index in 0..<text.count {
                let byte = text[index]
                guard (byte >= 48 && byte <= 58) || (byte >= 97 && byte <= 102) || (byte >= 65 && byte <= 70) || byte == 46 else { return nil }
                buffer[index] = CChar(bitPattern: byte)
            }
            buffer[text.count] = 0
            if family == AF_INET {
                var v4 = in_addr()
                guard inet_pton(AF_INET, buffer.baseAddress!, &v4) == 1 else { return nil }
                return SocketAddress(family: UInt8(AF_INET), port: 0, bytes: (UInt64(v4.s_addr), 0))
            }
            var v6 = in6_addr()
            guard inet_pton(AF_INET6, buffer.baseAddress!, &v6) == 1 else { return nil }
            return SocketAddress(family: UInt8(AF_INET6), port: 0, bytes: unsafeBitCast(v6, to: (UInt64, UInt64).self))
        }
    }

    /// 0 to 65535 in decimal, no sign, no leading zero.
    static func port(_ text: UnsafeRawBufferPointer) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text[0] != 48 || text.count == 1 else { return nil }
        var value = 0
        for byte in text {
            guard byte >= 48 && byte <= 57 else { return nil }
            value = value * 10 + Int(byte - 48)
        }
        return value <= 65535 ? UInt16(value) : nil
    }

    /// The 12-byte signature, version 2 with command LOCAL or PROXY, a family, a length, the addresses,
    /// then TLVs (skipped).
    static func parseV2(_ bytes: UnsafeRawBufferPointer) -> Result {
        let prefix = min(bytes.count, 12)
        for index in 0..<prefix where bytes[index] != v2Signature[index] { return .invalid }
        guard bytes.count >= 13 else { return .incomplete }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2, versionCommand & 0x0F <= 1 else { return .invalid }
        guard bytes.count >= 16 else { return .incomplete }
        let family = bytes[13]
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard 16 + length <= maximumLength else { return .invalid }
        // The address block each family needs; a shorter length is malformed.
        let needed: Int
        switch family >> 4 {
        case 0: needed = 0  // AF_UNSPEC
        case 1: needed = 12  // AF_INET: two addresses, two ports
        case 2: needed = 36  // AF_INET6
        case 3: needed = 216  // AF_UNIX: two 108-byte paths
        default: return .invalid
        }
        guard family & 0x0F <= 2, length >= needed else { return .invalid }
        guard bytes.count >= 16 + length else { return .incomplete }
        // LOCAL: the proxy's own connection (a health check); addresses, if any, are ignored.
        guard versionCommand & 0x0F == 1, family & 0x0F == 1 else { return .complete(length: 16 + length, source: nil) }
        switch family >> 4 {
        case 1:
            let address = UInt64(bytes.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
            let port = UInt16(bytes[24]) << 8 | UInt16(bytes[25])
            return .complete(length: 16 + length, source: SocketAddress(family: UInt8(AF_INET), port: port, bytes: (address, 0)))
        case 2:
            let high = bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
            let low = bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
            let port = UInt16(bytes[48]) << 8 | UInt16(bytes[49])
            return .complete(length: 16 + length, source: SocketAddress(family: UInt8(AF_INET6), port: port, bytes: (high, low)))
        default:
            return .complete(length: 16 + length, source: nil)
        }
    }
}
