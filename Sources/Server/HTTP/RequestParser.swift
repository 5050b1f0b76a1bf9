/// The request methods the parser knows. Others are syntactically valid but answered with 501.
public enum HTTPMethod: UInt8, Sendable {
    case get, head, post, put, delete, connect, options, trace, patch
}

/// A byte range inside the buffer that was parsed; empty when `start == end`.
public struct ByteSpan: Equatable, Sendable {
    public var start: Int
    public var end: Int
    public static let none = ByteSpan(start: 0, end: 0)
    public var isEmpty: Bool { start == end }
    public var count: Int { end - start }
}

/// A parsed request head: offsets into the parsed buffer, no copies.
public struct RequestHead: Equatable, Sendable {
    public var method: HTTPMethod = .get
    /// The request-target as sent.
    public var target = ByteSpan.none
    /// The request line without its CRLF (for the access log).
    public var requestLine = ByteSpan.none
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: UInt8 = 1
    /// Whether the client allows the connection to stay open after this request.
    public var keepAlive = true
    /// The Content-Length, or -1 when there is none.
    public var contentLength: Int64 = -1
    /// Whether the body is chunked.
    public var chunked = false
    public var referer = ByteSpan.none
    public var userAgent = ByteSpan.none
    /// Bytes consumed, from the first byte through the blank line.
    public var headLength = 0

    public init() {}

    /// Whether a body follows the head.
    public var hasBody: Bool { chunked || contentLength > 0 }
}

/// The limits a request head is held to; each has its own status when exceeded.
public struct ParserLimits: Sendable {
    /// Longest request line (414).
    public var requestLine: Int
    /// Largest head, request line included (431).
    public var headerBytes: Int
    /// Most header fields (431).
    public var headerCount: Int

    public init(requestLine: Int = 8192, headerBytes: Int = 16_384, headerCount: Int = 100) {
        self.requestLine = requestLine
        self.headerBytes = headerBytes
        self.headerCount = headerCount
    }
}

/// What parsing a buffer gave.
public enum ParseResult: Equatable, Sendable {
    /// A whole head; its `headLength` bytes can be consumed.
    case complete(RequestHead)
    /// More bytes are needed.
    case incomplete
    /// The request is rejected with this status; the connection must close after the response.
    case invalid(HTTPStatus)
}

/// A strict HTTP/1.1 request-head parser (RFC 9112): one pass over the bytes, no allocation, no I/O.
///
/// Rejects with 400: bare LF or CR, obs-fold, whitespace before a colon, invalid token or field bytes,
/// Content-Length with Transfer-Encoding, differing or malformed Content-Lengths, a missing (HTTP/1.1)
/// or repeated Host. 414 for a long request line, 431 for a large head or too many fields, 501 for an
/// unknown method or a transfer coding other than chunked, 505 for HTTP versions other than 1.0 and 1.1.
public enum RequestParser {
    public static func parse(_ bytes: UnsafeRawBufferPointer, limits: ParserLimits) -> ParseResult {
        let count = bytes.count
        var index = 0
        // RFC 9112 section 2.2: ignore at least one empty line before the request line.
        var emptyLines = 0
        while index + 1 < count, bytes[index] == 13, bytes[index + 1] == 10, emptyLines < 4 {
            index += 2
            emptyLines += 1
        }
        if index < count, bytes[index] == 10 { return .invalid(.badRequest) }
        let lineStart = index

        // Method.
        while index < count, isTokenByte(bytes[index]) { index += 1 }
        if index == count { return lineTooLong(index - lineStart, limits) ?? .incomplete }
        if index == lineStart || bytes[index] != 32 { return .invalid(.badRequest) }
        let methodEnd = index
        index += 1

        // Target: visible ASCII only.
        let targetStart = index
        while index < count {
            let byte = bytes[index]
            if byte == 32 { break }
            if byte <= 32 || byte >= 127 { return .invalid(.badRequest) }
            index += 1
        }
        if index == count { return lineTooLong(index - lineStart, limits) ?? .incomplete }
        if index == targetStart { return .invalid(.badRequest) }
        let targetEnd = index
        index += 1

        // Version: HTTP/DIGIT.DIGIT CRLF.
        if count - index < 10 {
            // Check what is there so far, so garbage is rejected without waiting.
            let prefix: [UInt8] = [72, 84, 84, 80, 47]
            var position = index
            while position < count && position - index < 5 {
                if bytes[position] != prefix[position - index] { return .invalid(.badRequest) }
                position += 1
            }
            return lineTooLong(count - lineStart, limits) ?? .incomplete
        }
        guard bytes[index] == 72, bytes[index + 1] == 84, bytes[index + 2] == 84, bytes[index + 3] == 80,
              bytes[index + 4] == 47, isDigit(bytes[index + 5]), bytes[index + 6] == 46, isDigit(bytes[index + 7])
        else { return .invalid(.badRequest) }
        guard bytes[index + 8] == 13, bytes[index + 9] == 10 else { return .invalid(.badRequest) }
        let lineEnd = index + 8
        if lineEnd - lineStart > limits.requestLine { return .invalid(.uriTooLong) }
        let major = bytes[index + 5] - 48
        let minor = bytes[index + 7] - 48
        guard major == 1, minor <= 1 else { return .invalid(.versionNotSupported) }
        index += 10

        var head = RequestHead()
        head.minorVersion = minor
        head.keepAlive = minor == 1
        head.target = ByteSpan(start: targetStart, end: targetEnd)
        head.requestLine = ByteSpan(start: lineStart, end: lineEnd)
        guard let method = method(bytes, lineStart, methodEnd) else { return .invalid(.notImplemented) }
        head.method = method

        var fields = 0
        var hosts = 0
        var sawTransferEncoding = false
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
                return index - lineStart > limits.headerBytes ? .invalid(.headerFieldsTooLarge) : .incomplete
            }
            if index == nameStart || bytes[index] != 58 { return .invalid(.badRequest) }  // includes space before colon
            let nameEnd = index
            index += 1

