import Glibc

/// A strict HTTP/1.1 request-head parser (RFC 9112): one pass over the bytes, no allocation, no I/O.
///
/// Rejects with 400: bare LF or CR, obs-fold, whitespace before a colon, invalid token or field bytes,
/// Content-Length with Transfer-Encoding, differing or malformed Content-Lengths, a missing (HTTP/1.1)
/// or repeated Host, a Transfer-Encoding whose last coding is not chunked (or chunked twice), and
/// Transfer-Encoding in HTTP/1.0. 414 for a long request line, 431 for a long field line, a large head
/// or too many fields, 417 for an expectation other than 100-continue, 501 for an unknown method or a
/// transfer coding other than chunked, 505 for HTTP versions other than 1.0 and 1.1.
///
/// (About 530 lines: one state machine and the byte classes it tests, kept together so every rejection
/// can be read beside the rule it enforces; the types it fills are in RequestHead.swift.)
public enum RequestParser {
    public static func parse(_ bytes: UnsafeRawBufferPointer, limits: ParserLimits) -> ParseResult {
        var head = RequestHead()
        switch parse(bytes, limits: limits, into: &head) {
        case .complete: return .complete(head)
        case .incomplete: return .incomplete
        case .invalid(let status): return .invalid(status)
        }
    }

    /// What `parse(_:limits:into:)` found; the head itself is written in place.
    public enum Status: Equatable, Sendable {
        case complete
        case incomplete
        case invalid(HTTPStatus)
    }

