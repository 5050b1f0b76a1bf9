import Glibc

/// HTTP/1.1 (and 1.0) on a connection: parses the requests in what was read, in order (pipelining),
/// skips their bodies, makes each one's `Exchange`, asks the `RequestHandler` for the answer, counts and
/// logs it, encodes its head and hands head and body to the `OutputWriter`. Also answers bytes that do
/// not parse (400) and heads that do not arrive in time (408), each with that connection's own facts.
///
/// Owns the buffer response heads are encoded in and the cached `Date` value. The `ConnectionDriver`
/// that owns the codec passes itself to each call (a parameter costs no reference counting; a stored
/// back reference would, on every call through it).
final class HTTP1Codec {
    let handler: RequestHandler
    let accessLog: AccessLog
    let output: OutputWriter
    let stats: UnsafeMutablePointer<UInt64>
    let rules: RequestRules
    let bodyLimits: BodyReader.Limits
    /// `Strict-Transport-Security: ...` CRLF, for TLS responses to hosts that are not local.
    let hstsLine: [UInt8]?
    /// Where a response head is encoded: the protocol's lines, then the handler's fields.
    let headBuffer: UnsafeMutablePointer<UInt8>
    static let headCapacity = 1024 + FieldBuffer.capacity
    /// The `Date` value, rebuilt once a second (`setDate`).
    let date: UnsafeMutablePointer<UInt8>
    /// Requests parsed (and bytes that did not parse), for the heartbeat.
    private(set) var requestsTotal: UInt64 = 0

    deinit {
        headBuffer.deallocate()
        date.deallocate()
    }

    init(config: ServerConfig, handler: RequestHandler, accessLog: AccessLog, output: OutputWriter, stats: UnsafeMutablePointer<UInt64>) {
        self.handler = handler
        self.accessLog = accessLog
        self.output = output
        self.stats = stats
        rules = RequestRules(config)
        bodyLimits = BodyReader.Limits(chunkLine: 4096, trailerBytes: config.limits.headerBytes)
        hstsLine = config.tls.hsts.map { Array("Strict-Transport-Security: \($0)\r\n".utf8) }
        headBuffer = .allocate(capacity: HTTP1Codec.headCapacity)
        date = .allocate(capacity: HTTPDate.length)
    }

    /// Rebuilds the `Date` value for `second`.
    func setDate(_ second: Int64) {
        var writer = ByteWriter(base: date, capacity: HTTPDate.length)
        HTTPDate.write(second, into: &writer)
    }

    // MARK: Requests

    /// Parses and answers the requests in `bytes` (the driver's read buffer), in order, skipping their
    /// bodies. Pipelining is bounded by the read buffer: while a response waits for the socket, at most
    /// what one read brought in is kept (the stash) and nothing more is read from that connection.
    func process(_ connection: Connection, _ input: UnsafeRawBufferPointer, _ driver: ConnectionDriver) {
        var offset = 0
        let length = input.count
        // Parsed in place and lent to respond(): the head is never copied.
        var head = RequestHead()
        while offset < length {
            if connection.body != nil {
                switch connection.body!.consume(UnsafeRawBufferPointer(rebasing: input[offset..<length])) {
                case .needMore:
                    offset = length
                case .done(let consumed):
                    offset += consumed
                    connection.body = nil
                case .invalid, .tooLarge:
                    // The response went out already; the framing is lost, so the connection ends.
                    connection.body = nil
                    connection.lingerOnClose = true
                    return driver.finish(connection)
                }
                continue
            }
            let bytes = UnsafeRawBufferPointer(rebasing: input[offset..<length])
            switch RequestParser.parse(bytes, limits: rules.limits, into: &head) {
            case .incomplete:
                connection.stash = Array(bytes)
                if connection.phase != .readingHead { connection.enter(.readingHead, at: driver.now, driver.timeouts) }
                return
            case .invalid(let status):
                requestsTotal += 1
                answerUnparsed(connection, status, bytes: bytes, driver)
                if driver.isOpen(connection) && connection.outputIsEmpty { driver.finish(connection) }
                return
            case .complete:
                // The next request's head gets its own header deadline, from its own first byte.
                connection.phase = .idle
                // The body bytes already here are read (and their framing checked) before the answer.
                offset += head.headLength + respond(connection, head, bytes, driver)
                if !driver.isOpen(connection) { return }  // closed while answering
                if head.hasBody && connection.closeAfterResponse { connection.lingerOnClose = true }
                if !connection.outputIsEmpty {
                    if !connection.closeAfterResponse && offset < length {
                        connection.stash = Array(UnsafeRawBufferPointer(rebasing: input[offset..<length]))
                    }
                    return
                }
                if connection.closeAfterResponse {
                    if offset < length { connection.lingerOnClose = true }
                    return driver.finish(connection)
                }
            }
        }
        connection.enter(connection.body != nil ? .readingBody : .idle, at: driver.now, driver.timeouts)
    }

