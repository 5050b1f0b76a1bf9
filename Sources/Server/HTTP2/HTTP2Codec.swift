import CNghttp2
import Glibc
import Logging

/// HTTP/2 (RFC 9113) on a connection, through libnghttp2: what the connection reads goes to the
/// library (`nghttp2_session_mem_recv`), which calls back with each request's header fields; a whole
/// header block becomes a request the `RequestHandler` answers exactly as over HTTP/1.1 (the same
/// `Exchange`, `RequestHead` and `Response`), and the answer is submitted as HEADERS and DATA frames.
/// What the library produces (`nghttp2_session_mem_send`) is gathered in one buffer per worker and
/// written through the connection's `Transport`; DATA payloads are copied into it once, straight from
/// the representation's memory or read from its file (NGHTTP2_DATA_FLAG_NO_COPY), never through the
/// library's own buffers.
///
/// A request's fields are rebuilt as an HTTP/1.1 head (request line from :method and :path, Host from
/// :authority) and parsed by the same `RequestParser`, so every rule of the request path (limits with
/// their statuses, Host, validators, ranges, encodings) holds for both protocols; the library has
/// already refused what RFC 9113 section 8 forbids (uppercase names, connection-specific fields,
/// missing, repeated or misplaced pseudo-header fields, CR, LF or NUL in values).
///
/// Owns the library's callbacks and options, the output buffer, the buffer requests are rebuilt in and
/// the one response header lists are made in, and a pool of streams.
final class HTTP2Codec {
    let handler: RequestHandler
    let accessLog: AccessLog
    let output: OutputWriter
    let stats: UnsafeMutablePointer<UInt64>
    let rules: RequestRules
    /// The Strict-Transport-Security value (length 0: none), for TLS responses to hosts that are not local.
    let hstsValue: UnsafeMutablePointer<UInt8>
    let hstsLength: Int
    /// The `Date` value (the HTTP/1.1 codec's, rebuilt once a second).
    let date: UnsafeMutablePointer<UInt8>
    let settings: ServerConfig.HTTP2Settings
    let callbacks: OpaquePointer
    let options: OpaquePointer
    /// Where a connection's output is gathered before one write: the library's frames and DATA payloads.
    let buffer: UnsafeMutableRawPointer
    var buffered = 0
    static let bufferCapacity = 96 * 1024
    /// Gathering stops past this (a write's worth; room stays for one more frame of either kind).
    static let fillTarget = 64 * 1024
    /// Where a request is rebuilt as an HTTP/1.1 head for the parser, as its fields arrive; writes past
    /// `requestCapacity` are counted and dropped (the request gets 431).
    let request: UnsafeMutablePointer<UInt8>
    let requestCapacity: Int
    var requestCount = 0
    /// The values of :method, :path, :authority and Host of the header block being received.
    let pseudo: UnsafeMutablePointer<UInt8>
    var pseudoCount = 0
    /// A response's header list (the library copies the list, not the names and values it points to).
    let fieldList: UnsafeMutablePointer<nghttp2_nv>
    static let fieldListCapacity = 160
    /// Streams closed and ready for reuse.
    var pool: [HTTP2Stream] = []
    /// The clock as of this wake-up (the driver's), for the handler.
    var now: Int64 = 0
    /// Requests answered, for the worker's log at exit.
    var requestsTotal: UInt64 = 0

    deinit {
        nghttp2_session_callbacks_del(callbacks)
        nghttp2_option_del(options)
        buffer.deallocate()
        request.deallocate()
        pseudo.deallocate()
        hstsValue.deallocate()
        fieldList.deallocate()
    }

