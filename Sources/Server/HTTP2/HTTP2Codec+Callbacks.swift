import CNghttp2
import Glibc
import Logging

/// libnghttp2's callbacks: C functions that find their session through the user data pointer (the
/// `HTTP2Session`, unretained: its connection owns it) and the stream through the stream's user data or
/// its DATA source (the `HTTP2Stream`, held by the session's `streams`).
extension HTTP2Codec {
    // Each callback lends its session (and stream) to a method as guaranteed references: held by their
    // owners for the whole call, so they are used without a retain and release at every access.

    @inline(__always)
    static func session(_ userData: UnsafeMutableRawPointer?) -> HTTP2Session {
        Unmanaged<HTTP2Session>.fromOpaque(userData!).takeUnretainedValue()
    }

    /// Runs `body` with the codec, the session of `userData` and the stream `id` of `library` (nothing
    /// when it is not ours). The stream of the last call is at hand (`HTTP2Session.recentStream`): a
    /// request's callbacks (each of its fields, the end of its header block, its last frame sent) come
    /// one after another for one stream, and the library's lookup is a hash table search each time.
    @inline(__always)
    static func with(
        _ library: OpaquePointer?, _ id: Int32, _ userData: UnsafeMutableRawPointer?,
        _ body: (HTTP2Codec, HTTP2Session, HTTP2Stream) -> Int32
    ) -> Int32 {
        Unmanaged<HTTP2Session>.fromOpaque(userData!)._withUnsafeGuaranteedRef { session in
            let stream: Unmanaged<HTTP2Stream>
            if let recent = session.recentStream, session.recentID == id {
                stream = recent
            } else {
                guard let pointer = nghttp2_session_get_stream_user_data(library, id) else { return 0 }
                stream = Unmanaged<HTTP2Stream>.fromOpaque(pointer)
                session.recentStream = stream
                session.recentID = id
            }
            return session.codecReference._withUnsafeGuaranteedRef { codec in
                stream._withUnsafeGuaranteedRef { stream in body(codec, session, stream) }
            }
        }
    }

