import CSystemShims
import Glibc

extension Worker {
    /// Answers one parsed request.
    func respond(_ connection: Connection, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer) {
        requestsTotal += 1
        connection.requests += 1
        currentMinorVersion = head.minorVersion
        currentClient = connection.peer
        connection.startedAt = monotonicMicroseconds()
        // Sent in full already: counted now; else when the last byte goes (onWritable).
        defer { if !connection.hasPendingOutput { recordDuration(connection) } }
        switch head.method {
        case .get: stats[Stats.methodGet] &+= 1
        case .head: stats[Stats.methodHead] &+= 1
        case .options: stats[Stats.methodOptions] &+= 1
        default: stats[Stats.methodOther] &+= 1
        }
        if head.forwardedFor.count | head.forwarded.count != 0 && forwardedHeader != .none {
            currentClient = ClientAddress.resolve(bytes, head, peer: connection.peer, trusted: trustedProxies, header: forwardedHeader)
        }
        if !head.keepAlive || draining || connection.requests >= config.keepalive.requests {
            connection.closeAfterResponse = true
        }
        if head.hasBody {
            // The body is never needed here, only skipped; one larger than limits.body is refused before
            // it is read (RFC 9110 section 15.5.14), and the connection closes after the 413.
            let limit = Int64(config.limits.bodyBytes)
            let length = head.contentLength
            if limit > 0 && length > limit {
                connection.closeAfterResponse = true
                return answerError(connection, head, bytes, .contentTooLarge)
            }
            // RFC 9110 section 10.1.1: the client waits for 100 before sending; HTTP/1.0 ignores it.
            let expectsContinue = head.expectContinue
            let http11 = head.minorVersion == 1
            if expectsContinue && http11 && !connection.closeAfterResponse {
                connection.sendContinue = true
            }
        }
        // No `&&` before a call that takes the head: its autoclosure would copy the whole head.
        if connection.tls == nil && config.tls.redirectHTTP {
            if !isACMEChallenge(head, bytes) { return redirectToTLS(connection, head, bytes) }
        }
        if hstsLine != nil && connection.tls != nil { currentHostIsLocal = Worker.isLocalHost(bytes, head.host) }
        switch head.method {
        case .get, .head:
            serveFile(connection, head, bytes)
        case .options:
            var writer = beginHead(.noContent, connection)
            writer.append("Allow: GET, HEAD, OPTIONS\r\nContent-Length: 0\r\n\r\n")
            logRequest(connection, bytes: bytes, head: head, status: .noContent, bodyBytes: 0)
            startResponse(connection, writer.count)
        default:
            var writer = beginHead(.methodNotAllowed, connection)
            writer.append("Allow: GET, HEAD, OPTIONS\r\n")
            finishErrorHead(&writer, .methodNotAllowed, head: head.method == .head)
            logRequest(connection, bytes: bytes, head: head, status: .methodNotAllowed,
                       bodyBytes: Int64(HTTPStatus.methodNotAllowed.errorBody.utf8CodeUnitCount))
            startResponse(connection, writer.count)
        }
    }

    /// Counts a finished response in the duration histogram (from its request's parse to the last byte
    /// handed to the kernel).
    @inline(__always)
    func recordDuration(_ connection: Connection) {
        guard connection.startedAt != 0 else { return }
        let elapsed = monotonicMicroseconds() &- connection.startedAt
        connection.startedAt = 0
        stats[Stats.durationMicroseconds] &+= elapsed
        stats[Stats.bucket(elapsed)] &+= 1
    }

