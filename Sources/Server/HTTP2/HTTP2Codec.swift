import CNghttp2
import Glibc

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
    /// A response's header list, and its names in lowercase.
    let fieldList: UnsafeMutablePointer<nghttp2_nv>
    static let fieldListCapacity = 160
    let names: UnsafeMutablePointer<UInt8>
    static let namesCapacity = FieldBuffer.capacity
    /// Streams closed and ready for reuse.
    var pool: [HTTP2Stream] = []
    /// The clock as of this wake-up (the driver's), for the handler.
    var now: Int64 = 0
    /// Requests answered, for the worker's log at exit.
    private(set) var requestsTotal: UInt64 = 0

    deinit {
        nghttp2_session_callbacks_del(callbacks)
        nghttp2_option_del(options)
        buffer.deallocate()
        request.deallocate()
        pseudo.deallocate()
        hstsValue.deallocate()
        fieldList.deallocate()
        names.deallocate()
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
        names = .allocate(capacity: HTTP2Codec.namesCapacity)

        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        self.callbacks = callbacks!
        nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, HTTP2Codec.onBeginFrame)
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, HTTP2Codec.onBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, HTTP2Codec.onHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, HTTP2Codec.onFrameReceived)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, HTTP2Codec.onFrameSent)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, HTTP2Codec.onStreamClose)
        nghttp2_session_callbacks_set_send_data_callback(callbacks, HTTP2Codec.sendData)

        var options: OpaquePointer?
        nghttp2_option_new(&options)
        self.options = options!
        // The server never pushes; the client's SETTINGS_ENABLE_PUSH does not matter.
        nghttp2_option_set_max_continuations(options, settings.maxContinuations)
        // The library's own rapid-reset limit stays behind ours (which says ENHANCE_YOUR_CALM), as a backstop.
        nghttp2_option_set_stream_reset_rate_limit(options, UInt64(settings.resetBurst) * 2, UInt64(settings.resetsPerSecond) * 2)
        nghttp2_option_set_max_outbound_ack(options, settings.maxQueuedAcks)
        // Closed streams stay known to the library (a bounded number of them): a frame on a stream the
        // client ended is then the STREAM_CLOSED error RFC 9113 section 5.1 asks for, not silence.
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
        if session.receivingHeaders { restoreBlock(session) }
        let result = nghttp2_session_mem_recv(session.session, input.baseAddress?.assumingMemoryBound(to: UInt8.self), input.count)
        if session.receivingHeaders { saveBlock(session) }
        if result < 0 { return fail(connection, session, Int32(result), driver) }
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
        log.warning("HTTP/2: closing the connection from \(connection.peer.hostText) with GOAWAY(\(HTTP2Codec.name(code))): \(reason)")
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
            if connection.output.isEmpty { driver.finish(connection) } else { session.closeWhenFlushed = true }
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
        if !connection.output.isEmpty {
            switch output.flush(connection) {
            case .failed: return driver.close(connection)
            case .blocked: return driver.waitForSocket(connection)
            case .done: session.progressed = true
            }
        }
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
        if sent < total || extra != nil {
            var rest = Array(UnsafeRawBufferPointer(start: buffer + sent, count: total - sent))
            if let extra { rest.append(contentsOf: extra) }
            if sent == total, let extra {
                // Nothing was held back: try the extra bytes now.
                rest = []
                var offset = 0
                while offset < extra.count {
                    let count = connection.transport.write(connection.fd, extra.baseAddress! + offset, extra.count - offset, more: false)
                    if count > 0 { offset += count } else if count < 0 && errno == EINTR { continue } else { break }
                }
                stats[Stats.bytesSent] &+= UInt64(offset)
                if offset == extra.count { return true }
                rest = Array(UnsafeRawBufferPointer(rebasing: extra[offset...]))
            }
            connection.output.pending = rest
            connection.output.pendingOffset = 0
            driver.waitForSocket(connection)
            return false
        }
        return true
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

    // MARK: Requests

    /// Appends to the request being rebuilt (past its capacity, only counted).
    @inline(__always)
    func appendRequest(_ bytes: UnsafePointer<UInt8>, _ count: Int) {
        if requestCount + count <= requestCapacity { (request + requestCount).update(from: bytes, count: count) }
        requestCount += count
    }

    @inline(__always)
    func appendRequest(_ text: StaticString) { appendRequest(text.utf8Start, text.utf8CodeUnitCount) }

    /// The request line from :method and :path (CONNECT: its :authority), then Host from :authority.
    func writeRequestLine(_ stream: HTTP2Stream) {
        stream.requestLineWritten = true
        appendRequest(pseudo + max(stream.method.0, 0), max(stream.method.1 - stream.method.0, 0))
        appendRequest(" ")
        let target = stream.path.0 >= 0 ? stream.path : stream.authority
        appendRequest(pseudo + max(target.0, 0), max(target.1 - target.0, 0))
        appendRequest(" HTTP/1.1\r\n")
        if stream.authority.0 >= 0 {
            appendRequest("host: ")
            appendRequest(pseudo + stream.authority.0, stream.authority.1 - stream.authority.0)
            appendRequest("\r\n")
        }
    }

    /// A header block continues in this read: what was gathered of it goes back into the buffers.
    func restoreBlock(_ session: HTTP2Session) {
        requestCount = session.savedBlock.count
        session.savedBlock.withUnsafeBufferPointer { if let base = $0.baseAddress { request.update(from: base, count: $0.count) } }
        pseudoCount = session.savedPseudo.count
        session.savedPseudo.withUnsafeBufferPointer { if let base = $0.baseAddress { pseudo.update(from: base, count: $0.count) } }
        session.savedBlock = []
        session.savedPseudo = []
    }

    /// A header block did not end in this read: what was gathered of it is kept with its connection.
    func saveBlock(_ session: HTTP2Session) {
        session.savedBlock = Array(UnsafeBufferPointer(start: request, count: min(requestCount, requestCapacity)))
        session.savedPseudo = Array(UnsafeBufferPointer(start: pseudo, count: pseudoCount))
    }

    /// A whole request header block: the request rebuilt as an HTTP/1.1 head, parsed, answered.
    func respond(_ session: HTTP2Session, _ stream: HTTP2Stream) {
        let connection = session.connection
        stream.receivingHeaders = false
        session.receivingHeaders = false
        session.requests += 1
        requestsTotal += 1
        connection.requests += 1
        stats[Stats.http2Streams] &+= 1
        stream.startedAt = monotonicMicroseconds()
        if session.requests >= rules.keepaliveRequests { goAway(session) }
        // The request line and fields are in `request` already (see `onHeader`); the head ends here.
        if !stream.requestLineWritten { writeRequestLine(stream) }
        if stream.authority.0 < 0 && stream.host.0 >= 0 {
            appendRequest("host: ")
            appendRequest(pseudo + stream.host.0, stream.host.1 - stream.host.0)
            appendRequest("\r\n")
        }
        appendRequest("\r\n")
        let bytes = UnsafeRawBufferPointer(start: request, count: requestCount)
        if stream.headersTooLarge || requestCount > requestCapacity {
            return answerUnparsed(session, stream, .headerFieldsTooLarge, bytes: nil)
        }
        // RFC 9113 section 8.3.1: a Host that names another authority than :authority is malformed.
        if stream.authority.0 >= 0 && stream.host.0 >= 0 && !HTTP2Codec.sameBytes(pseudo, stream.authority, stream.host) {
            nghttp2_submit_rst_stream(session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, NGHTTP2_PROTOCOL_ERROR.rawValue)
            return
        }
        var head = RequestHead()
        switch RequestParser.parse(bytes, limits: rules.limits, into: &head) {
        case .incomplete:
            answerUnparsed(session, stream, .badRequest, bytes: bytes)
        case .invalid(let status):
            answerUnparsed(session, stream, status, bytes: bytes)
        case .complete:
            // The access log says which protocol carried the request: "HTTP/1.1" becomes "HTTP/2.0"
            // (same length) once parsed.
            let version: StaticString = "HTTP/2.0"
            (request + head.requestLine.end - 8).update(from: version.utf8Start, count: 8)
            Stats.count(head.method, in: stats)
            let exchange = rules.exchange(head, bytes, connection, checkHost: hstsLength > 0)
            if rules.bodyTooLarge(head.contentLength) {
                return send(session, stream, handler.error(.contentTooLarge, now: now), exchange, head, bytes)
            }
            send(session, stream, handler.respond(exchange, head, bytes, now: now), exchange, head, bytes)
        }
    }

    /// Counts and logs the answer to a request, then submits it.
    private func send(
        _ session: HTTP2Session, _ stream: HTTP2Stream, _ response: borrowing Response, _ exchange: Exchange, _ head: borrowing RequestHead,
        _ bytes: UnsafeRawBufferPointer
    ) {
        Stats.count(response.status, in: stats)
        if accessLog.fd >= 0 {
            accessLog.record(
                bytes, requestLine: head.requestLine, referer: head.referer, userAgent: head.userAgent, client: exchange.client,
                status: response.status, bodyBytes: exchange.isHead ? 0 : response.bodyLength)
        }
        submit(session, stream, response, exchange)
    }

    /// Answers a request that did not parse (or whose fields were too large) with `status`, logged by
    /// its request line when there is one.
    private func answerUnparsed(_ session: HTTP2Session, _ stream: HTTP2Stream, _ status: HTTPStatus, bytes: UnsafeRawBufferPointer?) {
        let connection = session.connection
        let exchange = Exchange.unparsed(peer: connection.peer, secure: connection.isSecure)
        let response = handler.error(status, now: now)
        Stats.count(response.status, in: stats)
        if let bytes, accessLog.fd >= 0 {
            accessLog.record(
                bytes, requestLine: AccessLog.firstLine(bytes), referer: .none, userAgent: .none, client: exchange.client,
                status: status, bodyBytes: response.bodyLength)
        }
        submit(session, stream, response, exchange)
    }

    /// The response's HEADERS (:status, server, date, strict-transport-security, then the handler's
    /// fields with their names in lowercase and HTTP/1.1's connection-specific ones left out) and its
    /// body as DATA frames read from the stream.
    private func submit(_ session: HTTP2Session, _ stream: HTTP2Stream, _ response: borrowing Response, _ exchange: Exchange) {
        var count = 0
        let statusName: StaticString = ":status"
        let statusLine = response.status.statusLine
        addField(&count, statusName.utf8Start, 7, statusLine.utf8Start + 9, 3)
        let serverName: StaticString = "server"
        let serverValue: StaticString = "webserver"
        addField(&count, serverName.utf8Start, 6, serverValue.utf8Start, 9)
        let dateName: StaticString = "date"
        addField(&count, dateName.utf8Start, 4, date, HTTPDate.length)
        let hstsName: StaticString = "strict-transport-security"
        if hstsLength > 0 && exchange.secure && !exchange.hostIsLocal {
            addField(&count, hstsName.utf8Start, 25, hstsValue, hstsLength)
        }
        // Field lines "Name: value" CRLF, split and the names lowercased into `names`.
        let fields = response.fields
        if let start = fields.baseAddress?.assumingMemoryBound(to: UInt8.self) {
            let end = start + fields.count
            var line = start
            var lowered = names
            let namesEnd = names + HTTP2Codec.namesCapacity
            while line < end {
                guard let found = memchr(line, 10, end - line) else { break }
                let lineEnd = UnsafePointer(found.assumingMemoryBound(to: UInt8.self))
                let valueEnd = lineEnd > line && lineEnd[-1] == 13 ? lineEnd - 1 : lineEnd
                var colon = line
                while colon < valueEnd && colon.pointee != UInt8(ascii: ":") { colon += 1 }
                let nameLength = colon - line
                if colon < valueEnd && nameLength > 0 && lowered + nameLength <= namesEnd
                    && !HTTP2Codec.isConnectionSpecific(line, nameLength) {
                    var value = colon + 1
                    while value < valueEnd && (value.pointee == 0x20 || value.pointee == 0x09) { value += 1 }
                    for offset in 0..<nameLength {
                        let byte = line[offset]
                        lowered[offset] = byte &- 65 < 26 ? byte | 0x20 : byte
                    }
                    addField(&count, lowered, nameLength, value, valueEnd - value)
                    lowered += nameLength
                }
                line = lineEnd + 1
            }
        }
        let hasBody = !exchange.isHead && stream.load(response)
        let result: Int32
        if hasBody {
            stream.sending = true
            session.sending += 1
            var provider = nghttp2_data_provider(
                source: nghttp2_data_source(ptr: Unmanaged.passUnretained(stream).toOpaque()), read_callback: HTTP2Codec.readData)
            result = nghttp2_submit_response(session.session, stream.id, fieldList, count, &provider)
        } else {
            result = nghttp2_submit_response(session.session, stream.id, fieldList, count, nil)
        }
        if result != 0 {
            log.error("HTTP/2: cannot submit a response: \(String(cString: nghttp2_strerror(result)))")
            nghttp2_submit_rst_stream(session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, NGHTTP2_INTERNAL_ERROR.rawValue)
        }
    }

    /// Adds a field to the response's header list (the library copies names and values).
    @inline(__always)
    func addField(_ count: inout Int, _ name: UnsafePointer<UInt8>, _ nameLength: Int, _ value: UnsafePointer<UInt8>, _ valueLength: Int) {
        guard count < HTTP2Codec.fieldListCapacity else { return }
        fieldList[count] = nghttp2_nv(
            name: UnsafeMutablePointer(mutating: name), value: UnsafeMutablePointer(mutating: value), namelen: nameLength,
            valuelen: valueLength, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        count += 1
    }

    /// Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding and Upgrade: HTTP/1.1's own fields,
    /// which an HTTP/2 message must not carry (RFC 9113 section 8.2.2).
    static func isConnectionSpecific(_ name: UnsafePointer<UInt8>, _ length: Int) -> Bool {
        @inline(__always) func matches(_ word: StaticString) -> Bool {
            for offset in 0..<length where name[offset] | 0x20 != word.utf8Start[offset] { return false }
            return true
        }
        switch length {
        case 7: return matches("upgrade")
        case 10: return matches("connection") || matches("keep-alive")
        case 16: return matches("proxy-connection")
        case 17: return matches("transfer-encoding")
        default: return false
        }
    }

    static func sameBytes(_ bytes: UnsafeMutablePointer<UInt8>, _ a: (Int, Int), _ b: (Int, Int)) -> Bool {
        guard a.1 - a.0 == b.1 - b.0 else { return false }
        for offset in 0..<(a.1 - a.0) where bytes[a.0 + offset] | 0x20 != bytes[b.0 + offset] | 0x20 { return false }
        return true
    }

    /// The RFC's name for an error code, for the log.
    static func name(_ code: UInt32) -> String {
        String(cString: nghttp2_http2_strerror(code))
    }
}