    /// Parses into `head` (reset first): the worker's form, which never copies the head in and out of
    /// an enum payload on every request.
    public static func parse(_ bytes: UnsafeRawBufferPointer, limits: ParserLimits, into head: inout RequestHead) -> Status {
        head = RequestHead()
        let count = bytes.count
        var index = 0
        // RFC 9112 section 2.2: ignore at least one empty line before the request line.
        var emptyLines = 0
        while index + 1 < count, bytes[index] == 13, bytes[index + 1] == 10, emptyLines < 4 {
            index += 2
            emptyLines += 1
        }
        if index < count, bytes[index] == 10 { return .invalid(.badRequest) }
        if index + 1 == count, bytes[index] == 13, emptyLines < 4 { return .incomplete }  // "\r" of an empty line
        let lineStart = index

        // Method.
        while index < count, isTokenByte(bytes[index]) { index += 1 }
        if index == count { return lineTooLong(index - lineStart, limits) ?? .incomplete }
        if index == lineStart || bytes[index] != 32 { return .invalid(.badRequest) }
        let methodEnd = index
        index += 1

        // Target: visible ASCII only, up to the next space.
        let targetStart = index
        guard let space = find(32, in: bytes, from: index) else {
            if !allVisible(bytes, targetStart, count) { return .invalid(.badRequest) }
            return lineTooLong(count - lineStart, limits) ?? .incomplete
        }
        if space == targetStart || !allVisible(bytes, targetStart, space) { return .invalid(.badRequest) }
        let targetEnd = space
        index = space + 1

        // Version: HTTP/DIGIT.DIGIT CRLF.
        if count - index < 10 {
            // Check what is there so far, so garbage is rejected without waiting.
            let prefix: [UInt8] = [72, 84, 84, 80, 47]
            var position = index
            while position < count && position - index < 5 {
                if bytes[position] != prefix[position - index] { return .invalid(.badRequest) }
                position += 1
            }
            // The line ends 8 bytes after the version starts, so that is its length once it is in sight.
            return lineTooLong(min(count, index + 8) - lineStart, limits) ?? .incomplete
        }
        guard bytes[index] == 72, bytes[index + 1] == 84, bytes[index + 2] == 84, bytes[index + 3] == 80,
              bytes[index + 4] == 47, isDigit(bytes[index + 5]), bytes[index + 6] == 46, isDigit(bytes[index + 7])
        else { return .invalid(.badRequest) }
        guard bytes[index + 8] == 13, bytes[index + 9] == 10 else { return .invalid(.badRequest) }
        let lineEnd = index + 8
        if lineEnd - lineStart > limits.requestLine { return .invalid(.uriTooLong) }
        let major = bytes[index + 5] - 48
        // RFC 9110 section 2.5: a higher minor version of HTTP/1 is answered as the highest minor this
        // server implements, 1.1 (a recipient must not treat 1.2 as a new major version).
        let minor = min(bytes[index + 7] - 48, 1)
        guard major == 1 else { return .invalid(.versionNotSupported) }
        index += 10

        head.minorVersion = minor
        head.keepAlive = minor == 1
        head.target = ByteSpan(start: targetStart, end: targetEnd)
        head.requestLine = ByteSpan(start: lineStart, end: lineEnd)
        guard let method = method(bytes, lineStart, methodEnd) else { return .invalid(.notImplemented) }
        head.method = method

        var fields = 0
        var hosts = 0
        var sawTransferEncoding = false
        var codings = TransferCodings()
        var connectionClose = false
        var connectionKeepAlive = false
        while true {
            if index - lineStart > limits.headerBytes { return .invalid(.headerFieldsTooLarge) }
            if index + 1 >= count {
                if index < count, bytes[index] != 13 && !isTokenByte(bytes[index]) { return .invalid(.badRequest) }
                return .incomplete
            }
            let first = bytes[index]
            if first == 13 {
                guard bytes[index + 1] == 10 else { return .invalid(.badRequest) }
                index += 2
                break
            }
            if first == 32 || first == 9 { return .invalid(.badRequest) }  // obs-fold or leading whitespace

            // Field name.
            let nameStart = index
            while index < count, isTokenByte(bytes[index]) { index += 1 }
            if index == count {
                return index - lineStart > limits.headerBytes || index - nameStart > limits.headerField
                    ? .invalid(.headerFieldsTooLarge) : .incomplete
            }
            if index == nameStart || bytes[index] != 58 { return .invalid(.badRequest) }  // includes space before colon
            let nameEnd = index
            index += 1

            // Field value: OWS value OWS CRLF. Find the CR first, then check the bytes before it.
            while index < count, bytes[index] == 32 || bytes[index] == 9 { index += 1 }
            let valueStart = index
            let found = find(13, in: bytes, from: index)
            guard let cr = found, cr + 1 < count else {
                // No CRLF yet: what is there must still be valid.
                if !validFieldValue(bytes, valueStart, found ?? count) { return .invalid(.badRequest) }
                return count - lineStart > limits.headerBytes || (found ?? count) - nameStart > limits.headerField
                    ? .invalid(.headerFieldsTooLarge) : .incomplete
            }
            guard bytes[cr + 1] == 10, validFieldValue(bytes, valueStart, cr) else { return .invalid(.badRequest) }
            if cr - nameStart > limits.headerField { return .invalid(.headerFieldsTooLarge) }
            var valueEnd = cr
            while valueEnd > valueStart, bytes[valueEnd - 1] == 32 || bytes[valueEnd - 1] == 9 { valueEnd -= 1 }
            index = cr + 2
            fields += 1
            if fields > limits.headerCount { return .invalid(.headerFieldsTooLarge) }

            let value = ByteSpan(start: valueStart, end: valueEnd)
            switch knownField(bytes, nameStart, nameEnd - nameStart) {
            case .host:
                hosts += 1
                // RFC 9112 section 3.2: one Host, and a valid one (uri-host [":" port]; empty is allowed).
                if hosts > 1 || !validHost(bytes, value) { return .invalid(.badRequest) }
                head.host = value
            case .referer:
                head.referer = value
            case .userAgent:
                head.userAgent = value
            case .connection:
                scanConnection(bytes, value, close: &connectionClose, keepAlive: &connectionKeepAlive)
            case .contentLength:
                guard let length = parseDecimal(bytes, value) else { return .invalid(.badRequest) }
                if head.contentLength >= 0 && head.contentLength != length { return .invalid(.badRequest) }
                head.contentLength = length
            case .transferEncoding:
                // RFC 9112 section 6.1: HTTP/1.0 framing with Transfer-Encoding is faulty.
                if head.minorVersion == 0 { return .invalid(.badRequest) }
                sawTransferEncoding = true
                scanTransferCodings(bytes, value, state: &codings)
            case .expect:
                // RFC 9110 section 10.1.1: 100-continue is the only expectation; any other gets 417.
                guard value.count == 12, lowercased(bytes, value.start, 8) == 0x746e6f632d303031,
                      lowercased(bytes, value.start + 8, 4) == 0x65756e69 else { return .invalid(.expectationFailed) }
                head.expectContinue = true
            case .ifMatch:
                head.hasConditions = true
                if !head.ifMatch.isEmpty { head.repeatedConditionalList = true }
                head.ifMatch = value
            case .ifNoneMatch:
                head.hasConditions = true
                if !head.ifNoneMatch.isEmpty { head.repeatedConditionalList = true }
                head.ifNoneMatch = value
            case .ifModifiedSince:
                head.hasConditions = true
                head.ifModifiedSince = value
            case .ifUnmodifiedSince:
                head.hasConditions = true
                head.ifUnmodifiedSince = value
            case .range:
                head.hasConditions = true
                if !head.range.isEmpty { head.repeatedRange = true }
                head.range = value
            case .ifRange:
                head.hasConditions = true
                head.ifRange = value
            case .forwardedFor:
                if !head.forwardedFor.isEmpty { head.repeatedForwarding = true }
                head.forwardedFor = value
            case .forwarded:
                if !head.forwarded.isEmpty { head.repeatedForwarding = true }
                head.forwarded = value
            case .acceptEncoding:
                if head.sentAcceptEncoding { head.repeatedAcceptEncoding = true }
                head.sentAcceptEncoding = true
                head.acceptEncoding = value
            case .other:
                break
            }
        }
        if sawTransferEncoding {
            // RFC 9112 sections 6.1 and 6.3: chunked must be the final coding, applied once; a request
            // whose framing cannot be known is 400; a coding we do not implement is 501.
            if !codings.lastIsChunked || codings.chunkedCount != 1 || codings.malformed { return .invalid(.badRequest) }
            if codings.others > 0 { return .invalid(.notImplemented) }
            head.chunked = true
        }
        if head.chunked && head.contentLength >= 0 { return .invalid(.badRequest) }
        if head.minorVersion == 1 && hosts == 0 { return .invalid(.badRequest) }
        if connectionClose { head.keepAlive = false } else if head.minorVersion == 0 { head.keepAlive = connectionKeepAlive }
        head.headLength = index
        return .complete
    }

