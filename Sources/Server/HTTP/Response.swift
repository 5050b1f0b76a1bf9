/// A response as a handler describes it, before any protocol has written a byte of it: the status, the
/// header fields that belong to the answer, and where the body comes from. A protocol encoder adds its
/// own fields (the status line or `:status`, Date, Server, Connection, Strict-Transport-Security) and
/// sends the body; HEAD gets the same fields and no body.
///
/// Everything in it but the representation is a plain value or points into memory the handler or the
/// representation owns, valid until the handler makes its next response: the protocol encodes it at
/// once, and an encoder that sends later (HTTP/2, as the peer's window allows) copies what it keeps.
/// So a response costs no reference counting beyond its representation's, and no allocation.
struct Response: ~Copyable {
    var status: HTTPStatus
    /// Header field lines, each `Name: value` CRLF: a slice of the representation's prebuilt header
    /// block, or what the handler composed in its `FieldBuffer`.
    var fields: UnsafeRawBufferPointer
    /// The file (or its sidecar, or a gzip form made whole) the body reads from; for a body compressed
    /// as it is sent, the file itself. Nil for answers that are not about a file (built-in error bodies,
    /// redirects, listings).
    var representation: CachedFile?
    var body: ResponseBody

    @inline(__always)
    init(_ status: HTTPStatus, fields: UnsafeRawBufferPointer, representation: CachedFile? = nil, body: ResponseBody = .none) {
        self.status = status
        self.fields = fields
        self.representation = representation
        self.body = body
    }

    /// Body bytes a GET would carry (-1: not known before it is sent, a body compressed as it goes).
    var bodyLength: Int64 {
        switch body {
        case .none: return 0
        case .text(let text): return Int64(text.utf8CodeUnitCount)
        case .bytes(let bytes): return Int64(bytes.count)
        case .fileRange(let start, let end): return end - start
        case .multipart(let parts): return parts.reduce(0) { $0 + Int64($1.prefix.count) + $1.end - $1.start }
        case .compressStream: return -1
        }
    }
}

/// Where a response's body comes from. A plain value: what it points to is owned by the handler (valid
/// until its next response) or by the response's representation.
enum ResponseBody {
    case none
    /// A built-in text (error bodies).
    case text(StaticString)
    /// Bytes in memory: the representation's copy of itself (kept while the response holds the
    /// representation), or what the handler made (a listing, kept until its next response).
    case bytes(UnsafeRawBufferPointer)
    /// Bytes `start..<end` of the representation's file (sendfile, or read through TLS).
    case fileRange(Int64, Int64)
    /// multipart/byteranges: each part's boundary and headers, then its range of the representation.
    case multipart(UnsafeBufferPointer<ResponsePart>)
    /// The representation (the file itself) compressed with gzip at `level` while it is sent, in chunks.
    case compressStream(ContentCoding, level: Int)
}

/// One part of a multipart response: its boundary and headers, then bytes `start..<end` of the file.
/// The closing boundary is a part with an empty range.
struct ResponsePart {
    var prefix: [UInt8]
    var start: Int64
    var end: Int64
}

/// Where a handler composes header fields that are not a prebuilt block (errors, redirects, ranges):
/// one buffer per worker, reused by every response, so a `Response` that points into it is valid until
/// the next one is made.
struct FieldBuffer {
    let base: UnsafeMutablePointer<UInt8>
    /// Room for a redirect's Location (a target up to the default `limits.request_line`, 8 KiB; a longer
    /// one gets 414) and a file's fields with every `headers` rule (2 KiB at most); the protocol's own
    /// fields go in front of them.
    static let capacity = 9216

    static func allocate() -> FieldBuffer { FieldBuffer(base: .allocate(capacity: capacity)) }

    /// A writer at the start of the buffer.
    func writer() -> ByteWriter { ByteWriter(base: base, capacity: FieldBuffer.capacity) }
}
