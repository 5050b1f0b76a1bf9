import CNghttp2
import Glibc

/// One connection's HTTP/2 state: libnghttp2's session (framing, HPACK, flow control, stream states,
/// the RFC 9113 message checks), the streams it carries, and the request header block being received.
/// The library does no I/O: `HTTP2Codec` feeds it what the connection read and sends what it produces.
///
/// Owned by its `Connection` (freed with it); refers back to the connection and the codec without
/// owning them, since both outlive it.
final class HTTP2Session {
    private(set) var session: OpaquePointer!
    unowned(unsafe) let connection: Connection
    /// The worker's codec, which outlives every session; lent to the callbacks as a guaranteed
    /// reference (`HTTP2Codec.with`), so a callback costs no retain and release of it.
    let codecReference: Unmanaged<HTTP2Codec>
    var codec: HTTP2Codec { codecReference.takeUnretainedValue() }
    /// Open streams that have a request (each knows its slot here; the library finds them by id
    /// through their stream user data).
    var streams: [HTTP2Stream] = []
    /// The open stream the last callback was about, and its id (`HTTP2Codec.with`): unretained, as the
    /// library's stream user data is, and forgotten when the stream closes.
    var recentStream: Unmanaged<HTTP2Stream>?
    var recentID: Int32 = 0
    /// A header block has begun and not ended: the header deadline runs.
    var receivingHeaders = false
    /// A header block that did not end in one read: what the codec had gathered of it, kept until the
    /// next read continues it (the codec's buffers serve every connection in turn).
    var savedBlock: [UInt8] = []
    var savedPseudo: [UInt8] = []
    /// Streams whose response body has not all gone (waiting for the client's flow-control windows).
    var sending = 0
    /// The highest stream id a client HEADERS frame used, which of the 64 odd ids up to it were opened,
    /// and which of those the client closed (END_STREAM or RST_STREAM received) (bit n:
    /// `lastStreamID - 2n`).
    var lastStreamID: Int32 = 0
    var openedStreams: UInt64 = 0
    var clientClosedStreams: UInt64 = 0
    /// Where the client's byte stream is, as the library reads it (`findDataOnClosedStream`): bytes of
    /// the preface or of a frame's payload still to pass, and a frame header split across reads.
    private var framesSkip = 24
    private var headerFill = 0
    private var headerLength = 0
    private var headerType: UInt8 = 0
    private var headerFlags: UInt8 = 0
    private var headerID: UInt32 = 0
    /// Requests on this connection (against `keepalive.requests`).
    var requests = 0
    /// DATA frames with no payload and no END_STREAM.
    var emptyDataFrames = 0
    /// A GOAWAY went or is queued: no new streams; the connection closes once the last stream is done.
    var goingAway = false
    /// The connection closes once its queued output has gone (the client's input ended, or an abuse
    /// ended the connection): nothing more is read or produced.
    var closeWhenFlushed = false
    /// Why this side ends the connection (an abuse a callback found), for the GOAWAY and the log.
    var abuse: (code: UInt32, reason: StaticString)?
    /// The connection's end was logged already (no second line for its GOAWAY).
    var logged = false
    /// Stream resets the client may still send (a token bucket: `http2.reset_burst`, refilled at
    /// `http2.resets_per_second`), and when it was last refilled (monotonic milliseconds).
    var resetTokens: Double
    var resetRefilled: Int64 = 0
    /// Something finished this turn (a stream, or bytes went out): the phase's deadline starts again.
    var progressed = false
    /// The library's frame buffer and stream table, and whether their pages may be resident (see
    /// `SessionPages`).
    let pages: UnsafeMutablePointer<SessionPages>
    /// How long a connection stays idle before those pages go (the worker looks every 250 ms, so they
    /// go 250-500 ms after the last frame): a browser's next request after a page has loaded usually
    /// comes later than that, and a busy connection never pays the page faults.
    static let quietMilliseconds: Int64 = 250

    init?(connection: Connection, codec: HTTP2Codec) {
        self.connection = connection
        codecReference = Unmanaged.passUnretained(codec)
        resetTokens = Double(codec.settings.resetBurst)
        resetRefilled = codec.now
        pages = .allocate(capacity: 1)
        pages.initialize(to: SessionPages(creating: 1, resident: 1, start: nil, size: 0, table: nil, tableSize: 0))
        var memory = cnghttp2_session_memory(pages)
        var pointer: OpaquePointer?
        let created = nghttp2_session_server_new3(&pointer, codec.callbacks, Unmanaged.passUnretained(self).toOpaque(), codec.options, &memory)
        pages.pointee.creating = 0
        guard created == 0, let pointer else { return nil }
        session = pointer
    }

