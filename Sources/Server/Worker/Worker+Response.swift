import CSystemShims
import Glibc

extension Worker {
    /// Answers one parsed request.
    func respond(_ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) {
        requestsTotal += 1
        connection.requests += 1
        currentMinorVersion = head.minorVersion
        if !head.keepAlive || head.hasBody || draining || connection.requests >= config.keepalive.requests {
            // Request bodies are not read yet: close after answering so no body byte is taken for a request.
            connection.closeAfterResponse = true
        }
        switch head.method {
        case .get, .head:
            serveFile(connection, head, bytes)
        case .options:
            var writer = beginHead(.noContent, connection)
            writer.append("Allow: GET, HEAD, OPTIONS\r\nContent-Length: 0\r\n\r\n")
            logRequest(connection, bytes: bytes, head: head, status: .noContent, bodyBytes: 0)
            startResponse(connection, writer.count, file: -1, size: 0)
        default:
            var writer = beginHead(.methodNotAllowed, connection)
            writer.append("Allow: GET, HEAD, OPTIONS\r\n")
            finishErrorHead(&writer, .methodNotAllowed, head: head.method == .head)
            logRequest(connection, bytes: bytes, head: head, status: .methodNotAllowed,
                       bodyBytes: Int64(HTTPStatus.methodNotAllowed.errorBody.utf8CodeUnitCount))
            startResponse(connection, writer.count, file: -1, size: 0)
        }
    }

    /// GET and HEAD of a file beneath the root.
    func serveFile(_ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) {
        guard head.target.count + config.index.utf8.count + 4 <= pathCapacity else {
            return answerError(connection, head, bytes, .uriTooLong)
        }
        let outcome = RequestPath.normalize(bytes, target: head.target, into: pathBuffer)
        guard case .path(var length, let directory, let pathStart, let pathEnd) = outcome else {
            if case .rejected(let status) = outcome { answerError(connection, head, bytes, status) }
            return
        }
        var fd = openBeneathRoot()
        if fd < 0 { return answerError(connection, head, bytes, openFailureStatus(errno)) }
        var info = stat()
        fstat(fd, &info)
        if info.st_mode & S_IFMT == S_IFDIR {
            closeDescriptor(fd)
            if !directory {
                return redirectToDirectory(connection, head, bytes, pathStart: pathStart, pathEnd: pathEnd)
            }
            // Append "/index" (or just "index" at the root, whose path is ".").
            if length == 1 && pathBuffer[0] == 46 { length = 0 } else {
                pathBuffer[length] = 47
                length += 1
            }
            for byte in config.index.utf8 {
                pathBuffer[length] = byte
                length += 1
            }
            pathBuffer[length] = 0
            fd = openBeneathRoot()
            if fd < 0 {
                let code = errno
                return answerError(connection, head, bytes, code == ENOENT ? .notFound : openFailureStatus(code))
            }
            fstat(fd, &info)
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            closeDescriptor(fd)
            return answerError(connection, head, bytes, info.st_mode & S_IFMT == S_IFDIR ? .notFound : .forbidden)
        }
        let size = Int64(info.st_size)
        var writer = beginHead(.ok, connection)
        writer.append("Content-Type: ")
        writer.append(MediaTypes.forPath(pathBuffer, length: length))
        writer.append("\r\nContent-Length: ")
        writer.appendDecimal(size)
        writer.append("\r\nLast-Modified: ")
        HTTPDate.write(Int64(info.st_mtim.tv_sec), into: &writer)
        writer.append("\r\nETag: \"")
        writer.appendHex(UInt64(info.st_ino))
        writer.append(byte: 45)
        writer.appendHex(UInt64(size))
        writer.append(byte: 45)
        writer.appendHex(UInt64(info.st_mtim.tv_sec) &* 1_000_000_000 &+ UInt64(info.st_mtim.tv_nsec))
        writer.append("\"\r\n\r\n")
        let isHead = head.method == .head
        logRequest(connection, bytes: bytes, head: head, status: .ok, bodyBytes: isHead ? 0 : size)
        if isHead || size == 0 {
            closeDescriptor(fd)
            startResponse(connection, writer.count, file: -1, size: 0)
        } else {
            startResponse(connection, writer.count, file: fd, size: size)
        }
    }