    /// GET and HEAD of a file beneath the root, from the open-file cache when it has the file.
    func serveFile(_ connection: Connection, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer) {
        guard head.target.count + config.index.utf8.count + 4 <= pathCapacity else {
            return answerError(connection, head, bytes, .uriTooLong)
        }
        let outcome = RequestPath.normalize(bytes, target: head.target, into: pathBuffer, rejectEncodedSlash: rejectEncodedSlash)
        guard case .path(var length, let directory, let pathEnd) = outcome else {
            if case .rejected(let status) = outcome { answerError(connection, head, bytes, status) }
            return
        }
        let hash = FileCache.hash(pathBuffer, length, directory: directory)
        if let file = fileCache.lookup(pathBuffer, length, directory: directory, hash: hash, now: now, root: rootFD) {
            return send(file, connection, head, bytes)
        }
        // Not cached (or changed): open it beneath the root.
        var key = Array(UnsafeBufferPointer(start: pathBuffer, count: length))
        key.append(directory ? 1 : 0)
        var fd = openBeneathRoot()
        if fd < 0 { return answerError(connection, head, bytes, openFailureStatus(errno)) }
        var info = stat()
        fstat(fd, &info)
        if info.st_mode & S_IFMT == S_IFDIR {
            closeDescriptor(fd)
            if !directory {
                return redirectToDirectory(connection, head, bytes, pathLength: length, pathEnd: pathEnd)
            }
            // Append "/index" (or just "index" at the root, whose path is ".").
            let directoryLength = length
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
                if code == ENOENT && config.autoindex {
                    pathBuffer[directoryLength] = 0
                    return sendListing(connection, head, bytes, pathLength: directoryLength, pathEnd: pathEnd)
                }
                return answerError(connection, head, bytes, code == ENOENT ? .notFound : openFailureStatus(code))
            }
            fstat(fd, &info)
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            closeDescriptor(fd)
            return answerError(connection, head, bytes, info.st_mode & S_IFMT == S_IFDIR ? .notFound : .forbidden)
        }
        let opened = Array(UnsafeBufferPointer(start: pathBuffer, count: length + 1))
        let type = MediaTypes.forPath(pathBuffer, length: length)
        let extra = extraHeaders(pathLength: length)
        let compressible = gzip.enabled && Int64(info.st_size) >= Int64(gzip.minLength) && gzip.compresses(type.description)
        let sidecar = gzip.precompressed ? openSidecar(pathLength: length, of: info, type: type, key: key, extra: extra) : nil
        guard let file = CachedFile(
            fd: fd, info: info, contentType: type, openedPath: opened, key: key, inlineLimit: fileCache.inlineLimit,
            now: now, extraHeaders: extra, varies: compressible || sidecar != nil, compressible: compressible)
        else {
            // The file changed size while it was read; the client may simply retry.
            return answerError(connection, head, bytes, .serviceUnavailable)
        }
        file.sidecar = sidecar
        fileCache.insert(file, hash: hash)
        send(file, connection, head, bytes)
    }

    /// `FILE.gz` beside the file at `pathBuffer[0..<pathLength]`, when it is a regular file not older
    /// than the file: its bytes with the file's type and `Content-Encoding: gzip`.
    func openSidecar(pathLength length: Int, of info: stat, type: StaticString, key: [UInt8], extra: [UInt8]) -> CachedFile? {
        pathBuffer[length] = 46  // ".gz"
        pathBuffer[length + 1] = 103
        pathBuffer[length + 2] = 122
        pathBuffer[length + 3] = 0
        defer { pathBuffer[length] = 0 }
        let fd = openBeneathRoot()
        guard fd >= 0 else { return nil }
        var sidecar = stat()
        guard fstat(fd, &sidecar) == 0, sidecar.st_mode & S_IFMT == S_IFREG,
              (Int64(sidecar.st_mtim.tv_sec), Int64(sidecar.st_mtim.tv_nsec)) >= (Int64(info.st_mtim.tv_sec), Int64(info.st_mtim.tv_nsec))
        else {
            closeDescriptor(fd)
            return nil
        }
        return CachedFile(
            fd: fd, info: sidecar, contentType: type, openedPath: Array(UnsafeBufferPointer(start: pathBuffer, count: length + 4)),
            key: key, inlineLimit: fileCache.inlineLimit, now: now, extraHeaders: extra, coding: .sidecar, varies: true)
    }

    /// The answer for `file`: the representation Accept-Encoding chooses, preconditions against it (RFC
    /// 9110 section 13.2.2), then Range, else a 200 in one writev of head and body when the body is in
    /// memory, or the head and sendfile, or the head and a body compressed as it goes.
    func send(_ file: CachedFile, _ connection: Connection, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer) {
        var chosen = file
        // A file that is never compressed needs the header only to find a refused identity, which takes
        // a q=0 parameter: without a ';' (browsers send none) there is nothing to read.
        let acceptEncoding = head.acceptEncoding
        let repeated = head.repeatedAcceptEncoding
        if head.sentAcceptEncoding && (file.varies || repeated || Worker.hasParameter(bytes, acceptEncoding)) {
            guard let representation = negotiate(file, head, bytes) else {
                return answerError(connection, head, bytes, .notAcceptable)
            }
            chosen = representation
        }
        if head.hasConditions {
            if answeredConditionally(chosen, connection, head, bytes) { return }
        }
        let isHead = head.method == .head
        if chosen.coding == .gzipStream && file.size <= Int64(gzip.cacheFileMax) {
            // Small enough to compress whole: from the cache, or compressed now and kept.
            guard let compressed = compressedForm(file) else { return answerError(connection, head, bytes, .serviceUnavailable) }
            chosen = compressed
        }
        var writer = beginHead(.ok, connection)
        writer.append(chosen.headers.baseAddress!.assumingMemoryBound(to: UInt8.self), chosen.headers.count)
        writer.append("\r\n")
        if chosen.coding == .gzipStream {
            logRequest(connection, bytes: bytes, head: head, status: .ok, bodyBytes: isHead ? 0 : -1)
            if !isHead {
                guard let stream = GzipStream(source: file, level: gzip.level) else {
                    return answerError(connection, head, bytes, .serviceUnavailable)
                }
                connection.gzip = stream
            }
            return startResponse(connection, writer.count)
        }
        logRequest(connection, bytes: bytes, head: head, status: .ok, bodyBytes: isHead ? 0 : chosen.size)
        startResponse(connection, writer.count, wholeFile: chosen, headOnly: isHead)
    }

    /// The representation of `file` for this request's Accept-Encoding: its sidecar or its gzip form when
    /// the client prefers gzip and there is one, else the file; nil (406) when the client refuses identity
    /// and no acceptable form exists (RFC 9110 section 12.5.3: the only case a 406 is right).
    func negotiate(_ file: CachedFile, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) -> CachedFile? {
        let preference = EncodingPreference.of(bytes, head)
        if preference.prefersGzip && file.varies {
            if let sidecar = file.sidecar { return sidecar }
            // A Range is answered from the file's own bytes, never from bytes compressed on the fly;
            // and HTTP/1.0 has no chunked coding, so a file too large to compress whole goes as it is.
            let rangeRequest = head.method == .get && !head.range.isEmpty && preference.identity > 0
            if file.compressible && !rangeRequest && (head.minorVersion == 1 || file.size <= Int64(gzip.cacheFileMax)) {
                if let form = file.gzipForm { return form }
                let form = CachedFile(gzipOf: file, level: gzip.level, body: nil)
                file.gzipForm = form
                return form
            }
        }
        return preference.identity > 0 ? file : nil
    }

    /// Whether a field value has a ';' (so parameters such as q=0).
    static func hasParameter(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan) -> Bool {
        guard !span.isEmpty else { return false }
        return memchr(bytes.baseAddress! + span.start, 59, span.count) != nil
    }

    /// `file` compressed whole: from the compressed cache, or compressed now and kept there.
    func compressedForm(_ file: CachedFile) -> CachedFile? {
        let key = CompressedCache.key(file, level: gzip.level)
        if let cached = compressedCache.lookup(key) { return cached }
        if deflater == nil {
            deflater = GzipDeflater(level: gzip.level)
            deflateInput = .allocate(byteCount: 65_536, alignment: 16)
        }
        guard let deflater, let deflateInput, let body = deflater.compressWhole(file, scratch: deflateInput) else { return nil }
        let form = CachedFile(gzipOf: file, level: gzip.level, body: body)
        compressedCache.insert(form, key: key)
        return form
    }

    /// The head in `headBuffer`, then all of `file`: from its in-memory copy with the head in one write,
    /// else by sendfile; nothing after the head for HEAD or an empty file.
    func startResponse(_ connection: Connection, _ headLength: Int, wholeFile file: CachedFile, headOnly: Bool) {
        if headOnly || file.size == 0 {
            startResponse(connection, headLength)
        } else if let body = file.body {
            startResponse(connection, headLength, inline: UnsafeRawBufferPointer(body))
        } else {
            startResponse(connection, headLength, file: file)
        }
    }

    /// Preconditions, then Range; true when one of them gave the answer (304, 412, 206 or 416). Kept out
    /// of `send` so a request without these fields pays one branch for them.
    @inline(never)
    func answeredConditionally(
        _ file: CachedFile, _ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer
    ) -> Bool {
        if let status = preconditionFailure(file, head, bytes) {
            if status == .notModified { sendNotModified(file, connection, head, bytes) } else { answerError(connection, head, bytes, status) }
            return true
        }
        // Ranges apply to a file's own bytes or its sidecar's, never to a gzip form made here.
        guard !head.range.isEmpty && head.method == .get && !head.repeatedRange && file.fd >= 0 else { return false }
        guard rangeApplies(file, head, bytes) else { return false }
        switch ByteRanges.resolve(bytes, head.range, length: file.size, limit: config.limits.ranges, into: rangeBuffer) {
        case .ignore:
            return false
        case .unsatisfiable:
            sendUnsatisfiable(file, connection, head, bytes)
        case .ranges(let count):
            if count == 1 { sendRange(file, connection, head, bytes) } else { sendMultipart(file, connection, head, bytes, count) }
        }
        return true
    }

    /// RFC 9110 section 13.2.2, steps 1 to 4, for GET and HEAD: 412 when If-Match (strong comparison)
    /// or, without it, If-Unmodified-Since fails; 304 when If-None-Match (weak comparison) or, without
    /// it, If-Modified-Since finds the client's copy current. A date that does not parse is ignored.
    func preconditionFailure(_ file: CachedFile, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) -> HTTPStatus? {
        let tag = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(file.headers)[file.etag.start..<file.etag.end])
        if !head.ifMatch.isEmpty {
            if !listMatches(bytes, head, head.ifMatch, name: "if-match", tag: tag, weak: false) { return .preconditionFailed }
        } else if !head.ifUnmodifiedSince.isEmpty, let date = HTTPDate.parse(bytes, head.ifUnmodifiedSince),
                  file.modifiedSeconds > date {
            return .preconditionFailed
        }
        if !head.ifNoneMatch.isEmpty {
            if listMatches(bytes, head, head.ifNoneMatch, name: "if-none-match", tag: tag, weak: true) { return .notModified }
        } else if !head.ifModifiedSince.isEmpty, let date = HTTPDate.parse(bytes, head.ifModifiedSince),
                  file.modifiedSeconds <= date {
            return .notModified
        }
        return nil
    }

    /// An entity-tag list, from one field line or, when the client split it, from all of them.
    func listMatches(
        _ bytes: UnsafeRawBufferPointer, _ head: RequestHead, _ span: ByteSpan, name: StaticString,
        tag: UnsafeRawBufferPointer, weak: Bool
    ) -> Bool {
        guard head.repeatedConditionalList else { return EntityTags.list(bytes, span, matches: tag, weak: weak) }
        let spans = RequestParser.fieldValues(bytes, headLength: head.headLength, name: name)
        return spans.contains { EntityTags.list(bytes, $0, matches: tag, weak: weak) }
    }

    /// If-Range (RFC 9110 section 13.1.5): the Range applies only if the client's validator is current,
    /// an entity-tag by strong comparison or a date equal to Last-Modified.
    func rangeApplies(_ file: CachedFile, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard !head.ifRange.isEmpty else { return true }
        let first = bytes[head.ifRange.start]
        if first == 34 || first == 87 {  // '"' or "W/"
            let tag = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(file.headers)[file.etag.start..<file.etag.end])
            return first == 34 && EntityTags.list(bytes, head.ifRange, matches: tag, weak: false)
        }
        return HTTPDate.parse(bytes, head.ifRange) == file.modifiedSeconds
    }

    /// HTTP to HTTPS (`tls.redirect_http`): the same host (its port replaced by the TLS socket's) and the
    /// target as sent; 301 for GET and HEAD, 308 for other methods so they keep their method and body.
    func redirectToTLS(_ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) {
        let status: HTTPStatus = head.method == .get || head.method == .head ? .movedPermanently : .permanentRedirect
        var writer = beginHead(status, connection)
        writer.append("Location: https://")
        var hostEnd = head.host.end
        if !head.host.isEmpty {
            // Drop the port: from the last ":" when it is not inside an IPv6 literal's brackets.
            var index = head.host.end - 1
            while index > head.host.start && bytes[index] != 58 && bytes[index] != 93 { index -= 1 }
            if bytes[index] == 58 { hostEnd = index }
            writer.append(bytes, ByteSpan(start: head.host.start, end: hostEnd))
        } else {
            writer.append("localhost")
        }
        if config.tls.redirectPort != 443 && config.tls.redirectPort != 0 {
            writer.append(byte: 58)
            writer.appendDecimal(Int64(config.tls.redirectPort))
        }
        if head.target.count > 0 && bytes[head.target.start] == 47 {
            writer.append(bytes, head.target)
        } else {
            writer.append(byte: 47)
        }
        writer.append("\r\nContent-Length: 0\r\n\r\n")
        if writer.overflowed { return answerError(connection, head, bytes, .uriTooLong) }
        logRequest(connection, bytes: bytes, head: head, status: status, bodyBytes: 0)
        startResponse(connection, writer.count)
    }

    /// A request for /.well-known/acme-challenge/...: ACME's HTTP-01 check must be answered over HTTP.
    func isACMEChallenge(_ head: RequestHead, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let prefix: StaticString = "/.well-known/acme-challenge/"
        guard head.target.count > prefix.utf8CodeUnitCount else { return false }
        for offset in 0..<prefix.utf8CodeUnitCount where bytes[head.target.start + offset] != prefix.utf8Start[offset] { return false }
        return true
    }

    /// localhost, *.localhost, 127.x.y.z or [::1], with or without a port; an absent Host counts as local.
    /// Bytes only: this runs for every TLS request when HSTS is on.
    static func isLocalHost(_ bytes: UnsafeRawBufferPointer, _ host: ByteSpan) -> Bool {
        guard !host.isEmpty else { return true }
        let start = host.start
        if bytes[start] == 91 {  // "[::1]"
            return host.count >= 5 && bytes[start + 1] == 58 && bytes[start + 2] == 58 && bytes[start + 3] == 49
                && bytes[start + 4] == 93
        }
        var end = host.end
        var index = end - 1
        while index > start && bytes[index] != 58 { index -= 1 }
        if bytes[index] == 58 { end = index }
        let length = end - start
        if length >= 4 && bytes[start] == 49 && bytes[start + 1] == 50 && bytes[start + 2] == 55 && bytes[start + 3] == 46 {
            return true  // "127."
        }
        let word: StaticString = "localhost"
        guard length >= 9, length == 9 || bytes[end - 10] == 46 else { return false }
        for offset in 0..<9 where bytes[end - 9 + offset] | 0x20 != word.utf8Start[offset] { return false }
        return true
    }

    /// 304: the validators the 200 would have carried, no body.
    func sendNotModified(_ file: CachedFile, _ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) {
        var writer = beginHead(.notModified, connection)
        appendHeaders(file, from: file.validatorsStart, to: file.headers.count, &writer)
        writer.append("\r\n")
        logRequest(connection, bytes: bytes, head: head, status: .notModified, bodyBytes: 0)
        startResponse(connection, writer.count)
    }

    /// 416 with the current length, so the client can ask again.
    func sendUnsatisfiable(_ file: CachedFile, _ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) {
        var writer = beginHead(.rangeNotSatisfiable, connection)
        writer.append("Content-Range: bytes */")
        writer.appendDecimal(file.size)
        writer.append("\r\n")
        finishErrorHead(&writer, .rangeNotSatisfiable, head: false)
        logRequest(connection, bytes: bytes, head: head, status: .rangeNotSatisfiable,
                   bodyBytes: Int64(HTTPStatus.rangeNotSatisfiable.errorBody.utf8CodeUnitCount))
        startResponse(connection, writer.count)
    }

    /// 206 for the one range in `rangeBuffer[0]`.
    func sendRange(_ file: CachedFile, _ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) {
        let (first, last) = rangeBuffer[0]
        var writer = beginHead(.partialContent, connection)
        appendHeaders(file, from: 0, to: file.typeEnd, &writer)
        writer.append("Content-Range: bytes ")
        appendRange(first, last, file.size, &writer)
        writer.append("\r\nContent-Length: ")
        writer.appendDecimal(last - first + 1)
        writer.append("\r\n")
        appendHeaders(file, from: file.lengthEnd, to: file.headers.count, &writer)
        writer.append("\r\n")
        logRequest(connection, bytes: bytes, head: head, status: .partialContent, bodyBytes: last - first + 1)
        if let body = file.body {
            startResponse(connection, writer.count, inline: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(body)[Int(first)...Int(last)]))
        } else {
            startResponse(connection, writer.count, file: file, from: first, to: last + 1)
        }
    }

    /// 206 multipart/byteranges (RFC 9110 section 14.6) for `count` sorted, coalesced ranges: each part
    /// is its boundary and headers, then the bytes straight from the file.
    func sendMultipart(
        _ file: CachedFile, _ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer, _ count: Int
    ) {
        var parts: [ResponsePart] = []
        parts.reserveCapacity(count + 1)
        let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: 512)
        defer { scratch.deallocate() }
        var total: Int64 = 0
        for index in 0..<count {
            let (first, last) = rangeBuffer[index]
            var writer = ByteWriter(base: scratch, capacity: 512)
            writer.append("\r\n--")
            writer.append(boundary, Worker.boundaryLength)
            writer.append("\r\n")
            appendHeaders(file, from: 0, to: file.typeEnd, &writer)
            writer.append("Content-Range: bytes ")
            appendRange(first, last, file.size, &writer)
            writer.append("\r\n\r\n")
            parts.append(ResponsePart(prefix: Array(UnsafeBufferPointer(start: scratch, count: writer.count)), start: first, end: last + 1))
            total += Int64(writer.count) + last - first + 1
        }
        var closing = ByteWriter(base: scratch, capacity: 512)
        closing.append("\r\n--")
        closing.append(boundary, Worker.boundaryLength)
        closing.append("--\r\n")
        parts.append(ResponsePart(prefix: Array(UnsafeBufferPointer(start: scratch, count: closing.count)), start: 0, end: 0))
        total += Int64(closing.count)

        var writer = beginHead(.partialContent, connection)
        writer.append("Content-Type: multipart/byteranges; boundary=")
        writer.append(boundary, Worker.boundaryLength)
        writer.append("\r\nContent-Length: ")
        writer.appendDecimal(total)
        writer.append("\r\n")
        appendHeaders(file, from: file.lengthEnd, to: file.headers.count, &writer)
        writer.append("\r\n")
        logRequest(connection, bytes: bytes, head: head, status: .partialContent, bodyBytes: total)
        startResponse(connection, writer.count, file: file, from: 0, to: 0, parts: parts)
    }

    func appendHeaders(_ file: CachedFile, from start: Int, to end: Int, _ writer: inout ByteWriter) {
        writer.append(file.headers.baseAddress!.assumingMemoryBound(to: UInt8.self) + start, end - start)
    }

    /// `first-last/length`.
    func appendRange(_ first: Int64, _ last: Int64, _ length: Int64, _ writer: inout ByteWriter) {
        writer.appendDecimal(first)
        writer.append(byte: 45)
        writer.appendDecimal(last)
        writer.append(byte: 47)
        writer.appendDecimal(length)
    }

    /// Opens `pathBuffer` beneath the root (O_NONBLOCK so a FIFO cannot block the loop).
    func openBeneathRoot() -> Int32 {
        BeneathRoot.open(rootFD, pathBuffer, flags: O_RDONLY | cs_O_CLOEXEC | cs_O_NONBLOCK | O_NOCTTY)
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

    /// 301 from `/dir` to `/dir/`. The Location is built from the normalized path, percent-encoded, never
    /// from the raw target: `//evil.example` names the directory `evil.example` here, but echoed back it
    /// would be a protocol-relative redirect to another site, and a decoded CR LF would split the header.
    func redirectToDirectory(
        _ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer, pathLength: Int, pathEnd: Int
    ) {
        var writer = beginHead(.movedPermanently, connection)
        writer.append("Location: /")
        let hex: StaticString = "0123456789ABCDEF"
        for index in 0..<pathLength {
            let byte = pathBuffer[index]
            if RequestPath.isPathByte(byte) {
                writer.append(byte: byte)
            } else {
                writer.append(byte: 37)
                writer.append(byte: hex.utf8Start[Int(byte >> 4)])
                writer.append(byte: hex.utf8Start[Int(byte & 15)])
            }
        }
        writer.append(byte: 47)
        writer.append(bytes, ByteSpan(start: pathEnd, end: head.target.end))  // the query, as sent (visible ASCII)
        writer.append("\r\nContent-Length: 0\r\n\r\n")
        if writer.overflowed { return answerError(connection, head, bytes, .uriTooLong) }
        logRequest(connection, bytes: bytes, head: head, status: .movedPermanently, bodyBytes: 0)
        startResponse(connection, writer.count)
    }

    func answerError(_ connection: Connection, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, _ status: HTTPStatus) {
        if !errorPages.isEmpty, let page = errorPage(status) {
            return sendErrorPage(page, status, connection, head: copy head, bytes: bytes)  // rare: an error page
        }
        var writer = beginHead(status, connection)
        finishErrorHead(&writer, status, head: head.method == .head)
        logRequest(connection, bytes: bytes, head: head, status: status,
                   bodyBytes: head.method == .head ? 0 : Int64(status.errorBody.utf8CodeUnitCount))
        startResponse(connection, writer.count)
    }

    /// Answers a request that could not be parsed; the connection closes after it (RFC 9112 section 9.6).
    func sendError(_ connection: Connection, _ status: HTTPStatus) {
        connection.closeAfterResponse = true
        if !errorPages.isEmpty, let page = errorPage(status) {
            return sendErrorPage(page, status, connection, head: nil, bytes: nil)
        }
        var writer = beginHead(status, connection)
        finishErrorHead(&writer, status, head: false)
        startResponse(connection, writer.count)
    }

    /// Status line and the headers every response has; the caller adds the rest and the blank line.
    func beginHead(_ status: HTTPStatus, _ connection: Connection) -> ByteWriter {
        var writer = ByteWriter(base: headBuffer, capacity: Worker.headCapacity)
        if connection.sendContinue {
            connection.sendContinue = false
            writer.append(HTTPStatus.continue.statusLine)
            writer.append("\r\n")
        }
        writer.append(status.statusLine)
        if let hsts = hstsLine, connection.tls != nil, !currentHostIsLocal {
            hsts.withUnsafeBufferPointer { writer.append($0.baseAddress!, $0.count) }
        }
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

    /// Sends the head in `headBuffer`, then `inline` bytes or the whole of `file`. Whatever the socket
    /// does not take now waits for EPOLLOUT (the connection holds `file` until it is sent).
    func startResponse(
        _ connection: Connection, _ headLength: Int, inline: UnsafeRawBufferPointer? = nil, file: CachedFile? = nil,
        from start: Int64 = 0, to end: Int64 = -1, parts: [ResponsePart] = []
    ) {
        if connection.tls != nil {
            return startTLSResponse(connection, headLength, inline: inline, file: file, from: start, to: end, parts: parts)
        }
        let bodyLength = inline?.count ?? 0
        let total = headLength + bodyLength
        var vectors = (
            iovec(iov_base: UnsafeMutableRawPointer(headBuffer), iov_len: headLength),
            iovec(iov_base: UnsafeMutableRawPointer(mutating: inline?.baseAddress), iov_len: bodyLength)
        )
        var header = msghdr()
        // MSG_MORE also when the connection closes after this response: the bytes wait in the socket
        // for the FIN that `finish` sends right after, and leave with it in one segment.
        let more = file != nil || connection.gzip != nil || connection.closeAfterResponse
        let flags = cs_MSG_NOSIGNAL | (more ? cs_MSG_MORE : 0)
        var sent = 0
        while true {
            let count = withUnsafeMutablePointer(to: &vectors) { pointer in
                pointer.withMemoryRebound(to: iovec.self, capacity: 2) { base in
                    header.msg_iov = base
                    header.msg_iovlen = bodyLength > 0 ? 2 : 1
                    return sendmsg(connection.fd, &header, flags)
                }
            }
            if count >= 0 {
                sent = count
                stats[Stats.bytesSent] &+= UInt64(count)
                break
            }
            if errno == EINTR { continue }
            if errno == EAGAIN { break }
            close(connection)
            return
        }
        if sent < total {
            // The socket took part of it: keep the rest (head and inline body) for EPOLLOUT.
            var rest: [UInt8] = []
            rest.reserveCapacity(total - sent)
            if sent < headLength {
                rest.append(contentsOf: UnsafeBufferPointer(start: headBuffer + sent, count: headLength - sent))
            }
            if let inline, bodyLength > 0 {
                let bodySent = max(0, sent - headLength)
                rest.append(contentsOf: UnsafeRawBufferPointer(rebasing: inline[bodySent...]))
            }
            connection.pendingOutput = rest
            connection.pendingOffset = 0
        }
        sendRest(connection, file: file, from: start, to: end, parts: parts)
    }

    /// After the head (and any in-memory body) went out as far as the socket took them: the file's range
    /// and further parts, then, if anything is left, a wait for EPOLLOUT under the send deadline.
    func sendRest(_ connection: Connection, file: CachedFile?, from start: Int64, to end: Int64, parts: [ResponsePart]) {
        if let file {
            connection.file = file
            connection.fileOffset = start
            connection.fileEnd = end < 0 ? file.size : end
            connection.parts = parts
        }
        guard continueSending(connection) else { return }
        if connection.hasPendingOutput {
            connection.phase = .writing
            connection.deadline = now + Int64(config.timeouts.sendMilliseconds)
            watch(connection, events: Poller.writable)
        }
    }

    /// The TLS form of `startResponse`: head and in-memory body in one SSL_write (one record) when they
    /// fit the TLS buffer, else one after the other; what the socket does not take waits in
    /// `pendingOutput`, and the file follows through `continueSending`.
    func startTLSResponse(
        _ connection: Connection, _ headLength: Int, inline: UnsafeRawBufferPointer?, file: CachedFile?,
        from start: Int64, to end: Int64, parts: [ResponsePart]
    ) {
        let bodyLength = inline?.count ?? 0
        var rest: [UInt8] = []
        if headLength + bodyLength <= Worker.tlsBufferCapacity {
            tlsBuffer.copyMemory(from: headBuffer, byteCount: headLength)
            if let inline, bodyLength > 0 { (tlsBuffer + headLength).copyMemory(from: inline.baseAddress!, byteCount: bodyLength) }
            rest = unsent(connection, UnsafeRawBufferPointer(start: tlsBuffer, count: headLength + bodyLength))
        } else {
            rest = unsent(connection, UnsafeRawBufferPointer(start: headBuffer, count: headLength))
            if let inline {
                if rest.isEmpty { rest = unsent(connection, inline) } else { rest += Array(inline) }
            }
        }
        if connections[Int(connection.fd)] !== connection { return }
        connection.pendingOutput = rest
        connection.pendingOffset = 0
        sendRest(connection, file: file, from: start, to: end, parts: parts)
    }

    /// Writes `bytes` through TLS as far as the socket takes them; returns what is left (closing the
    /// connection on an error, after which the caller must not touch it).
    func unsent(_ connection: Connection, _ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        guard let tls = connection.tls else { return Array(bytes) }
        var offset = 0
        while offset < bytes.count {
            let count = tls.write(bytes.baseAddress! + offset, bytes.count - offset)
            if count > 0 {
                stats[Stats.bytesSent] &+= UInt64(count)
                offset += count
                continue
            }
            if errno == EAGAIN { return Array(UnsafeRawBufferPointer(rebasing: bytes[offset...])) }
            close(connection)
            return []
        }
        return []
    }

    /// send(2) with MSG_MORE when more follows, or SSL_write on a TLS connection.
    @inline(__always)
    func transmit(_ connection: Connection, _ bytes: UnsafeRawPointer, _ count: Int, more: Bool) -> Int {
        if let tls = connection.tls { return tls.write(bytes, count) }
        return Glibc.send(connection.fd, bytes, count, cs_MSG_NOSIGNAL | (more ? cs_MSG_MORE : 0))
    }

    /// Pushes pending bytes, then the file's range, then each further part (multipart ranges). Returns
    /// false when the connection was closed.
    func continueSending(_ connection: Connection) -> Bool {
        var compressedNow = 0
        while true {
            while connection.pendingOffset < connection.pendingOutput.count {
                let count = connection.pendingOutput.withUnsafeBytes {
                    transmit(connection, $0.baseAddress! + connection.pendingOffset,
                             $0.count - connection.pendingOffset,
                             more: connection.file != nil || connection.gzip != nil || connection.closeAfterResponse)
                }
                if count > 0 {
                    stats[Stats.bytesSent] &+= UInt64(count)
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
            guard let file = connection.file else {
                guard let stream = connection.gzip else { return true }
                // At most a quarter MiB of the file per turn of the loop, so one large compressed download
                // does not stall the worker's other connections; EPOLLOUT brings the next turn.
                if compressedNow >= 262_144 { return true }
                guard let chunk = stream.nextChunk(consumed: &compressedNow) else {
                    close(connection)  // the file shrank under us: the body cannot be finished
                    return false
                }
                if stream.finished { connection.gzip = nil }
                connection.pendingOutput = Array(chunk)
                connection.pendingOffset = 0
                continue
            }
            if connection.tls != nil && connection.fileOffset < connection.fileEnd {
                // No sendfile through TLS: read a record's worth and write it; what the socket does not
                // take becomes pending bytes, sent before the next read from the file.
                let want = Int(min(connection.fileEnd - connection.fileOffset, 16_384))
                let count = pread(file.fd, tlsBuffer, want, off_t(connection.fileOffset))
                if count <= 0 {
                    if count < 0 && errno == EINTR { continue }
                    close(connection)  // the file shrank under us: the promised length cannot be sent
                    return false
                }
                connection.fileOffset += Int64(count)
                let rest = unsent(connection, UnsafeRawBufferPointer(start: tlsBuffer, count: count))
                if connections[Int(connection.fd)] !== connection { return false }
                if !rest.isEmpty {
                    connection.pendingOutput = rest
                    connection.pendingOffset = 0
                    return true
                }
                continue
            }
            while connection.fileOffset < connection.fileEnd {
                var offset = off_t(connection.fileOffset)
                let count = sendfile(connection.fd, file.fd, &offset, Int(min(connection.fileEnd - connection.fileOffset, 1 << 30)))
                if count > 0 {
                    stats[Stats.bytesSent] &+= UInt64(count)
                    connection.fileOffset = Int64(offset)
                    continue
                }
                if count < 0 && errno == EINTR { continue }
                if count < 0 && errno == EAGAIN { return true }
                // count == 0: the file shrank under us; the promised length cannot be sent, so close.
                close(connection)
                return false
            }
            if connection.parts.isEmpty {
                connection.file = nil
                return true
            }
            let part = connection.parts.removeFirst()
            connection.pendingOutput = part.prefix
            connection.pendingOffset = 0
            connection.fileOffset = part.start
            connection.fileEnd = part.end
            // The closing boundary has no range: nothing follows it, so it goes without MSG_MORE.
            if part.start == part.end && connection.parts.isEmpty { connection.file = nil }
        }
    }

    // MARK: Access log

    /// Appends one combined-format line for the request being answered (and counts its status). Takes
    /// the head borrowed, never as an Optional: wrapping the large struct would copy it per request.
    func logRequest(
        _ connection: Connection, bytes: UnsafeRawBufferPointer, head: borrowing RequestHead, status: HTTPStatus, bodyBytes: Int64
    ) {
        logLine(connection, bytes: bytes, requestLine: head.requestLine, referer: head.referer, userAgent: head.userAgent,
                client: currentClient, status: status, bodyBytes: bodyBytes)
    }

    /// The line for a request that could not be parsed: its first line as far as it goes, the peer.
    func logUnparsed(_ connection: Connection, bytes: UnsafeRawBufferPointer, status: HTTPStatus, bodyBytes: Int64) {
        var end = 0
        while end < bytes.count && end < 1024 && bytes[end] != 13 && bytes[end] != 10 { end += 1 }
        logLine(connection, bytes: bytes, requestLine: ByteSpan(start: 0, end: end), referer: .none, userAgent: .none,
                client: connection.peer, status: status, bodyBytes: bodyBytes)
    }

    func logLine(
        _ connection: Connection, bytes: UnsafeRawBufferPointer, requestLine: ByteSpan, referer: ByteSpan, userAgent: ByteSpan,
        client: SocketAddress, status: HTTPStatus, bodyBytes: Int64
    ) {
        stats[Stats.status1xx + Int(min(max(status.rawValue / 100, 1), 5)) - 1] &+= 1
        guard accessLogFD >= 0 else { return }
        if logCount >= Worker.logFlushAt { flushLog() }
        if jsonLog {
            return logJSON(bytes: bytes, requestLine: requestLine, referer: referer, userAgent: userAgent, client: client,
                           status: status, bodyBytes: bodyBytes)
        }
        var writer = ByteWriter(base: logBuffer + logCount, capacity: Worker.logCapacity - logCount)
        appendHost(client, &writer)
        writer.append(" - - [")
        writer.append(logTimeBytes, Worker.logTimeLength)
        writer.append("] \"")
        appendEscaped(&writer, bytes, requestLine)
        writer.append("\" ")
        writer.appendDecimal(Int64(status.rawValue))
        writer.append(byte: 32)
        if bodyBytes >= 0 { writer.appendDecimal(bodyBytes) } else { writer.append(byte: 45) }  // "-": not known yet
        writer.append(" \"")
        if !referer.isEmpty { appendEscaped(&writer, bytes, referer) } else { writer.append(byte: 45) }
        writer.append("\" \"")
        if !userAgent.isEmpty { appendEscaped(&writer, bytes, userAgent) } else { writer.append(byte: 45) }
        writer.append("\"\n")
        if !writer.overflowed { logCount += writer.count }
    }

    /// `access_log_format: json`: one object per line; strings escaped for JSON (control bytes, quotes,
    /// backslashes and every byte above 0x7e as `\u00XX`, so any input makes valid JSON).
    func logJSON(
        bytes: UnsafeRawBufferPointer, requestLine: ByteSpan, referer: ByteSpan, userAgent: ByteSpan, client: SocketAddress,
        status: HTTPStatus, bodyBytes: Int64
    ) {
        var writer = ByteWriter(base: logBuffer + logCount, capacity: Worker.logCapacity - logCount)
        writer.append("{\"time\":\"")
        writer.append(isoTimeBytes, Worker.isoTimeLength)
        writer.append("\",\"client\":\"")
        appendHost(client, &writer)
        writer.append("\",\"client_port\":")
        writer.appendDecimal(Int64(client.port))
        writer.append(",\"request\":\"")
        appendEscaped(&writer, bytes, requestLine, json: true)
        writer.append("\",\"status\":")
        writer.appendDecimal(Int64(status.rawValue))
        writer.append(",\"bytes\":")
        if bodyBytes >= 0 { writer.appendDecimal(bodyBytes) } else { writer.append("null") }
        writer.append(",\"referer\":\"")
        appendEscaped(&writer, bytes, referer, json: true)
        writer.append("\",\"user_agent\":\"")
        appendEscaped(&writer, bytes, userAgent, json: true)
        writer.append("\"}\n")
        if !writer.overflowed { logCount += writer.count }
    }

    /// The client's address as text (`203.0.113.9`, `2001:db8::1`), formatted on the stack.
    func appendHost(_ client: SocketAddress, _ writer: inout ByteWriter) {
        var host: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &host) { scratch in
            let base = scratch.baseAddress!.assumingMemoryBound(to: CChar.self)
            let length = client.formatHost(into: base, capacity: scratch.count)
            writer.append(UnsafeRawPointer(base).assumingMemoryBound(to: UInt8.self), length)
        }
    }

    /// Copies a field into the log, at most 4096 input bytes, then `...`. Control bytes, quotes,
    /// backslashes and every byte above 0x7e are escaped: as `\xHH` in the combined format, and for JSON
    /// as `\"`, `\\` and `\u00XX`, so any request makes a valid line.
    func appendEscaped(_ writer: inout ByteWriter, _ bytes: UnsafeRawBufferPointer, _ span: ByteSpan, json: Bool = false) {
        let hex: StaticString = json ? "0123456789abcdef" : "0123456789ABCDEF"
        let end = min(span.end, span.start + 4096)
        var index = span.start
        while index < end {
            let byte = bytes[index]
            if byte >= 32 && byte < 127 && byte != 34 && byte != 92 {
                writer.append(byte: byte)
            } else if json && byte >= 32 {
                if byte == 34 || byte == 92 {
                    writer.append(byte: 92)
                    writer.append(byte: byte)
                } else {
                    writer.append("\\u00")
                    writer.append(byte: hex.utf8Start[Int(byte >> 4)])
                    writer.append(byte: hex.utf8Start[Int(byte & 15)])
                }
            } else {
                writer.append(json ? "\\u00" : "\\x")
                writer.append(byte: hex.utf8Start[Int(byte >> 4)])
                writer.append(byte: hex.utf8Start[Int(byte & 15)])
            }
            index += 1
        }
        if end < span.end { writer.append("...") }
    }
}