    /// The header fields the server acts on.
    enum KnownField {
        case host, referer, userAgent, connection, contentLength, transferEncoding, expect
        case ifMatch, ifNoneMatch, ifModifiedSince, ifUnmodifiedSince, range, ifRange, acceptEncoding, forwardedFor, forwarded, other
    }

    /// What the Transfer-Encoding lines of one request said, over all of them (they form one list).
    struct TransferCodings {
        var chunkedCount = 0
        var others = 0
        var lastIsChunked = false
        var malformed = false
    }

    /// Reads one Transfer-Encoding value: comma-separated codings, each a token with optional parameters.
    static func scanTransferCodings(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan, state: inout TransferCodings) {
        var index = span.start
        var any = false
        while index < span.end {
            while index < span.end, bytes[index] == 32 || bytes[index] == 9 || bytes[index] == 44 { index += 1 }
            if index == span.end { break }
            let start = index
            while index < span.end, isTokenByte(bytes[index]) { index += 1 }
            let end = index
            if end == start {
                state.malformed = true
                return
            }
            // Skip parameters up to the next comma (quoted commas are not expected in codings we accept).
            while index < span.end, bytes[index] != 44 { index += 1 }
            any = true
            if end - start == 7 && lowercased(bytes, start, 7) == 0x64656b6e756863 {  // "chunked"
                state.chunkedCount += 1
                state.lastIsChunked = true
            } else {
                state.others += 1
                state.lastIsChunked = false
            }
        }
        if !any { state.malformed = true }
    }

