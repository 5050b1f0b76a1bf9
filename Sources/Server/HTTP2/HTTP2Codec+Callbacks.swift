import CNghttp2
import Glibc

/// libnghttp2's callbacks: C functions that find their session through the user data pointer (the
/// `HTTP2Session`, unretained: its connection owns it) and the stream through the stream's user data or
/// its DATA source (the `HTTP2Stream`, held by the session's `streams`).
extension HTTP2Codec {
    @inline(__always)
    static func session(_ userData: UnsafeMutableRawPointer?) -> HTTP2Session {
        Unmanaged<HTTP2Session>.fromOpaque(userData!).takeUnretainedValue()
    }

    /// A frame's header, before its payload and whatever its stream's state: empty DATA frames are
    /// counted here, so those sent on closed streams (which the library drops unseen) count too.
    static let onBeginFrame: nghttp2_on_begin_frame_callback = { _, header, userData in
        guard let header, header.pointee.type == UInt8(NGHTTP2_DATA.rawValue), header.pointee.length == 0,
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
        let session = HTTP2Codec.session(userData)
        let codec = session.codec
        let id = frame.pointee.hd.stream_id
        let stream = codec.pool.popLast() ?? HTTP2Stream()
        stream.reset(id: id)
        session.streams[id] = stream
        nghttp2_session_set_stream_user_data(session.session, id, Unmanaged.passUnretained(stream).toOpaque())
        session.fieldLines.removeAll(keepingCapacity: true)
        session.pseudo.removeAll(keepingCapacity: true)
        session.receivingHeaders = true
        return 0
    }

