import CNghttp2

/// One connection's HTTP/2 state: libnghttp2's session (framing, HPACK, flow control, stream states,
/// the RFC 9113 message checks), the streams it carries, and the request header block being received.
/// The library does no I/O: `HTTP2Codec` feeds it what the connection read and sends what it produces.
///
/// Owned by its `Connection` (freed with it); refers back to the connection and the codec without
/// owning them, since both outlive it.
final class HTTP2Session {
    private(set) var session: OpaquePointer!
    unowned(unsafe) let connection: Connection
    unowned(unsafe) let codec: HTTP2Codec
    /// Open streams that have a request (each knows its slot here; the library finds them by id
    /// through their stream user data).
    var streams: [HTTP2Stream] = []
    /// A header block has begun and not ended: the header deadline runs.
    var receivingHeaders = false
    /// A header block that did not end in one read: what the codec had gathered of it, kept until the
    /// next read continues it (the codec's buffers serve every connection in turn).
    var savedBlock: [UInt8] = []
    var savedPseudo: [UInt8] = []
    /// Streams whose response body has not all gone (waiting for the client's flow-control windows).
    var sending = 0
    /// The highest stream id a client HEADERS frame used, and which of the 64 odd ids up to it were
    /// opened (bit n: `lastStreamID - 2n`).
    var lastStreamID: Int32 = 0
    var openedStreams: UInt64 = 0
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

    init?(connection: Connection, codec: HTTP2Codec) {
        self.connection = connection
        self.codec = codec
        resetTokens = Double(codec.settings.resetBurst)
        resetRefilled = codec.now
        var pointer: OpaquePointer?
        guard nghttp2_session_server_new2(&pointer, codec.callbacks, Unmanaged.passUnretained(self).toOpaque(), codec.options) == 0,
            let pointer
        else { return nil }
        session = pointer
    }

    deinit {
        if let session { nghttp2_session_del(session) }
        for stream in streams { stream.releaseBody() }
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