    init(
        config: ServerConfig, handler: RequestHandler, accessLog: AccessLog, output: OutputWriter, stats: UnsafeMutablePointer<UInt64>,
        date: UnsafeMutablePointer<UInt8>
    ) {
        self.handler = handler
        self.accessLog = accessLog
        self.output = output
        self.stats = stats
        self.date = date
        settings = config.http2
        rules = RequestRules(config)
        let hsts = Array((config.tls.hsts ?? "").utf8)
        hstsLength = hsts.count
        hstsValue = .allocate(capacity: max(hsts.count, 1))
        hstsValue.initialize(from: hsts, count: hsts.count)
        buffer = .allocate(byteCount: HTTP2Codec.bufferCapacity, alignment: 16)
        // The request line and Host are the pseudo-header fields' bytes, within the same limits.
        requestCapacity = config.limits.headerBytes + 64
        request = .allocate(capacity: requestCapacity)
        pseudo = .allocate(capacity: requestCapacity)
        fieldList = .allocate(capacity: HTTP2Codec.fieldListCapacity)

        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        self.callbacks = callbacks!
        nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, HTTP2Codec.onBeginFrame)
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, HTTP2Codec.onBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, HTTP2Codec.onHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, HTTP2Codec.onFrameReceived)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, HTTP2Codec.onFrameSent)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, HTTP2Codec.onStreamClose)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, HTTP2Codec.onDataChunk)
        nghttp2_session_callbacks_set_send_data_callback(callbacks, HTTP2Codec.sendData)

        var options: OpaquePointer?
        nghttp2_option_new(&options)
        self.options = options!
        // The server never pushes; the client's SETTINGS_ENABLE_PUSH does not matter.
        nghttp2_option_set_max_continuations(options, settings.maxContinuations)
        // The library's own rapid-reset limit stays behind ours (which says ENHANCE_YOUR_CALM), as a backstop.
        nghttp2_option_set_stream_reset_rate_limit(options, UInt64(settings.resetBurst) * 2, UInt64(settings.resetsPerSecond) * 2)
        nghttp2_option_set_max_outbound_ack(options, settings.maxQueuedAcks)
        // The library keeps no closed streams (by default up to max_concurrent_streams of them, about
        // 330 bytes each, for its priority tree, for the connection's life): a frame on a stream the
        // client ended is told apart by the session (`HTTP2Session.isClosedByClient`).
        nghttp2_option_set_no_closed_streams(options, 1)
        // The limit the library enforces on a stream's header list before the callbacks see it (a
        // second, looser line; `limits` decides the 431).
        nghttp2_option_set_max_send_header_block_length(options, 65_536)
    }

    // MARK: Connections

    /// Starts HTTP/2 on `connection` (after ALPN chose h2, or a plain connection opened with the
    /// preface): the session and the server's SETTINGS. False when the library cannot start one.
    func start(_ connection: Connection) -> Bool {
        guard let session = HTTP2Session(connection: connection, codec: self) else { return false }
        var entries = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: UInt32(settings.maxConcurrentStreams)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: UInt32(settings.initialWindowSize)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: UInt32(rules.limits.headerBytes)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
        ]
        guard nghttp2_submit_settings(session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count) == 0 else { return false }
        connection.http2 = session
        stats[Stats.http2Connections] &+= 1
        return true
    }

    /// Hands what the connection read to the library (which calls back with requests, answered at once),
    /// then sends what it has to send.
    func process(_ connection: Connection, _ session: HTTP2Session, _ input: UnsafeRawBufferPointer, _ driver: ConnectionDriver) {
        now = driver.now
        // DATA on a stream the client closed and that has closed: what comes before it is read, then the
        // connection ends with STREAM_CLOSED (RFC 9113 section 5.1). DATA after a frame of the same read
        // that may close its stream: what comes before it is read first, then it is looked at again.
        if session.receivingHeaders { restoreBlock(session) }
        var rest = input
        while true {
            let stop = session.findDataOnClosedStream(rest)
            let readable = stop.map { UnsafeRawBufferPointer(rebasing: rest[..<$0.index]) } ?? rest
            let result = nghttp2_session_mem_recv(session.session, readable.baseAddress?.assumingMemoryBound(to: UInt8.self), readable.count)
            if result < 0 { return fail(connection, session, Int32(result), driver) }
            guard let stop else { break }
            if stop.closed {
                session.abuse = (NGHTTP2_STREAM_CLOSED.rawValue, "DATA on a stream the client had ended or reset")
                return fail(connection, session, NGHTTP2_ERR_CALLBACK_FAILURE.rawValue, driver)
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[stop.index...])
        }
        if session.receivingHeaders { saveBlock(session) }
        // A connection that began while the worker drains: its first requests are answered, then GOAWAY.
        if driver.draining { goAway(session) }
        send(connection, session, driver)
    }

    /// The library refused the input as a whole (or a callback found an abuse): GOAWAY with the code
    /// that says why, logged, and the connection closes.
    func fail(_ connection: Connection, _ session: HTTP2Session, _ error: Int32, _ driver: ConnectionDriver) {
        var code = NGHTTP2_PROTOCOL_ERROR.rawValue
        var reason = String(cString: nghttp2_strerror(error))
        if let abuse = session.abuse {
            code = abuse.code
            reason = abuse.reason.description
        } else if error == NGHTTP2_ERR_FLOODED.rawValue {
            code = NGHTTP2_ENHANCE_YOUR_CALM.rawValue
            reason = "more control frames (SETTINGS, PING) waiting for their acknowledgement than http2.max_queued_acks"
        } else if error == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS.rawValue {
            code = NGHTTP2_ENHANCE_YOUR_CALM.rawValue
            reason = "more CONTINUATION frames after a HEADERS frame than http2.max_continuations"
        } else if error == NGHTTP2_ERR_BAD_CLIENT_MAGIC.rawValue {
            log.debug("closed a connection from \(connection.peer.hostText): not the HTTP/2 preface")
            return driver.close(connection)
        }
        log.log(
            level: code == NGHTTP2_ENHANCE_YOUR_CALM.rawValue ? .warning : .info,
            "HTTP/2: closing the connection from \(connection.peer.hostText) with GOAWAY(\(HTTP2Codec.name(code))): \(reason)")
        session.abuse = nil
        session.logged = true
        nghttp2_session_terminate_session(session.session, code)
        session.goingAway = true
        send(connection, session, driver)
        // Lingering: closing with the client's frames unread would make the kernel reset the
        // connection, and the client would lose the GOAWAY that says why.
        if driver.isOpen(connection) && connection.phase != .lingering {
            connection.lingerOnClose = true
            // A full socket: the GOAWAY goes out first (`ConnectionDriver.onWritable`), then the close.
            if connection.outputIsEmpty { driver.finish(connection) } else { session.closeWhenFlushed = true }
        }
    }

    /// Sends GOAWAY(NO_ERROR) with the last stream this side has taken: no new streams; those in flight
    /// finish, and the connection closes after the last (a drain, or `keepalive.requests` reached).
    func goAway(_ session: HTTP2Session) {
        guard !session.goingAway else { return }
        session.goingAway = true
        nghttp2_submit_goaway(
            session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nghttp2_session_get_last_proc_stream_id(session.session),
            NGHTTP2_NO_ERROR.rawValue, nil, 0)
    }

    /// Writes what is queued, then what the library has, in writes of up to `fillTarget`; what the socket
    /// does not take waits in the connection's output for EPOLLOUT. Then the connection's phase: closed
    /// when done, waiting for the socket, for the peer (a header block, a request body, or window for a
    /// response body) or idle.
    func send(_ connection: Connection, _ session: HTTP2Session, _ driver: ConnectionDriver) {
        if !connection.outputIsEmpty {
            switch output.flush(connection) {
            case .failed: return driver.close(connection)
            case .blocked: return driver.waitForSocket(connection)
            case .done: session.progressed = true
            }
        }
        session.pages.pointee.resident = 1
        while true {
            buffered = 0
            while buffered < HTTP2Codec.fillTarget {
                var data: UnsafePointer<UInt8>?
                let count = nghttp2_session_mem_send(session.session, &data)
                if count < 0 {
                    log.error("HTTP/2: \(String(cString: nghttp2_strerror(Int32(count))))")
                    return driver.close(connection)
                }
                if count == 0 { break }
                if buffered + count > HTTP2Codec.bufferCapacity {
                    // Larger than a frame buffer of the library's; not expected, kept correct anyway.
                    guard write(connection, extra: UnsafeRawBufferPointer(start: data, count: count), driver) else { return }
                    continue
                }
                (buffer + buffered).copyMemory(from: data!, byteCount: count)
                buffered += count
            }
            if buffered == 0 { break }
            guard write(connection, extra: nil, driver) else { return }
        }
        settle(connection, session, driver)
    }

    /// Writes the gathered output (and `extra` after it); false when the connection closed or must wait
    /// for the socket (the rest is queued).
    private func write(_ connection: Connection, extra: UnsafeRawBufferPointer?, _ driver: ConnectionDriver) -> Bool {
        let total = buffered
        var sent = 0
        while sent < total {
            let count = connection.transport.write(connection.fd, buffer + sent, total - sent, more: false)
            if count > 0 {
                sent += count
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno != EAGAIN {
                driver.close(connection)
                return false
            }
            break
        }
        stats[Stats.bytesSent] &+= UInt64(sent)
        buffered = 0
        connection.http2?.progressed = true
        if sent < total {
            var rest = Array(UnsafeRawBufferPointer(start: buffer + sent, count: total - sent))
            if let extra { rest.append(contentsOf: extra) }
            return queue(connection, rest, driver)
        }
        guard let extra else { return recordsWent(connection, driver) }
        var offset = 0
        while offset < extra.count {
            let count = connection.transport.write(connection.fd, extra.baseAddress! + offset, extra.count - offset, more: false)
            if count > 0 { offset += count } else if count < 0 && errno == EINTR { continue } else { break }
        }
        stats[Stats.bytesSent] &+= UInt64(offset)
        if offset == extra.count { return recordsWent(connection, driver) }
        return queue(connection, Array(UnsafeRawBufferPointer(rebasing: extra[offset...])), driver)
    }

    /// Whether the TLS records made of what was written all went; if some wait in the session (the
    /// socket took part of them), false, for `write`'s caller, and the rest goes at EPOLLOUT.
    private func recordsWent(_ connection: Connection, _ driver: ConnectionDriver) -> Bool {
        guard connection.transport.session?.hasPendingOutput == true else { return true }
        driver.waitForSocket(connection)
        return false
    }

    /// Keeps `rest` for EPOLLOUT (the socket is full); false, for `write`'s caller.
    private func queue(_ connection: Connection, _ rest: [UInt8], _ driver: ConnectionDriver) -> Bool {
        connection.output.pending = rest
        connection.output.pendingOffset = 0
        driver.waitForSocket(connection)
        return false
    }

    /// The connection's phase once everything that could go went.
    func settle(_ connection: Connection, _ session: HTTP2Session, _ driver: ConnectionDriver) {
        guard driver.isOpen(connection) else { return }
        if session.isDone {
            // The client may still be sending (window updates, a body): a lingering close, so that
            // unread input does not make the kernel reset what the last frames are still carrying.
            connection.lingerOnClose = true
            return driver.finish(connection)
        }
        let phase: Connection.Phase
        if session.sending > 0 {
            // Response bodies wait for the client to open its flow-control windows: a client that
            // does not read gets the send deadline, as a full socket would.
            phase = .writing
        } else if session.receivingHeaders {
            phase = .readingHead
        } else if !session.streams.isEmpty {
            // Waiting for the client: a request body it is still sending.
            phase = .readingBody
        } else {
            phase = .idle
        }
        if phase != connection.phase || session.progressed { connection.enter(phase, at: driver.now, driver.timeouts) }
        session.progressed = false
        driver.watch(connection, events: Poller.readable)
    }

    /// The connection's deadline passed: idle, it gets GOAWAY(NO_ERROR) and closes; a client that did
    /// not finish a header block or a request body, or did not open a window, is closed.
    func expire(_ connection: Connection, _ session: HTTP2Session, _ driver: ConnectionDriver) {
        if connection.phase == .idle {
            goAway(session)
            send(connection, session, driver)
        }
        if driver.isOpen(connection) { driver.close(connection) }
    }

    /// A drain: GOAWAY with the last stream taken; streams in flight finish, then the connection closes.
    func drain(_ connection: Connection, _ session: HTTP2Session, _ driver: ConnectionDriver) {
        goAway(session)
        send(connection, session, driver)
    }
}