    /// A frame's header, before its payload: empty DATA frames are counted here (the library does not
    /// call this for DATA it drops unread, on a stream the server reset before the client closed it or
    /// closed too long ago to be kept: those cost only their 9-byte header, as an unknown frame type
    /// does); and a HEADERS frame on a stream the client skipped (a lower id than one it opened) is the
    /// connection error RFC 9113 section 5.1.1 names, which the library leaves to the application: it
    /// cannot tell a skipped stream from one long closed. The last 64 client stream ids are remembered.
    static let onBeginFrame: nghttp2_on_begin_frame_callback = { _, header, userData in
        guard let header else { return 0 }
        let type = header.pointee.type
        if type == UInt8(NGHTTP2_HEADERS.rawValue) {
            let id = header.pointee.stream_id
            guard id > 0 && id & 1 == 1 else { return 0 }
            return Unmanaged<HTTP2Session>.fromOpaque(userData!)._withUnsafeGuaranteedRef { session in
                if session.isClosedByClient(id) {
                    session.abuse = (NGHTTP2_STREAM_CLOSED.rawValue, "HEADERS on a stream the client had ended or reset")
                    return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
                }
                return session.noteHeaders(on: id)
            }
        }
        guard type == UInt8(NGHTTP2_DATA.rawValue), header.pointee.length == 0,
            header.pointee.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) == 0
        else { return 0 }
        let session = HTTP2Codec.session(userData)
        session.emptyDataFrames += 1
        if session.emptyDataFrames > session.codec.settings.maxEmptyDataFrames {
            session.abuse = (NGHTTP2_ENHANCE_YOUR_CALM.rawValue, "more empty DATA frames than http2.max_empty_data_frames")
            return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
        }
        return 0
    }

    /// A request's HEADERS frame begins: its stream, from the pool.
    static let onBeginHeaders: nghttp2_on_begin_headers_callback = { _, frame, userData in
        guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue), frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else {
            return 0
        }
        return Unmanaged<HTTP2Session>.fromOpaque(userData!)._withUnsafeGuaranteedRef { session in
            session.codecReference._withUnsafeGuaranteedRef { codec in codec.beginHeaders(session, frame.pointee.hd.stream_id) }
        }
    }

    func beginHeaders(_ session: HTTP2Session, _ id: Int32) -> Int32 {
        let stream = pool.popLast() ?? HTTP2Stream()
        stream.reset(id: id)
        session.add(stream)
        session.recentStream = Unmanaged.passUnretained(stream)
        session.recentID = id
        nghttp2_session_set_stream_user_data(session.session, id, Unmanaged.passUnretained(stream).toOpaque())
        requestCount = 0
        pseudoCount = 0
        session.receivingHeaders = true
        return 0
    }

    /// One decoded request field: the pseudo-header fields and Host kept apart, the rest as field lines,
    /// all counted against `limits` (decoded bytes plus 32 each, as SETTINGS_MAX_HEADER_LIST_SIZE
    /// counts; and fields, each cookie crumb one). Past a limit nothing more is kept and the request
    /// gets 431.
    static let onHeader: nghttp2_on_header_callback = { library, frame, name, nameLength, value, valueLength, _, userData in
        guard let frame, frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST, let name, let value else { return 0 }
        return HTTP2Codec.with(library, frame.pointee.hd.stream_id, userData) { codec, _, stream in
            codec.header(stream, name, nameLength, value, valueLength)
        }
    }

    func header(_ stream: HTTP2Stream, _ name: UnsafePointer<UInt8>, _ nameLength: Int, _ value: UnsafePointer<UInt8>, _ valueLength: Int) -> Int32 {
        guard stream.receivingHeaders else { return 0 }  // trailers: not needed
        let limits = rules.limits
        stream.headerBytes += nameLength + valueLength + 32
        stream.headerCount += 1
        if stream.headersTooLarge { return 0 }
        if stream.headerBytes > limits.headerBytes || stream.headerCount > limits.headerCount + 4
            || nameLength + valueLength + 2 > limits.headerField {
            stream.headersTooLarge = true
            return 0
        }
        if name[0] == UInt8(ascii: ":") || (nameLength == 4 && memcmp(name, "host", 4) == 0) {
            // Within the limits checked above, so it fits.
            let start = pseudoCount
            (pseudo + start).update(from: value, count: valueLength)
            pseudoCount += valueLength
            let span = (start, start + valueLength)
            switch (nameLength, name[1]) {
            case (7, UInt8(ascii: "m")): stream.method = span
            case (5, UInt8(ascii: "p")): stream.path = span
            case (10, UInt8(ascii: "a")): stream.authority = span
            case (4, UInt8(ascii: "o")): stream.host = span
            default: break  // :scheme (checked by the library)
            }
            return 0
        }
        if !stream.requestLineWritten { writeRequestLine(stream) }
        appendRequest(name, nameLength)
        appendRequest(": ")
        appendRequest(value, valueLength)
        appendRequest("\r\n")
        return 0
    }

    /// A whole frame received: a request's header block is answered; stream resets are counted.
    static let onFrameReceived: nghttp2_on_frame_recv_callback = { library, frame, userData in
        guard let frame else { return 0 }
        let header = frame.pointee.hd
        if header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            && (header.type == UInt8(NGHTTP2_HEADERS.rawValue) || header.type == UInt8(NGHTTP2_DATA.rawValue))
        {
            HTTP2Codec.session(userData).noteClosedByClient(header.stream_id)
        }
        switch header.type {
        case UInt8(NGHTTP2_HEADERS.rawValue):
            guard frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else { return 0 }
            return HTTP2Codec.with(library, header.stream_id, userData) { codec, session, stream in
                codec.respond(session, stream)
                return 0
            }
        case UInt8(NGHTTP2_RST_STREAM.rawValue):
            let session = HTTP2Codec.session(userData)
            // Reset while the server still had it: any frame but PRIORITY on it now is STREAM_CLOSED
            // (a stream the server reset first is gone from the library, and frames on it are ignored).
            if nghttp2_session_find_stream(library, header.stream_id) != nil { session.noteClosedByClient(header.stream_id) }
            // Rapid reset (CVE-2023-44487): each reset stream was a request answered for nothing.
            let codec = session.codec
            let elapsed = Double(max(0, codec.now - session.resetRefilled))
            session.resetRefilled = codec.now
            session.resetTokens = min(
                Double(codec.settings.resetBurst), session.resetTokens + elapsed * Double(codec.settings.resetsPerSecond) / 1000)
            guard session.resetTokens >= 1 else {
                session.abuse = (NGHTTP2_ENHANCE_YOUR_CALM.rawValue, "more stream resets than http2.reset_burst and http2.resets_per_second allow")
                return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
            }
            session.resetTokens -= 1
        default:
            break
        }
        return 0
    }

    /// A frame went out: a response's END_STREAM counts its duration (and ends the stream, with
    /// RST_STREAM(NO_ERROR), when the client is still sending a body nobody will read); a GOAWAY with
    /// an error is logged.
    static let onFrameSent: nghttp2_on_frame_send_callback = { library, frame, userData in
        guard let frame else { return 0 }
        let header = frame.pointee.hd
        if header.type == UInt8(NGHTTP2_GOAWAY.rawValue) {
            let session = HTTP2Codec.session(userData)
            let code = frame.pointee.goaway.error_code
            if code != NGHTTP2_NO_ERROR.rawValue && !session.logged {
                session.logged = true
                var detail = ""
                if let data = frame.pointee.goaway.opaque_data, frame.pointee.goaway.opaque_data_len > 0 {
                    detail = ": " + String(decoding: UnsafeBufferPointer(start: data, count: frame.pointee.goaway.opaque_data_len), as: UTF8.self)
                }
                // A flood is an abuse (a warning); a protocol error is a client's bug, not the operator's
                // business unless they look for it (info).
                log.log(
                    level: code == NGHTTP2_ENHANCE_YOUR_CALM.rawValue ? .warning : .info,
                    "HTTP/2: GOAWAY(\(HTTP2Codec.name(code))) to \(session.connection.peer.hostText)\(detail)")
            }
            return 0
        }
        guard header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0,
            header.type == UInt8(NGHTTP2_DATA.rawValue) || header.type == UInt8(NGHTTP2_HEADERS.rawValue)
        else { return 0 }
        return HTTP2Codec.with(library, header.stream_id, userData) { codec, session, stream in
            codec.finished(session, stream)
            return 0
        }
    }

    /// A response's last frame went: its duration counted, its body released; a request body still
    /// coming is read to its end or refused (below).
    func finished(_ session: HTTP2Session, _ stream: HTTP2Stream) {
        stream.releaseBody()
        if stream.startedAt != 0 {
            Stats.recordDuration(since: stream.startedAt, in: stats)
            stream.startedAt = 0
        }
        if stream.sending {
            stream.sending = false
            session.sending -= 1
        }
        session.progressed = true
        stream.answered = true
        // A request body still coming is read and dropped up to `limits.body` (its length checked by the
        // library against its content-length, RFC 9113 section 8.1.1), as nginx discards a body; past
        // that, or declared larger, it is refused with RST_STREAM(NO_ERROR) (section 8.1), not
        // uploaded for nothing.
        if nghttp2_session_get_stream_remote_close(session.session, stream.id) == 0
            && (rules.bodyTooLarge(stream.declaredLength) || rules.bodyTooLarge(stream.bodyReceived)) {
            nghttp2_submit_rst_stream(session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, NGHTTP2_NO_ERROR.rawValue)
        }
    }

    /// Request body bytes (dropped): counted against `limits.body` once the response has ended.
    static let onDataChunk: nghttp2_on_data_chunk_recv_callback = { library, _, id, _, length, userData in
        HTTP2Codec.with(library, id, userData) { codec, session, stream in
            stream.bodyReceived += Int64(length)
            if stream.answered && codec.rules.bodyTooLarge(stream.bodyReceived) {
                stream.answered = false  // one reset
                nghttp2_submit_rst_stream(session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, NGHTTP2_NO_ERROR.rawValue)
            }
            return 0
        }
    }

    /// A stream closed (answered, reset by either side, or refused): back to the pool.
    static let onStreamClose: nghttp2_on_stream_close_callback = { library, id, _, userData in
        HTTP2Codec.with(library, id, userData) { codec, session, stream in
            codec.closed(session, stream)
            return 0
        }
    }

    func closed(_ session: HTTP2Session, _ stream: HTTP2Stream) {
        if stream.receivingHeaders { session.receivingHeaders = false }
        if stream.sending {
            stream.sending = false
            session.sending -= 1
        }
        stream.releaseBody()
        session.progressed = true
        if pool.count < 256 { pool.append(stream) }
        // Last: without room in the pool, the session held the last reference.
        session.remove(stream)
    }

    /// What the next DATA frame of a stream carries (NGHTTP2_DATA_FLAG_NO_COPY: `sendData` writes it).
    static let readData: nghttp2_data_source_read_callback = { _, _, _, length, flags, source, _ in
        Unmanaged<HTTP2Stream>.fromOpaque(source!.pointee.ptr)._withUnsafeGuaranteedRef { stream in
            guard let slice = stream.nextSlice(limit: length) else {
                return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)  // the file shrank: RST_STREAM
            }
            flags!.pointee = NGHTTP2_DATA_FLAG_NO_COPY.rawValue | (slice.last ? NGHTTP2_DATA_FLAG_EOF.rawValue : 0)
            return slice.count
        }
    }

    /// Writes a DATA frame into the output buffer: its 9-byte header, then the payload copied from the
    /// stream's memory or read from the file straight into place.
    static let sendData: nghttp2_send_data_callback = { _, frame, frameHeader, length, source, userData in
        Unmanaged<HTTP2Session>.fromOpaque(userData!)._withUnsafeGuaranteedRef { session in
            session.codecReference._withUnsafeGuaranteedRef { codec in
                Unmanaged<HTTP2Stream>.fromOpaque(source!.pointee.ptr)._withUnsafeGuaranteedRef { stream in
                    codec.writeData(stream, frameHeader!, length)
                }
            }
        }
    }

    func writeData(_ stream: HTTP2Stream, _ frameHeader: UnsafePointer<UInt8>, _ length: Int) -> Int32 {
        guard buffered + 9 + length <= HTTP2Codec.bufferCapacity else { return NGHTTP2_ERR_WOULDBLOCK.rawValue }
        let target = buffer + buffered
        target.copyMemory(from: frameHeader, byteCount: 9)
        if length > 0 {
            if stream.memoryOffset < stream.memory.count {
                (target + 9).copyMemory(from: stream.memory.baseAddress! + stream.memoryOffset, byteCount: length)
                stream.memoryOffset += length
            } else {
                guard let file = stream.representation, readFully(file.fd, target + 9, length, at: stream.fileOffset) else {
                    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue  // the file shrank under us
                }
                stream.fileOffset += Int64(length)
            }
        }
        buffered += 9 + length
        return 0
    }
}