    /// Answers one parsed request: its exchange, the connection's keep-alive decision, its body (the
    /// limit, the bytes of it already read, their framing, `100 Continue`), then the handler's answer.
    /// Returns how many bytes after the head belonged to the body; a body not all here yet is the
    /// connection's `body` reader, which skips the rest as it comes.
    func respond(_ connection: Connection, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, _ driver: ConnectionDriver) -> Int {
        requestsTotal += 1
        connection.requests += 1
        connection.startedAt = monotonicMicroseconds()
        Stats.count(head.method, in: stats)
        var exchange = rules.exchange(head, bytes, connection, checkHost: hstsLine != nil)
        if !head.keepAlive || driver.draining || connection.requests >= rules.keepaliveRequests {
            connection.closeAfterResponse = true
        }
        var consumed = 0
        if head.hasBody {
            // The body is never needed here, only skipped; one larger than limits.body is refused before
            // it is read (RFC 9110 section 15.5.14), and the connection closes after the 413.
            let length = head.contentLength
            if rules.bodyTooLarge(length) {
                connection.closeAfterResponse = true
                send(connection, handler.error(.contentTooLarge, now: driver.now), exchange, head, bytes, driver)
                return 0
            }
            // What of the body has come is read now: a message whose framing is broken (a bad chunk size,
            // a chunk without its CRLF) is invalid (RFC 9112 section 7.1) and gets 400, not an answer.
            var reader = head.chunked
                ? BodyReader(chunkedWithMaxContent: rules.bodyLimit, limits: bodyLimits) : BodyReader(contentLength: length)
            let rest = UnsafeRawBufferPointer(rebasing: bytes[head.headLength...])
            let read = reader.consume(rest)
            switch read {
            case .invalid, .tooLarge:
                connection.closeAfterResponse = true
                let status: HTTPStatus = read == .tooLarge ? .contentTooLarge : .badRequest
                send(connection, handler.error(status, now: driver.now), exchange, head, bytes, driver)
                return 0
            case .done(let bodyBytes):
                consumed = bodyBytes
            case .needMore:
                consumed = rest.count
                if !connection.closeAfterResponse { connection.body = reader }
                // RFC 9110 section 10.1.1: the client waits for 100 before sending; HTTP/1.0 ignores it.
                // (Values first: an `&&` whose right side reads the head would capture, and copy, all of it.)
                let expectsContinue = head.expectContinue
                let http11 = head.minorVersion == 1
                if expectsContinue && http11 && !connection.closeAfterResponse { exchange.expectsContinue = true }
            }
        }
        let response = handler.respond(exchange, head, bytes, connection, now: driver.now)
        if handler.dropConnection {
            // `unmatched_host: close`: no answer at all.
            handler.dropConnection = false
            driver.close(connection)
            return consumed
        }
        send(connection, response, exchange, head, bytes, driver)
        return consumed
    }