    /// Opens `pathBuffer` beneath the root: symlinks are followed only while they stay beneath it.
    func openBeneathRoot() -> Int32 {
        while true {
            let fd = cs_openat2(
                rootFD, UnsafeRawPointer(pathBuffer).assumingMemoryBound(to: CChar.self),
                UInt64(O_RDONLY | cs_O_CLOEXEC | cs_O_NONBLOCK | O_NOCTTY), 0,
                cs_RESOLVE_BENEATH | cs_RESOLVE_NO_MAGICLINKS)
            if fd >= 0 || errno != EINTR && errno != EAGAIN { return fd }
        }
    }

    func openFailureStatus(_ code: Int32) -> HTTPStatus {
        switch code {
        case ENOENT, ENOTDIR, ENAMETOOLONG: return .notFound
        case EACCES, EPERM, ELOOP, EXDEV: return .forbidden
        case EMFILE, ENFILE: return .serviceUnavailable
        default:
            log.error("open failed: \(SystemError(call: "openat2", errno: code))")
            return .internalServerError
        }
    }

    func redirectToDirectory(
        _ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer, pathStart: Int, pathEnd: Int
    ) {
        var writer = beginHead(.movedPermanently, connection)
        writer.append("Location: ")
        writer.append(bytes, ByteSpan(start: pathStart, end: pathEnd))
        writer.append(byte: 47)
        writer.append(bytes, ByteSpan(start: pathEnd, end: head.target.end))
        writer.append("\r\nContent-Length: 0\r\n\r\n")
        if writer.overflowed { return answerError(connection, head, bytes, .uriTooLong) }
        logRequest(connection, bytes: bytes, head: head, status: .movedPermanently, bodyBytes: 0)
        startResponse(connection, writer.count, file: -1, size: 0)
    }

    func answerError(_ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer, _ status: HTTPStatus) {
        var writer = beginHead(status, connection)
        finishErrorHead(&writer, status, head: head.method == .head)
        logRequest(connection, bytes: bytes, head: head, status: status,
                   bodyBytes: head.method == .head ? 0 : Int64(status.errorBody.utf8CodeUnitCount))
        startResponse(connection, writer.count, file: -1, size: 0)
    }

    /// Answers a request that could not be parsed; the connection closes after it (RFC 9112 section 9.6).
    func sendError(_ connection: Connection, _ status: HTTPStatus) {
        connection.closeAfterResponse = true
        var writer = beginHead(status, connection)
        finishErrorHead(&writer, status, head: false)
        startResponse(connection, writer.count, file: -1, size: 0)
    }

    /// Status line and the headers every response has; the caller adds the rest and the blank line.
    func beginHead(_ status: HTTPStatus, _ connection: Connection) -> ByteWriter {
        var writer = ByteWriter(base: headBuffer, capacity: Worker.headCapacity)
        writer.append(status.statusLine)
        writer.append("Server: webserver\r\nDate: ")
        writer.append(dateBytes, HTTPDate.length)
        if connection.closeAfterResponse {
            writer.append("\r\nConnection: close\r\n")
        } else if currentMinorVersion == 0 {
            writer.append("\r\nConnection: keep-alive\r\n")
        } else {
            writer.append("\r\n")
        }
        return writer
    }

    /// The error body with its headers; HEAD gets the headers only.
    func finishErrorHead(_ writer: inout ByteWriter, _ status: HTTPStatus, head: Bool) {
        let body = status.errorBody
        writer.append("Content-Type: text/html; charset=utf-8\r\nContent-Length: ")
        writer.appendDecimal(Int64(body.utf8CodeUnitCount))
        writer.append("\r\n\r\n")
        if !head { writer.append(body) }
    }