    deinit {
        if let session { nghttp2_session_del(session) }
        pages.deallocate()
        for stream in streams { stream.releaseBody() }
    }

    /// Gives the pages of the library's frame buffer and empty stream table back to the kernel, when
    /// nothing is waiting to be framed: an idle connection then holds none of their 20 KiB
    /// (`HTTP2Codec.send` marks them resident again; the next frame, or the next stream, costs a page
    /// fault).
    func releasePages() {
        guard pages.pointee.resident != 0, nghttp2_session_want_write(session) == 0 else { return }
        pages.pointee.release()
    }

    /// A HEADERS frame begins on client stream `id`: a new id is remembered; one below the last that
    /// the client never opened (among the last 64) is a connection error (RFC 9113 section 5.1.1).
    @inline(__always)
    func noteHeaders(on id: Int32) -> Int32 {
        if id > lastStreamID {
            let shift = Int((id - lastStreamID) / 2)
            openedStreams = (shift >= 64 ? 0 : openedStreams << UInt64(shift)) | 1
            clientClosedStreams = shift >= 64 ? 0 : clientClosedStreams << UInt64(shift)
            lastStreamID = id
        } else if id < lastStreamID {
            let back = Int((lastStreamID - id) / 2)
            if back < 64 && openedStreams & (1 << UInt64(back)) == 0 {
                abuse = (NGHTTP2_PROTOCOL_ERROR.rawValue, "HEADERS on a stream below the last one opened: stream ids must increase")
                return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
            }
        }
        return 0
    }

    /// The client closed stream `id`: it ended it (a HEADERS or DATA frame with END_STREAM), or reset
    /// it while the server still had it open.
    @inline(__always)
    func noteClosedByClient(_ id: Int32) {
        guard id <= lastStreamID else { return }
        let back = Int((lastStreamID - id) / 2)
        if back < 64 { clientClosedStreams |= 1 << UInt64(back) }
    }

    /// Whether a DATA or HEADERS frame on client stream `id` comes after the stream closed, the client
    /// having closed it: the STREAM_CLOSED error of RFC 9113 section 5.1 ("closed": any frame after
    /// END_STREAM other than PRIORITY, WINDOW_UPDATE or RST_STREAM is a connection error; any frame
    /// but PRIORITY after receiving RST_STREAM is a stream error, which the RFC lets an endpoint treat
    /// as a connection error). The library keeps no closed streams
    /// (`nghttp2_option_set_no_closed_streams`: by default it keeps up to `max_concurrent_streams` of
    /// them, about 330 bytes each, for as long as the connection lives), so this side remembers the
    /// last 64 ids. A frame on a stream the server reset first is ignored, as the RFC asks after
    /// sending RST_STREAM, and so is one further back than 64 ids (the RFC lets an endpoint limit how
    /// long it remembers).
    @inline(__always)
    func isClosedByClient(_ id: Int32) -> Bool {
        guard id > 0 && id & 1 == 1 && id <= lastStreamID else { return false }
        let back = Int((lastStreamID - id) / 2)
        return back < 64 && clientClosedStreams & (1 << UInt64(back)) != 0 && nghttp2_session_find_stream(session, id) == nil
    }

    /// Whether a frame of `type` with `flags` closes its stream from the client's side.
    @inline(__always)
    static func closesStream(_ type: UInt8, _ flags: UInt8) -> Bool {
        type == UInt8(NGHTTP2_RST_STREAM.rawValue)
            || (flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
                && (type == UInt8(NGHTTP2_DATA.rawValue) || type == UInt8(NGHTTP2_HEADERS.rawValue)))
    }

    /// A stream's bit among those a read's frames close (ids 128 apart share one: a false match only
    /// costs one more call into the library).
    @inline(__always)
    static func closingBit(_ id: Int32) -> UInt64 { 1 << UInt64((id >> 1) & 63) }