    /// Counts and logs the answer to a request, then encodes and sends it.
    func send(
        _ connection: Connection, _ response: borrowing Response, _ exchange: Exchange, _ head: borrowing RequestHead,
        _ bytes: UnsafeRawBufferPointer, _ driver: ConnectionDriver
    ) {
        count(response.status)
        accessLog.record(bytes, head, exchange, response)
        transmit(connection, response, exchange, driver)
    }

    /// Answers bytes that never became a request (`bytes`, logged by their first line) or a head that
    /// never arrived (408, not logged: there is no request line). The exchange is this connection's
    /// alone: HTTP/1.1, its peer, no Host (so no HSTS). The connection closes after it (RFC 9112
    /// section 9.6).
    func answerUnparsed(_ connection: Connection, _ status: HTTPStatus, bytes: UnsafeRawBufferPointer?, _ driver: ConnectionDriver) {
        connection.closeAfterResponse = true
        let exchange = Exchange.unparsed(peer: connection.peer, secure: connection.isSecure)
        let response = handler.error(status, now: driver.now)
        count(response.status)
        if let bytes { accessLog.recordUnparsed(bytes, client: exchange.client, status: status, bodyBytes: response.bodyLength) }
        transmit(connection, response, exchange, driver)
    }

    /// A plain HTTP request on a TLS socket (nginx's "plain HTTP request was sent to HTTPS port"): 400
    /// with a body that says to use https, logged by its request line; the connection closes after it.
    func answerPlainHTTPOnTLS(_ connection: Connection, _ bytes: UnsafeRawBufferPointer, _ driver: ConnectionDriver) {
        connection.closeAfterResponse = true
        let exchange = Exchange.unparsed(peer: connection.peer, secure: false)
        let response = handler.plainHTTPOnTLS()
        count(response.status)
        accessLog.recordUnparsed(bytes, client: exchange.client, status: response.status, bodyBytes: response.bodyLength)
        transmit(connection, response, exchange, driver)
    }

    @inline(__always)
    func count(_ status: HTTPStatus) { Stats.count(status, in: stats) }

    // MARK: Responses

    /// Encodes the head and starts the output; what the socket does not take waits for EPOLLOUT.
    func transmit(_ connection: Connection, _ response: borrowing Response, _ exchange: Exchange, _ driver: ConnectionDriver) {
        let length = encodeHead(response, exchange, connection)
        let progress = output.start(
            connection, head: UnsafeRawBufferPointer(start: headBuffer, count: length), response, headOnly: exchange.isHead)
        driver.responseStarted(connection, progress)
    }

    /// The head in HTTP/1.1 form: `100 Continue` when the client waits for it, the status line,
    /// Strict-Transport-Security (TLS, not a local host), Server, Date, Connection when it must be said,
    /// the handler's fields and the blank line.
    func encodeHead(_ response: borrowing Response, _ exchange: Exchange, _ connection: Connection) -> Int {
        var writer = ByteWriter(base: headBuffer, capacity: HTTP1Codec.headCapacity)
        if exchange.expectsContinue {
            writer.append(HTTPStatus.continue.statusLine)
            writer.append("\r\n")
        }
        writer.append(response.status.statusLine)
        if let hsts = hstsLine, exchange.secure, !exchange.hostIsLocal {
            hsts.withUnsafeBufferPointer { writer.append($0.baseAddress!, $0.count) }
        }
        writer.append("Server: webserver\r\nDate: ")
        writer.append(date, HTTPDate.length)
        if connection.closeAfterResponse {
            writer.append("\r\nConnection: close\r\n")
        } else if exchange.minorVersion == 0 {
            writer.append("\r\nConnection: keep-alive\r\n")
        } else {
            writer.append("\r\n")
        }
        writer.append(response.fields)
        writer.append("\r\n")
        // The protocol's lines take at most 1 KiB (tls.hsts is limited to 512 bytes), the fields at most
        // FieldBuffer.capacity or a file's header block (2 KiB of `headers` at most).
        assert(!writer.overflowed)
        return writer.count
    }
}