    /// Sends the head in `headBuffer` and then `size` bytes of `file` (owned from here on).
    /// Whatever the socket does not take now waits for EPOLLOUT.
    func startResponse(_ connection: Connection, _ headLength: Int, file: Int32, size: Int64) {
        connection.fileFD = file
        connection.fileOffset = 0
        connection.fileEnd = size
        let flags = cs_MSG_NOSIGNAL | (file >= 0 ? cs_MSG_MORE : 0)
        var sent = 0
        while sent < headLength {
            let count = Glibc.send(connection.fd, headBuffer + sent, headLength - sent, flags)
            if count > 0 {
                sent += count
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EAGAIN { break }
            close(connection)
            return
        }
        if sent < headLength {
            connection.pendingOutput = Array(UnsafeBufferPointer(start: headBuffer + sent, count: headLength - sent))
            connection.pendingOffset = 0
        }
        guard continueSending(connection) else { return }
        if connection.hasPendingOutput {
            connection.phase = .writing
            connection.deadline = now + Int64(config.timeouts.sendMilliseconds)
            try? poller.modify(connection.fd, events: Poller.writable)
        }
    }

    /// Pushes pending head bytes and then the file. Returns false when the connection was closed.
    func continueSending(_ connection: Connection) -> Bool {
        while connection.pendingOffset < connection.pendingOutput.count {
            let flags = cs_MSG_NOSIGNAL | (connection.fileFD >= 0 ? cs_MSG_MORE : 0)
            let count = connection.pendingOutput.withUnsafeBytes {
                Glibc.send(connection.fd, $0.baseAddress! + connection.pendingOffset,
                           $0.count - connection.pendingOffset, flags)
            }
            if count > 0 {
                connection.pendingOffset += count
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EAGAIN { return true }
            close(connection)
            return false
        }
        if !connection.pendingOutput.isEmpty {
            connection.pendingOutput = []
            connection.pendingOffset = 0
        }
        while connection.fileFD >= 0 {
            let remaining = connection.fileEnd - connection.fileOffset
            if remaining <= 0 {
                closeDescriptor(connection.fileFD)
                connection.fileFD = -1
                break
            }
            var offset = off_t(connection.fileOffset)
            let count = sendfile(connection.fd, connection.fileFD, &offset, Int(min(remaining, 1 << 30)))
            if count > 0 {
                connection.fileOffset = Int64(offset)
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EAGAIN { return true }
            // count == 0: the file shrank under us; the promised length cannot be sent, so close.
            close(connection)
            return false
        }
        return true
    }

    // MARK: Access log

    /// Appends one combined-format line for the request being answered.
    func logRequest(
        _ connection: Connection, bytes: UnsafeRawBufferPointer, head: RequestHead?, status: HTTPStatus, bodyBytes: Int64
    ) {
        guard accessLogFD >= 0 else { return }
        if logCount >= Worker.logFlushAt { flushLog() }
        var writer = ByteWriter(base: logBuffer + logCount, capacity: Worker.logCapacity - logCount)
        var host: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &host) { scratch in
            let base = scratch.baseAddress!.assumingMemoryBound(to: CChar.self)
            let length = connection.peer.formatHost(into: base, capacity: scratch.count)
            writer.append(UnsafeRawPointer(base).assumingMemoryBound(to: UInt8.self), length)
        }
        writer.append(" - - [")
        writer.append(logTimeBytes, Worker.logTimeLength)
        writer.append("] \"")
        if let head {
            appendEscaped(&writer, bytes, head.requestLine)
        } else {
            // Unparsed: log the first line as far as it goes.
            var end = 0
            while end < bytes.count && end < 1024 && bytes[end] != 13 && bytes[end] != 10 { end += 1 }
            appendEscaped(&writer, bytes, ByteSpan(start: 0, end: end))
        }
        writer.append("\" ")
        writer.appendDecimal(Int64(status.rawValue))
        writer.append(byte: 32)
        writer.appendDecimal(bodyBytes)
        writer.append(" \"")
        if let head, !head.referer.isEmpty { appendEscaped(&writer, bytes, head.referer) } else { writer.append(byte: 45) }
        writer.append("\" \"")
        if let head, !head.userAgent.isEmpty { appendEscaped(&writer, bytes, head.userAgent) } else { writer.append(byte: 45) }
        writer.append("\"\n")
        if !writer.overflowed { logCount += writer.count }
    }

    /// Copies a field into the log, `\xHH` for control bytes, quotes, backslashes and non-ASCII;
    /// at most 4096 input bytes, then `...`.
    func appendEscaped(_ writer: inout ByteWriter, _ bytes: UnsafeRawBufferPointer, _ span: ByteSpan) {
        let hex: StaticString = "0123456789ABCDEF"
        let end = min(span.end, span.start + 4096)
        var index = span.start
        while index < end {
            let byte = bytes[index]
            if byte < 32 || byte >= 127 || byte == 34 || byte == 92 {
                writer.append("\\x")
                writer.append(byte: hex.utf8Start[Int(byte >> 4)])
                writer.append(byte: hex.utf8Start[Int(byte & 15)])
            } else {
                writer.append(byte: byte)
            }
            index += 1
        }
        if end < span.end { writer.append("...") }
    }
}