    /// Every value of the field `name` (lowercase ASCII) in a parsed head, in order: for the rare
    /// request that splits a list such as If-None-Match over several lines.
    public static func fieldValues(_ bytes: UnsafeRawBufferPointer, headLength: Int, name: StaticString) -> [ByteSpan] {
        var result: [ByteSpan] = []
        guard var index = find(10, in: UnsafeRawBufferPointer(rebasing: bytes[0..<headLength]), from: 0) else { return result }
        index += 1
        let nameLength = name.utf8CodeUnitCount
        while index + 2 <= headLength, bytes[index] != 13 {
            guard let colon = find(58, in: UnsafeRawBufferPointer(rebasing: bytes[0..<headLength]), from: index),
                  let lineEnd = find(13, in: UnsafeRawBufferPointer(rebasing: bytes[0..<headLength]), from: colon) else { break }
            if colon - index == nameLength {
                var same = true
                for offset in 0..<nameLength where bytes[index + offset] | 0x20 != name.utf8Start[offset] { same = false }
                if same {
                    var start = colon + 1
                    var end = lineEnd
                    while start < end, bytes[start] == 32 || bytes[start] == 9 { start += 1 }
                    while end > start, bytes[end - 1] == 32 || bytes[end - 1] == 9 { end -= 1 }
                    result.append(ByteSpan(start: start, end: end))
                }
            }
            index = lineEnd + 2
        }
        return result
    }

    /// Recognizes a field name by its length and lowercased 8-byte words, without a loop per byte.
    @inline(__always)
    static func knownField(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ length: Int) -> KnownField {
        switch length {
        case 4:
            return lowercased(bytes, start, 4) == 0x74736f68 ? .host : .other  // "host"
        case 5:
            return lowercased(bytes, start, 5) == 0x65676e6172 ? .range : .other  // "range"
        case 6:
            return lowercased(bytes, start, 6) == 0x746365707865 ? .expect : .other  // "expect"
        case 8:
            let word = lowercased(bytes, start, 8)
            return word == 0x686374616d2d6669 ? .ifMatch : word == 0x65676e61722d6669 ? .ifRange : .other  // "if-match" "if-range"
        case 13:
            // "if-none-" "match"
            return lowercased(bytes, start, 8) == 0x2d656e6f6e2d6669 && lowercased(bytes, start + 8, 5) == 0x686374616d
                ? .ifNoneMatch : .other
        case 19:
            // "if-unmod" "ified-si" "nce"
            return lowercased(bytes, start, 8) == 0x646f6d6e752d6669 && lowercased(bytes, start + 8, 8) == 0x69732d6465696669
                && lowercased(bytes, start + 16, 3) == 0x65636e ? .ifUnmodifiedSince : .other
        case 7:
            return lowercased(bytes, start, 7) == 0x72657265666572 ? .referer : .other  // "referer"
        case 10:
            let first = lowercased(bytes, start, 8)
            let rest = lowercased(bytes, start + 8, 2)
            if first == 0x697463656e6e6f63 && rest == 0x6e6f { return .connection }  // "connecti" "on"
            if first == 0x6567612d72657375 && rest == 0x746e { return .userAgent }  // "user-age" "nt"
            return .other
        case 14:
            // "content-" "length"
            return lowercased(bytes, start, 8) == 0x2d746e65746e6f63 && lowercased(bytes, start + 8, 6) == 0x6874676e656c
                ? .contentLength : .other
        case 15:
            // "accept-e" "ncoding", or "x-forwar" "ded-for"
            let first = lowercased(bytes, start, 8)
            let rest = lowercased(bytes, start + 8, 7)
            if first == 0x652d747065636361 && rest == 0x676e69646f636e { return .acceptEncoding }
            if first == 0x726177726f662d78 && rest == 0x726f662d646564 { return .forwardedFor }
            return .other
        case 9:
            // "forwarde" "d"
            return lowercased(bytes, start, 8) == 0x6564726177726f66 && bytes[start + 8] | 0x20 == 0x64 ? .forwarded : .other
        case 17:
            // "transfer" "-encodin" "g", or "if-modif" "ied-sinc" "e"
            let first = lowercased(bytes, start, 8)
            let second = lowercased(bytes, start + 8, 8)
            let last = bytes[start + 16] | 0x20
            if first == 0x726566736e617274 && second == 0x6e69646f636e652d && last == 0x67 { return .transferEncoding }
            if first == 0x6669646f6d2d6669 && second == 0x636e69732d646569 && last == 0x65 { return .ifModifiedSince }
            return .other
        default:
            return .other
        }
    }

