import Glibc

/// One HTTP/2 stream's request and response body, from its HEADERS frame to its close: where the body's
/// next bytes come from (memory, a range of the representation's file, the next part of a multipart
/// body, or the next piece of a body compressed as it goes) and how far it has gone. DATA frames read
/// from it as the peer's flow-control windows allow, so it keeps what the response pointed to: the
/// representation (its fd and in-memory bytes) and a copy of bytes the handler would reuse.
///
/// Reused: a worker keeps closed streams in a pool (`HTTP2Codec.pool`), so a request does not
/// allocate one.
final class HTTP2Stream {
    var id: Int32 = 0
    /// Where it is in its session's `streams`.
    var slot = 0
    /// A header block for this stream is being received (HEADERS without END_HEADERS yet).
    var receivingHeaders = true
    /// Request fields past the limits (bytes or count): answered with 431, the rest not kept.
    var headersTooLarge = false
    /// Decoded header bytes and fields so far (RFC 9113 section 6.5.2 counts 32 bytes per field).
    var headerBytes = 0
    var headerCount = 0
    /// Where the pseudo-header values and Host are in the codec's `pseudo` buffer (start, end), -1 when
    /// absent.
    var method = (-1, -1)
    var path = (-1, -1)
    var authority = (-1, -1)
    var host = (-1, -1)
    /// The request line (and Host from :authority) is in the codec's `request` buffer: the first
    /// regular field came (pseudo-header fields all come before it, RFC 9113 section 8.3).
    var requestLineWritten = false
    /// The request's Content-Length, -1 when it declared none, and the body bytes received (dropped).
    var declaredLength: Int64 = -1
    var bodyReceived: Int64 = 0
    /// The response has ended (its END_STREAM went).
    var answered = false
    /// A response body is being sent (counted in the session's `sending`).
    var sending = false
    /// Monotonic microseconds when the request was answered; 0 once its duration is counted.
    var startedAt: UInt64 = 0

    // The body still to send.
    var representation: CachedFile?
    /// In-memory bytes to send from `memoryOffset` (static text, the representation's bytes, `owned`,
    /// a part's prefix, a compressed piece).
    var memory = UnsafeRawBufferPointer(start: nil, count: 0)
    var memoryOffset = 0
    /// A copy of bytes whose owner would change them before the stream is done: what the handler made
    /// (a listing, a page: it reuses the memory for its next response) or a multipart part's prefix.
    var owned: UnsafeMutableRawBufferPointer?
    /// The representation's bytes `fileOffset..<fileEnd` go after `memory`.
    var fileOffset: Int64 = 0
    var fileEnd: Int64 = 0
    /// Multipart: the parts after the current one.
    var parts: [ResponsePart] = []
    var partIndex = 0
    /// A body compressed as it is sent: `memory` holds its current piece.
    var compression: CompressionStream?

    /// The response's date and field lines, where its header list points (`HTTP2Codec.submit`): kept
    /// until the stream closes, and reused by the stream's next life in the pool.
    private var fields: UnsafeMutablePointer<UInt8>?
    private var fieldsCapacity = 0

    /// The field storage, with room for `count` bytes (what it held is not kept when it grows).
    @inline(__always)
    func fieldStorage(_ count: Int) -> UnsafeMutablePointer<UInt8> {
        if let fields, count <= fieldsCapacity { return fields }
        fields?.deallocate()
        fieldsCapacity = max(count, 512)
        let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: fieldsCapacity)
        fields = storage
        return storage
    }

    /// Ready for a new stream `id`.
    func reset(id: Int32) {
        self.id = id
        receivingHeaders = true
        headersTooLarge = false
        headerBytes = 0
        headerCount = 0
        method = (-1, -1)
        path = (-1, -1)
        authority = (-1, -1)
        host = (-1, -1)
        requestLineWritten = false
        declaredLength = -1
        bodyReceived = 0
        answered = false
        sending = false
        startedAt = 0
        releaseBody()
    }

    /// Drops what the body held (the stream closed, or is going back to the pool).
    func releaseBody() {
        if representation != nil { representation = nil }
        memory = UnsafeRawBufferPointer(start: nil, count: 0)
        memoryOffset = 0
        if let owned { owned.deallocate() }
        owned = nil
        fileOffset = 0
        fileEnd = 0
        if !parts.isEmpty { parts = [] }
        partIndex = 0
        if compression != nil { compression = nil }
    }

    /// Sets up the body of `response` (not for HEAD); false when it has none. A body compressed as it
    /// is sent carries `pendingLog`, its access log line.
    func load(_ response: borrowing Response, pendingLog: AccessLog.PendingLine?) -> Bool {
        switch response.body {
        case .none:
            return false
        case .text(let text):
            memory = UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)
        case .bytes(let bytes):
            if response.representation != nil {
                // The representation's own copy, kept alive with it.
                representation = response.representation
                memory = bytes
            } else {
                own(bytes)
            }
        case .fileRange(let start, let end):
            if start == end { return false }
            representation = response.representation
            fileOffset = start
            fileEnd = end
        case .multipart(let list):
            representation = response.representation
            parts = Array(list)
            partIndex = 0
            nextPart()
        case .compressStream(let coding, let level):
            guard let source = response.representation, let stream = CompressionStream(source: source, coding: coding, level: level) else { return false }
            stream.pendingLog = pendingLog
            representation = source
            compression = stream
        }
        return true
    }

    /// Sends a copy of `bytes` next.
    func own(_ bytes: UnsafeRawBufferPointer) {
        if let owned { owned.deallocate() }
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
        if bytes.count > 0 { copy.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        owned = copy
        memory = UnsafeRawBufferPointer(start: copy.baseAddress, count: bytes.count)
        memoryOffset = 0
    }

    deinit {
        owned?.deallocate()
        fields?.deallocate()
    }

    /// Moves to the next multipart part: its prefix in memory, then its range of the file.
    func nextPart() {
        guard partIndex < parts.count else { return }
        parts[partIndex].prefix.withUnsafeBytes { own($0) }
        fileOffset = parts[partIndex].start
        fileEnd = parts[partIndex].end
        partIndex += 1
    }

    /// What the next DATA frame can carry, at most `limit` bytes (from memory while it has bytes, else
    /// from the file: `HTTP2Codec.writeData` takes them in the same order), and whether the body ends
    /// with it. Moves to the next part or compressed piece when the
    /// current one is used up; nil when the file cannot be read (the stream is reset).
    func nextSlice(limit: Int) -> (count: Int, last: Bool)? {
        while true {
            let inMemory = memory.count - memoryOffset
            if inMemory > 0 {
                let count = min(limit, inMemory)
                return (count, count == inMemory && fileOffset >= fileEnd && nothingAfterPart)
            }
            let inFile = fileEnd - fileOffset
            if inFile > 0 {
                let count = Int(min(Int64(limit), inFile))
                return (count, Int64(count) == inFile && nothingAfterPart)
            }
            if partIndex < parts.count {
                nextPart()
                continue
            }
            if let stream = compression, !stream.finished {
                var consumed = 0
                guard let piece = stream.nextData(consumed: &consumed) else { return nil }
                memory = piece
                memoryOffset = 0
                continue
            }
            return (0, true)
        }
    }

    /// No part and no compressed piece follows the current one.
    private var nothingAfterPart: Bool {
        partIndex >= parts.count && (compression == nil || compression!.finished)
    }
}