    /// Follows the client's frames through `input`, the bytes the library is about to read (it drops
    /// DATA on a stream it no longer knows without a callback), to the first DATA frame it must not read
    /// as it comes: `closed` when that frame's stream is one the client closed and that has closed (0
    /// when its header began in an earlier read), else one that a frame earlier in `input` may close
    /// (the codec hands the library what comes before it, then looks again from there, the library
    /// having said by then). Nil when there is none. A frame header costs a few instructions; payloads
    /// are skipped whole.
    func findDataOnClosedStream(_ input: UnsafeRawBufferPointer) -> (index: Int, closed: Bool)? {
        var index = 0
        let count = input.count
        var closing: UInt64 = 0
        while index < count {
            if framesSkip > 0 {
                let step = min(framesSkip, count - index)
                framesSkip -= step
                index += step
                continue
            }
            if headerFill == 0 && count - index >= 9 {
                let length = Int(input[index]) << 16 | Int(input[index + 1]) << 8 | Int(input[index + 2])
                let id = Int32(bitPattern: (UInt32(input[index + 5]) << 24 | UInt32(input[index + 6]) << 16
                    | UInt32(input[index + 7]) << 8 | UInt32(input[index + 8])) & 0x7fff_ffff)
                let type = input[index + 3]
                if type == UInt8(NGHTTP2_DATA.rawValue) {
                    if isClosedByClient(id) { return (index, true) }
                    if closing & HTTP2Session.closingBit(id) != 0 { return (index, false) }
                }
                if HTTP2Session.closesStream(type, input[index + 4]) { closing |= HTTP2Session.closingBit(id) }
                framesSkip = length
                index += 9
                continue
            }
            let byte = input[index]
            switch headerFill {
            case 0...2: headerLength = headerLength << 8 | Int(byte)
            case 3: headerType = byte
            case 4: headerFlags = byte
            default: headerID = headerID << 8 | UInt32(byte)
            }
            headerFill += 1
            index += 1
            if headerFill == 9 {
                let id = Int32(bitPattern: headerID & 0x7fff_ffff)
                // Begun in an earlier read: no frame of this read comes before it.
                if headerType == UInt8(NGHTTP2_DATA.rawValue) && isClosedByClient(id) { return (0, true) }
                if HTTP2Session.closesStream(headerType, headerFlags) { closing |= HTTP2Session.closingBit(id) }
                framesSkip = headerLength
                headerFill = 0
                headerLength = 0
                headerID = 0
            }
        }
        return nil
    }

    /// Adds a stream that begins.
    @inline(__always)
    func add(_ stream: HTTP2Stream) {
        stream.slot = streams.count
        streams.append(stream)
    }

    /// Removes a stream that closed (the last one takes its slot).
    @inline(__always)
    func remove(_ stream: HTTP2Stream) {
        if recentStream?.toOpaque() == Unmanaged.passUnretained(stream).toOpaque() { recentStream = nil }
        let last = streams.removeLast()
        if last !== stream {
            streams[stream.slot] = last
            last.slot = stream.slot
        }
    }

    /// Whether the connection has nothing left to do: a GOAWAY went (either way) and no stream is open.
    var isDone: Bool {
        (goingAway && streams.isEmpty && nghttp2_session_want_write(session) == 0)
            || (nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0)
    }
}

/// Two of libnghttp2's allocations, given pages of their own so that an idle connection can give them
/// back; with them, an idle session holds about 9 KiB instead of 25.
///
/// - The outbound frame buffer: the library allocates it when the session is made (16,394 bytes: the
///   largest frame it writes, NGHTTP2_FRAMEBUF_CHUNKLEN in 1.52) and keeps it for the session's life.
///   Every frame is serialised into it and handed out by `nghttp2_session_mem_send`, which the codec
///   copies at once; with nothing left to send (`nghttp2_session_want_write` is 0) what it holds is
///   frames already copied, so its whole pages can go (MADV_DONTNEED: zeros when next touched).
/// - The stream table: a hash table of 256 16-byte buckets, calloc'd when the session is made and
///   kept (it only grows). The library zeroes a bucket when its stream goes, so a table with no stream
///   in it is all zeros, as it was made: its pages can go when they read all zeros, which is checked
///   each time, whatever the library version (a page given back reads as zeros again).
///
/// The session's allocator (`cnghttp2_session_memory`, in C since the library calls it for every
/// allocation, with this record as its user data) is glibc's malloc for everything except, while the
/// session is created, the first allocation of at least 16 KiB and the first zeroed one of whole
/// pages: those are page-aligned, so their whole pages are their own. The record forgets one the library
/// frees or moves. Should a later library allocate differently, nothing is found and nothing is given
/// back (the memory test says so).
typealias SessionPages = cnghttp2_pages

extension cnghttp2_pages {
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Gives the frame buffer's whole pages back, and the stream table's if it is empty.
    mutating func release() {
        resident = 0
        if let start {
            let length = size & ~(SessionPages.pageSize - 1)
            if length > 0 { madvise(start, length, MADV_DONTNEED) }
        }
        if let table {
            let words = UnsafeBufferPointer(start: table.assumingMemoryBound(to: UInt64.self), count: tableSize / 8)
            var any: UInt64 = 0
            for word in words { any |= word }
            if any == 0 { madvise(table, tableSize, MADV_DONTNEED) }
        }
    }
}