    /// Up to 8 bytes at `start` as a little-endian word with ASCII letters lowercased. Only used on
    /// token bytes, where OR-ing 0x20 changes nothing but letters (and '-', '.', digits stay as they are).
    @inline(__always)
    static func lowercased(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ length: Int) -> UInt64 {
        var word: UInt64 = 0
        if length == 8 {
            word = bytes.loadUnaligned(fromByteOffset: start, as: UInt64.self)
        } else {
            for offset in 0..<length { word |= UInt64(bytes[start + offset]) << (8 * UInt64(offset)) }
        }
        let mask: UInt64 = length == 8 ? 0x2020_2020_2020_2020 : (UInt64(1) << (8 * UInt64(length)) - 1) & 0x2020_2020_2020_2020
        return word | mask
    }

    /// The index of the first `byte` at or after `start`; memchr, which is vectorized.
    @inline(__always)
    static func find(_ byte: UInt8, in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard start < bytes.count, let base = bytes.baseAddress else { return nil }
        guard let found = memchr(base + start, Int32(byte), bytes.count - start) else { return nil }
        return base.distance(to: UnsafeRawPointer(found))
    }

    /// Whether bytes[start..<end] are all visible ASCII (0x21...0x7E), eight at a time.
    static func allVisible(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
        var index = start
        while index + 8 <= end {
            let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            // A byte below 0x21, or with the top bit set, or equal to 0x7F.
            let below = (word &- 0x2121_2121_2121_2121) & ~word & 0x8080_8080_8080_8080
            let high = word & 0x8080_8080_8080_8080
            let flipped = word ^ 0x7F7F_7F7F_7F7F_7F7F
            let delete = (flipped &- 0x0101_0101_0101_0101) & ~flipped & 0x8080_8080_8080_8080
            if below | high | delete != 0 { return false }
            index += 8
        }
        while index < end {
            let byte = bytes[index]
            if byte <= 32 || byte >= 127 { return false }
            index += 1
        }
        return true
    }

    /// Whether bytes[start..<end] are field-value bytes (RFC 9110 5.5): HTAB, SP, visible ASCII, obs-text.
    static func validFieldValue(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
        var index = start
        while index + 8 <= end {
            let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            // Flags bytes below 0x20 (top bit clear) and bytes equal to 0x7F; a flagged word is checked
            // byte by byte, since HTAB is allowed.
            let control = (word &- 0x2020_2020_2020_2020) & ~word & 0x8080_8080_8080_8080
            let flipped = word ^ 0x7F7F_7F7F_7F7F_7F7F
            let delete = (flipped &- 0x0101_0101_0101_0101) & ~flipped & 0x8080_8080_8080_8080
            if control | delete != 0 {
                for offset in 0..<8 where !isFieldByte(bytes[index + offset]) { return false }
            }
            index += 8
        }
        while index < end {
            if !isFieldByte(bytes[index]) { return false }
            index += 1
        }
        return true
    }

    @inline(__always)
    static func isFieldByte(_ byte: UInt8) -> Bool { byte >= 32 && byte != 127 || byte == 9 }

    @inline(__always)
    static func lineTooLong(_ length: Int, _ limits: ParserLimits) -> Status? {
        length > limits.requestLine ? .invalid(.uriTooLong) : nil
    }

    /// tchar from RFC 9110 section 5.6.2, as a 128-bit set: one shift and mask per byte.
    @inline(__always)
    static func isTokenByte(_ byte: UInt8) -> Bool {
        let low: UInt64 = 0x03ff_6cfa_0000_0000  // ! # $ % & ' * + - . 0-9
        let high: UInt64 = 0x57ff_ffff_c7ff_fffe  // A-Z ^ _ ` a-z | ~
        let word = byte < 64 ? low : byte < 128 ? high : 0
        return (word >> UInt64(byte & 63)) & 1 == 1
    }

    @inline(__always)
    static func isDigit(_ byte: UInt8) -> Bool { byte >= 48 && byte <= 57 }

