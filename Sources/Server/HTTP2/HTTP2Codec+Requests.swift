import CNghttp2
import Glibc

/// Requests and responses over HTTP/2: a request header block rebuilt as an HTTP/1.1 head as its fields
/// arrive, parsed and answered by the same parser and handler as HTTP/1.1; the answer submitted as a
/// header list and a data provider that reads from the stream.
extension HTTP2Codec {
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
            stream.declaredLength = head.contentLength
            let exchange = rules.exchange(head, bytes, connection, checkHost: hstsLength > 0)
            if rules.bodyTooLarge(head.contentLength) {
                return send(session, stream, handler.error(.contentTooLarge, now: now), exchange, head, bytes)
            }
            let response = handler.respond(exchange, head, bytes, connection, now: now)
            if handler.dropConnection {
                // `unmatched_host: close`: no answer; the stream is cancelled.
                handler.dropConnection = false
                nghttp2_submit_rst_stream(session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, NGHTTP2_CANCEL.rawValue)
                return
            }
            send(session, stream, response, exchange, head, bytes)
        }
    }

    /// Counts and logs the answer to a request, then submits it.
    private func send(
        _ session: HTTP2Session, _ stream: HTTP2Stream, _ response: borrowing Response, _ exchange: Exchange, _ head: borrowing RequestHead,
        _ bytes: UnsafeRawBufferPointer
    ) {
        Stats.count(response.status, in: stats)
        accessLog.record(bytes, head, exchange, response)
        submit(session, stream, response, exchange)
    }

    /// Answers a request that did not parse (or whose fields were too large) with `status`, logged by
    /// its request line when there is one.
    private func answerUnparsed(_ session: HTTP2Session, _ stream: HTTP2Stream, _ status: HTTPStatus, bytes: UnsafeRawBufferPointer?) {
        let connection = session.connection
        let exchange = Exchange.unparsed(peer: connection.peer, secure: connection.isSecure)
        let response = handler.error(status, now: now)
        Stats.count(response.status, in: stats)
        if let bytes { accessLog.recordUnparsed(bytes, client: exchange.client, status: status, bodyBytes: response.bodyLength) }
        submit(session, stream, response, exchange)
    }

    /// The response's HEADERS (:status, server, date, strict-transport-security, then the handler's
    /// fields with their names in lowercase and HTTP/1.1's connection-specific ones left out) and its
    /// body as DATA frames read from the stream.
    private func submit(_ session: HTTP2Session, _ stream: HTTP2Stream, _ response: borrowing Response, _ exchange: Exchange) {
        var count = 0
        // The library takes the fields without copying them (NGHTTP2_NV_FLAG_NO_COPY_*): what is not
        // static goes into the stream's own storage, which stays until the stream closes, after its
        // HEADERS frame is made. Names are lowered there, in place.
        let fields = response.fields
        let storage = stream.fieldStorage(HTTPDate.length + fields.count)
        storage.update(from: date, count: HTTPDate.length)
        let statusName: StaticString = ":status"
        let statusLine = response.status.statusLine
        addField(&count, statusName.utf8Start, 7, statusLine.utf8Start + 9, 3)
        let serverName: StaticString = "server"
        let serverValue: StaticString = "webserver"
        addField(&count, serverName.utf8Start, 6, serverValue.utf8Start, 9)
        let dateName: StaticString = "date"
        addField(&count, dateName.utf8Start, 4, storage, HTTPDate.length)
        let hstsName: StaticString = "strict-transport-security"
        if hstsLength > 0 && exchange.secure && !exchange.hostIsLocal {
            addField(&count, hstsName.utf8Start, 25, hstsValue, hstsLength)
        }
        // Field lines "Name: value" CRLF, split, the connection-specific ones left out.
        if let base = fields.baseAddress, fields.count > 0 {
            let start = storage + HTTPDate.length
            start.update(from: base.assumingMemoryBound(to: UInt8.self), count: fields.count)
            let end = start + fields.count
            var line = start
            while line < end {
                guard let found = memchr(line, 10, end - line) else { break }
                let lineEnd = found.assumingMemoryBound(to: UInt8.self)
                let valueEnd = lineEnd > line && lineEnd[-1] == 13 ? lineEnd - 1 : lineEnd
                if let nameLength = HTTP2Codec.lowercaseName(line, valueEnd - line, into: line),
                    nameLength > 0 && !HTTP2Codec.isConnectionSpecific(line, nameLength)
                {
                    var value = line + nameLength + 1
                    while value < valueEnd && (value.pointee == 0x20 || value.pointee == 0x09) { value += 1 }
                    addField(&count, line, nameLength, value, valueEnd - value)
                }
                line = lineEnd + 1
            }
        }
        let hasBody = !exchange.isHead && stream.load(response, pendingLog: accessLog.takePending())
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

    /// Adds a field to the response's header list: a lowercase name and a value that stay as they are
    /// until the stream closes (the library does not copy them).
    @inline(__always)
    func addField(_ count: inout Int, _ name: UnsafePointer<UInt8>, _ nameLength: Int, _ value: UnsafePointer<UInt8>, _ valueLength: Int) {
        guard count < HTTP2Codec.fieldListCapacity else { return }
        fieldList[count] = nghttp2_nv(
            name: UnsafeMutablePointer(mutating: name), value: UnsafeMutablePointer(mutating: value), namelen: nameLength,
            valuelen: valueLength, flags: UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue))
        count += 1
    }

    /// Copies the field name at `line` (the bytes before its colon, within `limit` bytes) into `target`
    /// in lowercase, eight bytes at a time; its length, or nil when there is no colon within `limit`.
    /// `target` gets up to `limit` bytes: the bytes after the name are copied unchanged, so `target`
    /// may be `line` itself.
    @inline(__always)
    static func lowercaseName(_ line: UnsafePointer<UInt8>, _ limit: Int, into target: UnsafeMutablePointer<UInt8>) -> Int? {
        var offset = 0
        while offset + 8 <= limit {
            let word = UInt64(littleEndian: UnsafeRawPointer(line + offset).loadUnaligned(as: UInt64.self))
            // A byte from 'A' to 'Z' (high bit clear) gets 0x20: in each byte of `ascii`, adding 0x25
            // sets the high bit above 'Z' and adding 0x3f from 'A' on, with no carry between bytes.
            let ascii = word & 0x7f7f_7f7f_7f7f_7f7f
            var upper = ((ascii &+ 0x3f3f_3f3f_3f3f_3f3f) ^ (ascii &+ 0x2525_2525_2525_2525)) & ~word & 0x8080_8080_8080_8080
            // The first ':' is the lowest zero byte of `word ^ ':'` (a borrow only marks bytes above it);
            // only the bytes below it are the name's.
            let colons = word ^ 0x3a3a_3a3a_3a3a_3a3a
            let zero = (colons &- 0x0101_0101_0101_0101) & ~colons & 0x8080_8080_8080_8080
            if zero != 0 { upper &= (zero & (0 &- zero)) &- 1 }
            UnsafeMutableRawPointer(target + offset).storeBytes(of: (word | (upper >> 2)).littleEndian, as: UInt64.self)
            if zero != 0 { return offset + zero.trailingZeroBitCount >> 3 }
            offset += 8
        }
        while offset < limit {
            let byte = line[offset]
            if byte == UInt8(ascii: ":") { return offset }
            target[offset] = byte &- 65 < 26 ? byte | 0x20 : byte
            offset += 1
        }
        return nil
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