            // Field value: OWS value OWS CRLF.
            while index < count, bytes[index] == 32 || bytes[index] == 9 { index += 1 }
            let valueStart = index
            var valueEnd = index
            var complete = false
            while index < count {
                let byte = bytes[index]
                if byte == 13 {
                    if index + 1 == count { break }
                    guard bytes[index + 1] == 10 else { return .invalid(.badRequest) }
                    complete = true
                    break
                }
                if byte == 10 { return .invalid(.badRequest) }
                if byte < 32 && byte != 9 || byte == 127 { return .invalid(.badRequest) }
                index += 1
                if byte != 32 && byte != 9 { valueEnd = index }
            }
            if !complete {
                return index - lineStart > limits.headerBytes ? .invalid(.headerFieldsTooLarge) : .incomplete
            }
            index += 2
            fields += 1
            if fields > limits.headerCount { return .invalid(.headerFieldsTooLarge) }

            let value = ByteSpan(start: valueStart, end: valueEnd)
            switch nameEnd - nameStart {
            case 4 where equalsLowercase(bytes, nameStart, "host"):
                hosts += 1
                if hosts > 1 { return .invalid(.badRequest) }
            case 7 where equalsLowercase(bytes, nameStart, "referer"):
                head.referer = value
            case 10 where equalsLowercase(bytes, nameStart, "user-agent"):
                head.userAgent = value
            case 10 where equalsLowercase(bytes, nameStart, "connection"):
                scanConnection(bytes, value, close: &connectionClose, keepAlive: &connectionKeepAlive)
            case 14 where equalsLowercase(bytes, nameStart, "content-length"):
                guard let length = parseDecimal(bytes, value) else { return .invalid(.badRequest) }
                if head.contentLength >= 0 && head.contentLength != length { return .invalid(.badRequest) }
                head.contentLength = length
            case 17 where equalsLowercase(bytes, nameStart, "transfer-encoding"):
                if sawTransferEncoding || head.minorVersion == 0 { return .invalid(.badRequest) }
                sawTransferEncoding = true
                guard value.count == 7, equalsLowercase(bytes, value.start, "chunked") else {
                    return .invalid(.notImplemented)
                }
                head.chunked = true
            default:
                break
            }
        }
        if head.chunked && head.contentLength >= 0 { return .invalid(.badRequest) }
        if head.minorVersion == 1 && hosts == 0 { return .invalid(.badRequest) }
        if connectionClose { head.keepAlive = false } else if head.minorVersion == 0 { head.keepAlive = connectionKeepAlive }
        head.headLength = index
        return .complete(head)
    }

    @inline(__always)
    static func lineTooLong(_ length: Int, _ limits: ParserLimits) -> ParseResult? {
        length > limits.requestLine ? .invalid(.uriTooLong) : nil
    }

    /// tchar from RFC 9110 section 5.6.2.
    @inline(__always)
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 48...57, 65...90, 97...122: return true
        case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: return true
        default: return false
        }
    }

    @inline(__always)
    static func isDigit(_ byte: UInt8) -> Bool { byte >= 48 && byte <= 57 }

    /// Compares bytes at `start` with the lowercase ASCII `literal`, ignoring case in `bytes`.
    @inline(__always)
    static func equalsLowercase(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ literal: StaticString) -> Bool {
        let length = literal.utf8CodeUnitCount
        let pointer = literal.utf8Start
        for offset in 0..<length where bytes[start + offset] | 0x20 != pointer[offset] {
            return false
        }
        return true
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
            if end - start == 5 && equalsLowercase(bytes, start, "close") { close = true }
            if end - start == 10 && equalsLowercase(bytes, start, "keep-alive") { keepAlive = true }
        }
    }
}
