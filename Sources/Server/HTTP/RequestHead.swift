// What the parser makes of a request head: offsets into the bytes it was given, never copies.

/// A byte range inside the buffer that was parsed; empty when `start == end`.
///
/// Stored as two 32-bit offsets (a head is at most a few dozen KiB), so the request head with its dozen
/// spans stays small enough to be moved in registers rather than by memcpy.
public struct ByteSpan: Equatable, Sendable {
    @usableFromInline var lower: Int32
    @usableFromInline var upper: Int32
    public var start: Int {
        @inline(__always) get { Int(lower) }
        @inline(__always) set { lower = Int32(truncatingIfNeeded: newValue) }
    }
    public var end: Int {
        @inline(__always) get { Int(upper) }
        @inline(__always) set { upper = Int32(truncatingIfNeeded: newValue) }
    }
    @inline(__always)
    public init(start: Int, end: Int) {
        lower = Int32(truncatingIfNeeded: start)
        upper = Int32(truncatingIfNeeded: end)
    }
    public static let none = ByteSpan(start: 0, end: 0)
    public var isEmpty: Bool { start == end }
    public var count: Int { end - start }
}

/// A parsed request head: offsets into the parsed buffer, no copies.
///
/// Kept at 128 bytes (flags in one word, the length in 32 bits): a struct this size is copied with a
/// few vector moves, a larger one with a call to memcpy, which cost about 170 instructions a request
/// when it grew to 160.
public struct RequestHead: Equatable, Sendable {
    public var method: HTTPMethod = .get
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: UInt8 = 1
    private var flags: UInt16 = Flag.keepAlive
    private var length32: Int32 = 0
    /// The Content-Length, or -1 when there is none.
    public var contentLength: Int64 = -1
    /// The request-target as sent.
    public var target = ByteSpan.none
    /// The request line without its CRLF (for the access log).
    public var requestLine = ByteSpan.none
    /// The Host field's value (validated), empty when there was none.
    public var host = ByteSpan.none
    public var referer = ByteSpan.none
    public var userAgent = ByteSpan.none
    /// Validators and ranges (RFC 9110 sections 13 and 14); empty when absent.
    public var ifMatch = ByteSpan.none
    public var ifNoneMatch = ByteSpan.none
    public var ifModifiedSince = ByteSpan.none
    public var ifUnmodifiedSince = ByteSpan.none
    public var range = ByteSpan.none
    public var ifRange = ByteSpan.none
    /// Accept-Encoding's value; `sentAcceptEncoding` tells an empty value (identity only) from none.
    public var acceptEncoding = ByteSpan.none
    /// X-Forwarded-For and Forwarded (RFC 7239): hops a proxy says the request came through. Read only
    /// when the connection comes from a trusted proxy; `repeatedForwarding` when either came twice.
    public var forwardedFor = ByteSpan.none
    public var forwarded = ByteSpan.none

    enum Flag {
        static let keepAlive: UInt16 = 1
        static let chunked: UInt16 = 2
        static let expectContinue: UInt16 = 4
        static let repeatedConditionalList: UInt16 = 8
        static let repeatedRange: UInt16 = 16
        static let hasConditions: UInt16 = 32
        static let sentAcceptEncoding: UInt16 = 64
        static let repeatedAcceptEncoding: UInt16 = 128
        static let repeatedForwarding: UInt16 = 256
    }

    @inline(__always)
    private func flag(_ bit: UInt16) -> Bool { flags & bit != 0 }
    @inline(__always)
    private mutating func set(_ bit: UInt16, _ on: Bool) { flags = on ? flags | bit : flags & ~bit }

    /// Whether the client allows the connection to stay open after this request.
    public var keepAlive: Bool { get { flag(Flag.keepAlive) } set { set(Flag.keepAlive, newValue) } }
    /// Whether the body is chunked.
    public var chunked: Bool { get { flag(Flag.chunked) } set { set(Flag.chunked, newValue) } }
    /// `Expect: 100-continue` was sent: the client waits for a 100 before it sends the body.
    public var expectContinue: Bool { get { flag(Flag.expectContinue) } set { set(Flag.expectContinue, newValue) } }
    /// If-Match or If-None-Match came in more than one field line: their values form one list, read
    /// from the head again by `RequestParser.fieldValues` (a rare case, kept off the common path).
    public var repeatedConditionalList: Bool {
        get { flag(Flag.repeatedConditionalList) } set { set(Flag.repeatedConditionalList, newValue) }
    }
    /// Range came more than once: the header is ignored (RFC 9110 section 14.2 lets a server ignore it).
    public var repeatedRange: Bool { get { flag(Flag.repeatedRange) } set { set(Flag.repeatedRange, newValue) } }
    /// Any of the validator or range fields came: one test on the common path instead of six.
    public var hasConditions: Bool { get { flag(Flag.hasConditions) } set { set(Flag.hasConditions, newValue) } }
    public var sentAcceptEncoding: Bool { get { flag(Flag.sentAcceptEncoding) } set { set(Flag.sentAcceptEncoding, newValue) } }
    /// Accept-Encoding came in more than one field line (one list, read again by `fieldValues`).
    public var repeatedAcceptEncoding: Bool {
        get { flag(Flag.repeatedAcceptEncoding) } set { set(Flag.repeatedAcceptEncoding, newValue) }
    }
    public var repeatedForwarding: Bool { get { flag(Flag.repeatedForwarding) } set { set(Flag.repeatedForwarding, newValue) } }
    /// Bytes consumed, from the first byte through the blank line (heads are limited far below 2 GiB).
    public var headLength: Int { get { Int(length32) } set { length32 = Int32(truncatingIfNeeded: newValue) } }

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
    /// Longest single header field line, name and value (431).
    public var headerField: Int

    public init(requestLine: Int = 8192, headerBytes: Int = 16_384, headerCount: Int = 100, headerField: Int = 8192) {
        self.requestLine = requestLine
        self.headerBytes = headerBytes
        self.headerCount = headerCount
        self.headerField = headerField
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