    /// Host's value (RFC 3986 authority without userinfo): reg-name, IPv4 or an IP-literal in brackets,
    /// then an optional port. Bytes only; anything that could change the meaning of a path, such as
    /// "/", "@", "?", "#" or whitespace, is refused. The port is read from the end (digits back to a
    /// colon), then one table load per byte of the name; brackets and colons inside it (an IPv6
    /// literal) send it to the slower structural check.
    static func validHost(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan) -> Bool {
        guard span.start < span.end, let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return true }
        let start = base + span.start
        var nameEnd = base + span.end
        var back = nameEnd - 1
        while back > start && back.pointee &- 48 < 10 { back -= 1 }
        if back.pointee == 58 { nameEnd = back }  // ":" then only digits: the port
        let table = hostBytes.utf8Start
        var special: UInt8 = 0
        var pointer = start
        while pointer < nameEnd {
            let kind = table[Int(pointer.pointee)]
            if kind == 48 { return false }  // '0': not allowed anywhere
            special |= kind
            pointer += 1
        }
        return special & 2 == 0 || validHostStructure(UnsafeBufferPointer(start: start, count: span.count))
    }

    /// One byte per value: '1' reg-name (unreserved, pct-encoded's '%', sub-delims), '3' for ':', '[' and
    /// ']', '0' for everything else.
    static let hostBytes: StaticString = """
        00000000000000000000000000000000\
        01001111111111101111111111310100\
        01111111111111111111111111130301\
        01111111111111111111111111100010\
        00000000000000000000000000000000\
        00000000000000000000000000000000\
        00000000000000000000000000000000\
        00000000000000000000000000000000
        """

    /// host [":" port], where host may be "[" IP-literal "]".
    static func validHostStructure(_ host: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        if host[0] == 91 {
            index = 1
            while index < host.count && host[index] != 93 {
                let byte = host[index]
                guard isHexOrColon(byte) || byte == 46 || byte | 0x20 == 118 else { return false }
                index += 1
            }
            guard index < host.count else { return false }
            index += 1
        } else {
            while index < host.count && host[index] != 58 {
                if host[index] == 91 || host[index] == 93 { return false }
                index += 1
            }
        }
        if index == host.count { return true }
        guard host[index] == 58 else { return false }
        index += 1
        while index < host.count {
            guard isDigit(host[index]) else { return false }
            index += 1
        }
        return true
    }

    @inline(__always)
    static func isHexOrColon(_ byte: UInt8) -> Bool {
        isDigit(byte) || byte == 58 || (byte | 0x20 >= 97 && byte | 0x20 <= 102)
    }

    /// Methods are case-sensitive (RFC 9110 section 9.1).
    static func method(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> HTTPMethod? {
        func equals(_ literal: StaticString) -> Bool {
            guard end - start == literal.utf8CodeUnitCount else { return false }
            for offset in 0..<(end - start) where bytes[start + offset] != literal.utf8Start[offset] { return false }
            return true
        }
        switch end - start {
        case 3: return equals("GET") ? .get : equals("PUT") ? .put : nil
        case 4: return equals("HEAD") ? .head : equals("POST") ? .post : nil
        case 5: return equals("TRACE") ? .trace : equals("PATCH") ? .patch : nil
        case 6: return equals("DELETE") ? .delete : nil
        case 7: return equals("OPTIONS") ? .options : equals("CONNECT") ? .connect : nil
        default: return nil
        }
    }

    /// 1*DIGIT, at most 18 digits; nil for anything else (lists, signs, spaces).
    static func parseDecimal(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan) -> Int64? {
        guard !span.isEmpty, span.count <= 18 else { return nil }
        var value: Int64 = 0
        for index in span.start..<span.end {
            let byte = bytes[index]
            guard isDigit(byte) else { return nil }
            value = value * 10 + Int64(byte - 48)
        }
        return value
    }

    /// Reads the comma-separated Connection options that matter: close and keep-alive.
    static func scanConnection(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan, close: inout Bool, keepAlive: inout Bool) {
        var index = span.start
        while index < span.end {
            while index < span.end, bytes[index] == 32 || bytes[index] == 9 || bytes[index] == 44 { index += 1 }
            let start = index
            while index < span.end, bytes[index] != 44 { index += 1 }
            var end = index
            while end > start, bytes[end - 1] == 32 || bytes[end - 1] == 9 { end -= 1 }
            if end - start == 5 && lowercased(bytes, start, 5) == 0x65736f6c63 { close = true }  // "close"
            if end - start == 10 && lowercased(bytes, start, 8) == 0x696c612d7065656b  // "keep-ali" "ve"
                && lowercased(bytes, start + 8, 2) == 0x6576 { keepAlive = true }
        }
    }
}
