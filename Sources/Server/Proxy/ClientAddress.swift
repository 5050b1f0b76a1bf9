import Glibc

/// Who the client is when a trusted proxy stands between: the right-most hop of X-Forwarded-For (or
/// Forwarded, RFC 7239) that is not itself a trusted proxy. Each proxy appends the address it received
/// the request from, so hops to the right of the first untrusted one were written by proxies we trust,
/// and anything to its left was written by someone we do not.
public enum ClientAddress {
    /// Which header carries the chain (`proxy.forwarded_header`).
    public typealias Header = ForwardedHeader

    /// At most this many hops are read from the right; a longer chain stops at the last one read.
    static let maximumHops = 32

    /// The client's address for a request on a connection from `peer`: `peer` itself unless `peer` is
    /// trusted and the header names hops.
    public static func resolve(
        _ bytes: UnsafeRawBufferPointer, _ head: RequestHead, peer: SocketAddress, trusted: Networks, header: Header
    ) -> SocketAddress {
        let span: ByteSpan
        let name: StaticString
        switch header {
        case .xForwardedFor:
            span = head.forwardedFor
            name = "x-forwarded-for"
        case .forwarded:
            span = head.forwarded
            name = "forwarded"
        case .none:
            return peer
        }
        guard !span.isEmpty, !trusted.isEmpty, trusted.contains(peer) else { return peer }
        let spans = head.repeatedForwarding ? RequestParser.fieldValues(bytes, headLength: head.headLength, name: name) : [span]
        return withUnsafeTemporaryAllocation(of: SocketAddress?.self, capacity: maximumHops) { hops in
            // Lines in order form one list; keep the last `maximumHops` elements.
            var count = 0
            var total = 0
            for line in spans {
                forEachElement(bytes, line) { start, end in
                    let address = header == .forwarded ? forwardedFor(bytes, start, end) : parseHop(bytes, start, end)
                    hops[total % maximumHops] = address
                    total += 1
                    count = min(count + 1, maximumHops)
                }
            }
            var client = peer
            for back in 0..<count {
                guard let hop = hops[(total - 1 - back) % maximumHops] else { return client }  // "unknown", obfuscated, garbage
                client = hop
                if !trusted.contains(hop) { return hop }
            }
            return client
        }
    }

    /// Calls `body` with each comma-separated element's bounds (outside quoted strings), trimmed.
    static func forEachElement(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan, _ body: (Int, Int) -> Void) {
        var start = span.start
        var quoted = false
        var index = span.start
        while index <= span.end {
            if index < span.end && bytes[index] == 34 { quoted.toggle() }
            if index == span.end || (!quoted && bytes[index] == 44) {
                var first = start
                var last = index
                while first < last, bytes[first] == 32 || bytes[first] == 9 { first += 1 }
                while last > first, bytes[last - 1] == 32 || bytes[last - 1] == 9 { last -= 1 }
                if first < last { body(first, last) }
                start = index + 1
            }
            index += 1
        }
    }

    /// The `for=` parameter of one Forwarded element (`for=192.0.2.1;proto=https`), its value a token or
    /// a quoted string (`for="[2001:db8::1]:4711"`).
    static func forwardedFor(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> SocketAddress? {
        var index = start
        while index < end {
            var pairEnd = index
            var quoted = false
            while pairEnd < end {
                if bytes[pairEnd] == 34 { quoted.toggle() }
                if !quoted && bytes[pairEnd] == 59 { break }
                pairEnd += 1
            }
            var first = index
            while first < pairEnd, bytes[first] == 32 || bytes[first] == 9 { first += 1 }
            if pairEnd - first > 4, bytes[first] | 0x20 == 102, bytes[first + 1] | 0x20 == 111, bytes[first + 2] | 0x20 == 114,
               bytes[first + 3] == 61 {  // "for="
                var valueStart = first + 4
                var valueEnd = pairEnd
                while valueEnd > valueStart, bytes[valueEnd - 1] == 32 || bytes[valueEnd - 1] == 9 { valueEnd -= 1 }
                if valueEnd - valueStart >= 2 && bytes[valueStart] == 34 && bytes[valueEnd - 1] == 34 {
                    valueStart += 1
                    valueEnd -= 1
                }
                return parseHop(bytes, valueStart, valueEnd)
            }
            index = pairEnd + 1
        }
        return nil
    }

    /// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
    /// Nil for anything else (`unknown`, an obfuscated `_name`, garbage).
    static func parseHop(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> SocketAddress? {
        guard end > start, end - start <= 53 else { return nil }
        var hostStart = start
        var hostEnd = end
        var port: UInt16 = 0
        var colons = 0
        for index in start..<end where bytes[index] == 58 { colons += 1 }
        if bytes[start] == 91 {  // "[v6]" with an optional ":port"
            guard let close = (start..<end).first(where: { bytes[$0] == 93 }) else { return nil }
            hostStart = start + 1
            hostEnd = close
            if close + 1 < end {
                guard bytes[close + 1] == 58, let value = ProxyProtocol.port(UnsafeRawBufferPointer(rebasing: bytes[(close + 2)..<end])) else { return nil }
                port = value
            }
        } else if colons == 1 {  // "v4:port"
            let colon = (start..<end).first { bytes[$0] == 58 }!
            guard let value = ProxyProtocol.port(UnsafeRawBufferPointer(rebasing: bytes[(colon + 1)..<end])) else { return nil }
            hostEnd = colon
            port = value
        }
        let text = UnsafeRawBufferPointer(rebasing: bytes[hostStart..<hostEnd])
        let isV6 = bytes[start] == 91 || colons > 1
        guard var address = ProxyProtocol.address(text, family: isV6 ? AF_INET6 : AF_INET) else { return nil }
        address.port = port
        return address
    }
}