    /// One decoded request field: the pseudo-header fields and Host kept apart, the rest as field lines,
    /// all counted against `limits` (decoded bytes plus 32 each, as SETTINGS_MAX_HEADER_LIST_SIZE
    /// counts; and fields, each cookie crumb one). Past a limit nothing more is kept and the request
    /// gets 431.
    static let onHeader: nghttp2_on_header_callback = { _, frame, name, nameLength, value, valueLength, _, userData in
        guard let frame, frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST, let name, let value else { return 0 }
        let session = HTTP2Codec.session(userData)
        guard let stream = session.stream(frame.pointee.hd.stream_id), stream.receivingHeaders else { return 0 }
        let limits = session.codec.rules.limits
        stream.headerBytes += nameLength + valueLength + 32
        stream.headerCount += 1
        if stream.headersTooLarge { return 0 }
        if stream.headerBytes > limits.headerBytes || stream.headerCount > limits.headerCount + 4
            || nameLength + valueLength + 2 > limits.headerField {
            stream.headersTooLarge = true
            return 0
        }
        if name[0] == UInt8(ascii: ":") || (nameLength == 4 && memcmp(name, "host", 4) == 0) {
            let start = session.pseudo.count
            session.pseudo.append(contentsOf: UnsafeBufferPointer(start: value, count: valueLength))
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
        session.fieldLines.append(contentsOf: UnsafeBufferPointer(start: name, count: nameLength))
        session.fieldLines.append(0x3a)
        session.fieldLines.append(0x20)
        session.fieldLines.append(contentsOf: UnsafeBufferPointer(start: value, count: valueLength))
        session.fieldLines.append(13)
        session.fieldLines.append(10)
        return 0
    }

    /// A whole frame received: a request's header block is answered; stream resets are counted.
    static let onFrameReceived: nghttp2_on_frame_recv_callback = { _, frame, userData in
        guard let frame else { return 0 }
        let session = HTTP2Codec.session(userData)
        let header = frame.pointee.hd
        switch header.type {
        case UInt8(NGHTTP2_HEADERS.rawValue):
            guard frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST, let stream = session.stream(header.stream_id) else { return 0 }
            session.codec.respond(session, stream)
        case UInt8(NGHTTP2_RST_STREAM.rawValue):
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
    static let onFrameSent: nghttp2_on_frame_send_callback = { _, frame, userData in
        guard let frame else { return 0 }
        let session = HTTP2Codec.session(userData)
        let header = frame.pointee.hd
        if header.type == UInt8(NGHTTP2_GOAWAY.rawValue) {
            let code = frame.pointee.goaway.error_code
            if code != NGHTTP2_NO_ERROR.rawValue && !session.logged {
                session.logged = true
                var detail = ""
                if let data = frame.pointee.goaway.opaque_data, frame.pointee.goaway.opaque_data_len > 0 {
                    detail = ": " + String(decoding: UnsafeBufferPointer(start: data, count: frame.pointee.goaway.opaque_data_len), as: UTF8.self)
                }
                log.warning("HTTP/2: GOAWAY(\(HTTP2Codec.name(code))) to \(session.connection.peer.hostText)\(detail)")
            }
            return 0
        }
        guard header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0,
            header.type == UInt8(NGHTTP2_DATA.rawValue) || header.type == UInt8(NGHTTP2_HEADERS.rawValue),
            let stream = session.stream(header.stream_id)
        else { return 0 }
        session.codec.finished(session, stream)
        if stream.sending {
            stream.sending = false
            session.sending -= 1
        }
        if nghttp2_session_get_stream_remote_close(session.session, stream.id) == 0 {
            nghttp2_submit_rst_stream(session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, NGHTTP2_NO_ERROR.rawValue)
        }
        return 0
    }

    /// A response's last frame went: its duration counted, its body released.
    func finished(_ session: HTTP2Session, _ stream: HTTP2Stream) {
        stream.releaseBody()
        if stream.startedAt != 0 {
            Stats.recordDuration(since: stream.startedAt, in: stats)
            stream.startedAt = 0
        }
        session.progressed = true
    }

    /// A stream closed (answered, reset by either side, or refused): back to the pool.
    static let onStreamClose: nghttp2_on_stream_close_callback = { _, id, _, userData in
        let session = HTTP2Codec.session(userData)
        guard let stream = session.streams.removeValue(forKey: id) else { return 0 }
        if stream.receivingHeaders { session.receivingHeaders = false }
        if stream.sending {
            stream.sending = false
            session.sending -= 1
        }
        stream.releaseBody()
        session.progressed = true
        if session.codec.pool.count < 256 { session.codec.pool.append(stream) }
        return 0
    }

    /// What the next DATA frame of a stream carries (NGHTTP2_DATA_FLAG_NO_COPY: `sendData` writes it).
    static let readData: nghttp2_data_source_read_callback = { _, _, _, length, flags, source, _ in
        let stream = Unmanaged<HTTP2Stream>.fromOpaque(source!.pointee.ptr).takeUnretainedValue()
        guard let slice = stream.nextSlice(limit: length) else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)  // the file shrank: RST_STREAM
        }
        flags!.pointee = NGHTTP2_DATA_FLAG_NO_COPY.rawValue | (slice.last ? NGHTTP2_DATA_FLAG_EOF.rawValue : 0)
        return slice.count
    }

    /// Writes a DATA frame into the output buffer: its 9-byte header, then the payload copied from the
    /// stream's memory or read from the file straight into place.
    static let sendData: nghttp2_send_data_callback = { _, frame, frameHeader, length, source, userData in
        let session = HTTP2Codec.session(userData)
        let codec = session.codec
        let stream = Unmanaged<HTTP2Stream>.fromOpaque(source!.pointee.ptr).takeUnretainedValue()
        guard codec.buffered + 9 + length <= HTTP2Codec.bufferCapacity else { return NGHTTP2_ERR_WOULDBLOCK.rawValue }
        let target = codec.buffer + codec.buffered
        target.copyMemory(from: frameHeader!, byteCount: 9)
        if length > 0 {
            if stream.memoryOffset < stream.memory.count {
                (target + 9).copyMemory(from: stream.memory.baseAddress! + stream.memoryOffset, byteCount: length)
                stream.memoryOffset += length
            } else {
                guard let file = stream.representation, HTTP2Codec.readFully(file.fd, target + 9, length, at: stream.fileOffset) else {
                    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue  // the file shrank under us
                }
                stream.fileOffset += Int64(length)
            }
        }
        codec.buffered += 9 + length
        return 0
    }

    /// pread until `count` bytes are in; false at an error or the file's end.
    static func readFully(_ fd: Int32, _ target: UnsafeMutableRawPointer, _ count: Int, at offset: Int64) -> Bool {
        var done = 0
        while done < count {
            let read = pread(fd, target + done, count - done, off_t(offset + Int64(done)))
            if read < 0 && errno == EINTR { continue }
            if read <= 0 { return false }
            done += read
        }
        return true
    }
}
