import CSystemShims
import Glibc

/// Scratch memory a response is composed in, one per worker and shared by every site's files (a
/// response points into it until the next one is made): the normalized path, the ranges, the
/// multipart parts and boundary, the last directory listing.
final class FileScratch {
    /// The normalized path of the request being answered, NUL-terminated (capacity `pathCapacity`).
    let pathBuffer: UnsafeMutablePointer<UInt8>
    let pathCapacity: Int
    /// Ranges of the request being answered, sorted and coalesced (capacity `limits.ranges`).
    let rangeBuffer: UnsafeMutablePointer<(Int64, Int64)>
    /// The multipart/byteranges boundary: random per worker, so no file's bytes can forge it.
    let boundary: UnsafeMutablePointer<UInt8>
    static let boundaryLength = 24
    /// The parts of the last multipart response (capacity `limits.ranges` + 1, `partCount` initialized).
    let parts: UnsafeMutableBufferPointer<ResponsePart>
    var partCount = 0
    /// The last directory listing's HTML (grown as needed).
    var listingBytes = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    deinit {
        _ = parts.baseAddress!.deinitialize(count: partCount)
        parts.deallocate()
        pathBuffer.deallocate()
        rangeBuffer.deallocate()
        boundary.deallocate()
        listingBytes.deallocate()
    }

    /// Room for a target of `limits.request_line` with the longest index name or try_files candidate.
    init(config: ServerConfig) {
        let longestAddition = config.allSites.map { site in
            ([site.index] + (site.rules.tryFiles?.candidates ?? [])).map(\.utf8.count).max() ?? 0
        }.max() ?? 0
        pathCapacity = config.limits.requestLine + longestAddition + 8
        pathBuffer = .allocate(capacity: pathCapacity)
        rangeBuffer = .allocate(capacity: config.limits.ranges)
        parts = .allocate(capacity: config.limits.ranges + 1)
        boundary = .allocate(capacity: FileScratch.boundaryLength)
        var random = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &random) { _ = getrandom($0.baseAddress, $0.count, 0) }
        let hex: StaticString = "0123456789abcdef"
        for index in 0..<FileScratch.boundaryLength {
            let word = index < 16 ? random.0 >> UInt64(index * 4) : random.1 >> UInt64((index - 16) * 4)
            boundary[index] = hex.utf8Start[Int(word & 15)]
        }
    }
}

/// GET and HEAD of one site's files beneath its root, for any protocol: finds the file (the open-file
/// cache, or opened beneath the root with its index, sidecar and `headers` lines; `try_files` for a path
/// that names none), chooses its representation (Accept-Encoding), applies preconditions and ranges,
/// and describes the answer as a `Response`. It writes nothing: the protocol that asked encodes and
/// sends what it returns.
///
/// Owns the site's open-file cache and error pages; the compressed-body cache, the scratch buffers and
/// the `FieldBuffer` its fields go into are the worker's, shared with the other sites.
final class StaticFiles {
    /// The root: every file is opened beneath its fd, which follows the path (a swapped symlink).
    let root: SiteRoot
    /// `index`, `autoindex` and `encoded_slash`.
    let index: String
    let autoindex: Bool
    let rejectEncodedSlash: Bool
    /// `gzip`, and `limits.ranges` (more ranges get the whole file).
    let gzip: ServerConfig.GzipSettings
    let rangeLimit: Int
    /// Open files with their validators and small bodies; their compressed forms; error pages; the
    /// `headers` rules, applied when a file is opened.
    var fileCache: FileCache
    let compression: Compressor
    let errorPages: ErrorPages
    let headerRules: HeaderRules
    /// `try_files`, when the site has it, and its `except` prefixes as bytes.
    let tryFiles: TryFiles?
    let exceptPrefixes: [[UInt8]]
    /// Where fields that are not a file's prebuilt block are composed (shared with the handler).
    let fields: FieldBuffer
    let scratch: FileScratch
    /// The scratch's buffers (see `FileScratch`), read on every request.
    let pathBuffer: UnsafeMutablePointer<UInt8>
    let pathCapacity: Int
    let rangeBuffer: UnsafeMutablePointer<(Int64, Int64)>
    let boundary: UnsafeMutablePointer<UInt8>
    let parts: UnsafeMutableBufferPointer<ResponsePart>
    /// While a `try_files` candidate is answered: set when it names nothing, so the next is tried.
    var answeringCandidate = false
    var missed = false
    /// Whether files of a media type are compressed (`gzip.types` and `.never`, a walk over patterns
    /// with Strings), decided once per type a file was opened with: keyed by the type's static text.
    private var compressibleTypes: [UnsafeRawPointer: Bool] = [:]

    init(site: SiteSettings, config: ServerConfig, fields: FieldBuffer, scratch: FileScratch, compressed: CompressedCache) throws {
        root = try SiteRoot(path: site.root, now: monotonicMilliseconds())
        index = site.index
        autoindex = site.autoindex
        rejectEncodedSlash = config.encodedSlash == .reject
        gzip = site.gzip
        rangeLimit = config.limits.ranges
        fileCache = FileCache(
            capacity: site.fileCache.entries, validityMilliseconds: site.fileCache.validMilliseconds,
            inlineLimit: site.fileCache.inlineMax, sidecars: site.gzip.precompressed)
        compression = Compressor(settings: site.gzip, cache: compressed)
        errorPages = ErrorPages(
            site.errorPages, root: root, validity: Int64(site.fileCache.validMilliseconds), inlineLimit: site.fileCache.inlineMax)
        headerRules = HeaderRules(rules: site.headers)
        tryFiles = site.rules.tryFiles
        exceptPrefixes = (site.rules.tryFiles?.except ?? []).map { Array($0.utf8) }
        self.fields = fields
        self.scratch = scratch
        pathBuffer = scratch.pathBuffer
        pathCapacity = scratch.pathCapacity
        rangeBuffer = scratch.rangeBuffer
        boundary = scratch.boundary
        parts = scratch.parts
        BeneathRoot.symlinks = config.symlinks
    }

    /// Looks at the root's path again (every `file_cache.valid`); when it names another directory now,
    /// the files cached beneath the old one are dropped.
    func refreshRoot(now: Int64) {
        guard root.refresh(now: now, validity: fileCache.validity) else { return }
        fileCache.removeAll()
        errorPages.removeAll()
    }

    // MARK: Finding the file

    /// The answer to GET or HEAD of the request's target; a path that names nothing goes through
    /// `try_files` when the site has it and the path is not under one of its `except` prefixes.
    func respond(_ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, now: Int64) -> Response {
        guard head.target.count + index.utf8.count + 4 <= pathCapacity else { return error(.uriTooLong, now: now) }
        let outcome = RequestPath.normalize(bytes, target: head.target, into: pathBuffer, rejectEncodedSlash: rejectEncodedSlash)
        guard case .path(var length, let directory, let pathEnd) = outcome else {
            if case .rejected(let status) = outcome { return error(status, now: now) }
            return error(.badRequest, now: now)
        }
        let hash = FileCache.hash(pathBuffer, length, directory: directory)
        if let file = fileCache.lookup(pathBuffer, length, directory: directory, hash: hash, now: now, root: root.fd) {
            return answer(file, head, bytes, now: now)
        }
        // Not cached (or changed): open it beneath the root.
        var key = Array(UnsafeBufferPointer(start: pathBuffer, count: length))
        key.append(directory ? 1 : 0)
        var fd = openBeneathRoot()
        if fd < 0 {
            let code = errno
            if code == ENOENT || code == ENOTDIR { return missing(length, head, bytes, now: now) }
            return error(StaticFiles.openFailureStatus(code), now: now)
        }
        var info = stat()
        fstat(fd, &info)
        if info.st_mode & S_IFMT == S_IFDIR {
            closeDescriptor(fd)
            if !directory {
                // A try_files candidate without its slash names a file or nothing (`$uri/` is the one
                // that serves a directory there).
                if answeringCandidate { return missing(length, head, bytes, now: now) }
                return redirectToDirectory(head, bytes, pathLength: length, pathEnd: pathEnd, now: now)
            }
            // Append "/index" (or just "index" at the root, whose path is ".").
            let directoryLength = length
            if length == 1 && pathBuffer[0] == UInt8(ascii: ".") { length = 0 } else {
                pathBuffer[length] = UInt8(ascii: "/")
                length += 1
            }
            for byte in index.utf8 {
                pathBuffer[length] = byte
                length += 1
            }
            pathBuffer[length] = 0
            fd = openBeneathRoot()
            if fd < 0 {
                let code = errno
                if code == ENOENT && autoindex {
                    pathBuffer[directoryLength] = 0
                    return listing(pathLength: directoryLength, now: now)
                }
                if code == ENOENT { return missing(directoryLength, head, bytes, now: now) }
                return error(StaticFiles.openFailureStatus(code), now: now)
            }
            fstat(fd, &info)
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            closeDescriptor(fd)
            return error(info.st_mode & S_IFMT == S_IFDIR ? .notFound : .forbidden, now: now)
        }
        let opened = Array(UnsafeBufferPointer(start: pathBuffer, count: length + 1))
        let type = MediaTypes.forPath(pathBuffer, length: length)
        let extra = headerRules.lines(forPath: pathBuffer, length: length)
        let compressible = gzip.enabled && Int64(info.st_size) >= Int64(gzip.minLength) && compresses(type)
        var sidecars: [CachedFile?] = []
        if gzip.precompressed {
            for coding in ContentCoding.allCases {
                guard let sidecar = openSidecar(coding, pathLength: length, of: info, type: type, key: key, extra: extra, now: now) else { continue }
                if sidecars.isEmpty { sidecars = [nil, nil, nil] }
                sidecars[coding.rawValue] = sidecar
            }
        }
        guard let file = CachedFile(
            fd: fd, info: info, contentType: type, openedPath: opened, key: key, inlineLimit: fileCache.inlineLimit,
            now: now, extraHeaders: extra, varies: compressible || !sidecars.isEmpty, compressible: compressible)
        else {
            // The file changed size while it was read; the client may simply retry.
            return error(.serviceUnavailable, now: now)
        }
        file.sidecars = sidecars
        fileCache.insert(file, hash: hash)
        return answer(file, head, bytes, now: now)
    }

    /// Whether files of media type `type` are compressed (`compressibleTypes`).
    func compresses(_ type: StaticString) -> Bool {
        guard type.hasPointerRepresentation else { return gzip.compresses(type.description) }
        let key = UnsafeRawPointer(type.utf8Start)
        if let known = compressibleTypes[key] { return known }
        let decided = gzip.compresses(type.description)
        compressibleTypes[key] = decided
        return decided
    }

    /// A path that names nothing (`pathBuffer[0..<length]`, the normalized path asked for): 404, or
    /// `try_files`. While a candidate is being answered, only noted (`missed`) for the loop to go on.
    @inline(never)
    func missing(_ length: Int, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, now: Int64) -> Response {
        if answeringCandidate {
            missed = true
            return error(.notFound, now: now)
        }
        guard let tryFiles else { return error(.notFound, now: now) }
        for prefix in exceptPrefixes where RequestPath.isUnder(pathBuffer, length, directory: false, prefix) {
            return error(.notFound, now: now)
        }
        let original = Array(UnsafeBufferPointer(start: pathBuffer, count: length))
        return fallback(tryFiles, original: original, head, bytes, now: now)
    }

    /// `try_files` for a path that named nothing: each candidate in turn (`$uri`, `$uri.EXT`, `$uri/`,
    /// or a fixed path) answered as if it had been asked for, through `respond` with a copy of the
    /// request whose target is the candidate (so 200 with the candidate's own validators, 304, ranges
    /// and the rest work as for any file); 404 when none names a file.
    func fallback(
        _ tryFiles: TryFiles, original: [UInt8], _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, now: Int64
    ) -> Response {
        let isRoot = original == [UInt8(ascii: ".")]
        let headLength = head.headLength
        for candidate in tryFiles.candidates {
            var path: [UInt8]
            var directory = false
            if candidate == "$uri" {
                path = original
            } else if candidate == "$uri/" {
                path = original
                directory = true
            } else if candidate.hasPrefix("$uri.") {
                guard !isRoot else { continue }
                path = original + Array(candidate.utf8.dropFirst(4))
            } else {
                path = Array(candidate.utf8.dropFirst())
                if path.last == UInt8(ascii: "/") {
                    path.removeLast()
                    directory = true
                }
            }
            if path == [UInt8(ascii: ".")] { path = [] }
            // The request's head with the candidate, percent-encoded, after it as the target.
            var request = Array(UnsafeRawBufferPointer(rebasing: bytes[..<headLength]))
            let targetStart = request.count
            request.append(UInt8(ascii: "/"))
            let hex: StaticString = "0123456789ABCDEF"
            for byte in path {
                if RequestPath.isPathByte(byte) {
                    request.append(byte)
                } else {
                    request += [UInt8(ascii: "%"), hex.utf8Start[Int(byte >> 4)], hex.utf8Start[Int(byte & 15)]]
                }
            }
            if directory && !path.isEmpty { request.append(UInt8(ascii: "/")) }
            var candidateHead = copy head
            candidateHead.target = ByteSpan(start: targetStart, end: request.count)
            guard candidateHead.target.count + index.utf8.count + 4 <= pathCapacity else { continue }
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: request.count, alignment: 1)
            defer { copy.deallocate() }  // the response points into none of it
            copy.copyBytes(from: request)
            answeringCandidate = true
            missed = false
            let response = respond(candidateHead, UnsafeRawBufferPointer(copy), now: now)
            answeringCandidate = false
            if !missed { return response }
        }
        return error(.notFound, now: now)
    }

    /// `FILE.br`, `FILE.zst` or `FILE.gz` beside the file at `pathBuffer[0..<pathLength]`, when it is a
    /// regular file not older than the file: its bytes with the file's type and its Content-Encoding.
    func openSidecar(
        _ coding: ContentCoding, pathLength length: Int, of info: stat, type: StaticString, key: [UInt8], extra: [UInt8], now: Int64
    ) -> CachedFile? {
        let suffix = coding.sidecarSuffix
        guard length + suffix.count < pathCapacity else { return nil }
        for (offset, byte) in suffix.enumerated() { pathBuffer[length + offset] = byte }
        pathBuffer[length + suffix.count] = 0
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
            fd: fd, info: sidecar, contentType: type, openedPath: Array(UnsafeBufferPointer(start: pathBuffer, count: length + suffix.count + 1)),
            key: key, inlineLimit: fileCache.inlineLimit, now: now, extraHeaders: extra, coding: .sidecar(coding), varies: true)
    }

    /// Opens `pathBuffer` beneath the root (O_NONBLOCK so a FIFO cannot block the loop).
    func openBeneathRoot() -> Int32 {
        BeneathRoot.open(root.fd, pathBuffer, flags: O_RDONLY | cs_O_CLOEXEC | cs_O_NONBLOCK | O_NOCTTY)
    }

    static func openFailureStatus(_ code: Int32) -> HTTPStatus {
        switch code {
        case ENOENT, ENOTDIR, ENAMETOOLONG: return .notFound
        case EACCES, EPERM, ELOOP, EXDEV: return .forbidden
        case EMFILE, ENFILE: return .serviceUnavailable
        default:
            log.error("open failed: \(SystemError(call: "openat2", errno: code))")
            return .internalServerError
        }
    }

    // MARK: Answering for a file

    /// The answer for `file`: the representation Accept-Encoding chooses, preconditions against it
    /// (RFC 9110 section 13.2.2), then Range, else a 200 with its whole body.
    func answer(_ file: CachedFile, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, now: Int64) -> Response {
        guard var chosen = representation(of: file, head, bytes) else { return error(.notAcceptable, now: now) }
        if case .toCompress(let coding) = chosen.coding, file.size <= Int64(gzip.cacheFileMax) {
            // Compressed whole: the body in the cache now (its level, so its ETag, may have improved
            // since the first request) is what preconditions compare.
            guard let made = compression.compressedForm(file, coding: coding) else { return error(.serviceUnavailable, now: now) }
            chosen = made
        }
        if head.hasConditions {
            switch conditions(chosen, head, bytes) {
            case .proceed: break
            case .notModified: return notModified(chosen)
            case .preconditionFailed: return error(.preconditionFailed, now: now)
            case .unsatisfiable: return unsatisfiable(chosen, now: now)
            case .ranges(let count): return count == 1 ? singleRange(chosen) : multipart(chosen, count: count)
            }
        }
        if case .toCompress(let coding) = chosen.coding {
            // Too large to compress whole: compressed while it is sent, at the streaming level (the
            // form's fields; the file's bytes).
            return Response(.ok, fields: UnsafeRawBufferPointer(chosen.headers), representation: file,
                            body: .compressStream(coding, level: gzip.streamLevel(coding)))
        }
        return whole(chosen)
    }

    /// 200 with all of `representation`. (A call of its own: built inline among `answer`'s other
    /// returns, the response was built in a temporary and copied, a retain and release per request.)
    @inline(never)
    func whole(_ representation: CachedFile) -> Response {
        Response(.ok, fields: UnsafeRawBufferPointer(representation.headers), representation: representation,
                 body: StaticFiles.body(of: representation, 0, representation.size))
    }

    /// The representation Accept-Encoding chooses (nil: 406). A file that is never compressed needs the
    /// header only to find a refused identity, which takes a q=0 parameter: without a ';' (browsers
    /// send none) there is nothing to read.
    @inline(__always)
    func representation(of file: CachedFile, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer) -> CachedFile? {
        // (Values first: an `&&` whose right side reads the head would capture, and copy, all of it.)
        let sent = head.sentAcceptEncoding
        let repeated = head.repeatedAcceptEncoding
        let acceptEncoding = head.acceptEncoding
        guard sent && (file.varies || repeated || StaticFiles.hasParameter(bytes, acceptEncoding)) else { return file }
        return compression.negotiate(file, head, bytes)
    }

    /// Whether a field value has a ';' (so parameters such as q=0).
    static func hasParameter(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan) -> Bool {
        guard !span.isEmpty else { return false }
        return memchr(bytes.baseAddress! + span.start, Int32(UInt8(ascii: ";")), span.count) != nil
    }

    /// What preconditions and Range decide for a request that has any of their fields.
    enum Conditions {
        case proceed
        case notModified
        case preconditionFailed
        case unsatisfiable
        /// This many ranges in `rangeBuffer`.
        case ranges(Int)
    }

    /// Preconditions (RFC 9110 section 13.2.2), then Range (section 14). Kept out of `answer` so a
    /// request without these fields pays one branch for them.
    @inline(never)
    func conditions(_ file: CachedFile, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) -> Conditions {
        let validators = file.validators
        switch Preconditions.evaluate(head, bytes, validators) {
        case .notModified: return .notModified
        case .preconditionFailed: return .preconditionFailed
        case .proceed: break
        }
        // Ranges apply to a file's own bytes or its sidecar's, never to a gzip form made here.
        guard file.fd >= 0 else { return .proceed }
        switch RangeSelection.select(head, bytes, validators, length: file.size, limit: rangeLimit, into: rangeBuffer) {
        case .whole: return .proceed
        case .unsatisfiable: return .unsatisfiable
        case .ranges(let count): return .ranges(count)
        }
    }

    /// 304: the validators (and Vary, and the `headers` lines) the 200 would have carried, no body.
    func notModified(_ file: CachedFile) -> Response {
        let fields = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(file.headers)[file.validatorsStart...])
        return Response(.notModified, fields: fields, representation: file)
    }

    /// 416 with the current length, so the client can ask again.
    func unsatisfiable(_ file: CachedFile, now: Int64) -> Response {
        var writer = fields.writer()
        writer.append("Content-Range: bytes */")
        writer.appendDecimal(file.size)
        writer.append("\r\n")
        return error(.rangeNotSatisfiable, now: now, fieldsSoFar: writer)
    }

    /// 206 for the one range in `rangeBuffer[0]`.
    func singleRange(_ file: CachedFile) -> Response {
        let (first, last) = rangeBuffer[0]
        let block = UnsafeRawBufferPointer(file.headers)
        var writer = fields.writer()
        writer.append(UnsafeRawBufferPointer(rebasing: block[..<file.typeEnd]))
        writer.append("Content-Range: bytes ")
        StaticFiles.appendRange(first, last, file.size, &writer)
        writer.append("\r\nContent-Length: ")
        writer.appendDecimal(last - first + 1)
        writer.append("\r\n")
        writer.append(UnsafeRawBufferPointer(rebasing: block[file.lengthEnd...]))
        return Response(.partialContent, fields: writer.written, representation: file, body: StaticFiles.body(of: file, first, last + 1))
    }

    /// 206 multipart/byteranges (RFC 9110 section 14.6) for `count` sorted, coalesced ranges: each part
    /// is its boundary and headers, then the bytes straight from the file.
    func multipart(_ file: CachedFile, count: Int) -> Response {
        let block = UnsafeRawBufferPointer(file.headers)
        _ = parts.baseAddress!.deinitialize(count: scratch.partCount)
        scratch.partCount = 0
        let partScratch = UnsafeMutablePointer<UInt8>.allocate(capacity: 512)
        defer { partScratch.deallocate() }
        var total: Int64 = 0
        for index in 0..<count {
            let (first, last) = rangeBuffer[index]
            var writer = ByteWriter(base: partScratch, capacity: 512)
            writer.append("\r\n--")
            writer.append(boundary, FileScratch.boundaryLength)
            writer.append("\r\n")
            writer.append(UnsafeRawBufferPointer(rebasing: block[..<file.typeEnd]))
            writer.append("Content-Range: bytes ")
            StaticFiles.appendRange(first, last, file.size, &writer)
            writer.append("\r\n\r\n")
            (parts.baseAddress! + scratch.partCount).initialize(to: ResponsePart(prefix: Array(writer.written), start: first, end: last + 1))
            scratch.partCount += 1
            total += Int64(writer.count) + last - first + 1
        }
        var closing = ByteWriter(base: partScratch, capacity: 512)
        closing.append("\r\n--")
        closing.append(boundary, FileScratch.boundaryLength)
        closing.append("--\r\n")
        (parts.baseAddress! + scratch.partCount).initialize(to: ResponsePart(prefix: Array(closing.written), start: 0, end: 0))
        scratch.partCount += 1
        total += Int64(closing.count)

        var writer = fields.writer()
        writer.append("Content-Type: multipart/byteranges; boundary=")
        writer.append(boundary, FileScratch.boundaryLength)
        writer.append("\r\nContent-Length: ")
        writer.appendDecimal(total)
        writer.append("\r\n")
        writer.append(UnsafeRawBufferPointer(rebasing: block[file.lengthEnd...]))
        let body = ResponseBody.multipart(UnsafeBufferPointer(start: parts.baseAddress, count: scratch.partCount))
        return Response(.partialContent, fields: writer.written, representation: file, body: body)
    }

    /// Bytes `start..<end` of `file`: from its in-memory copy when it has one, else from its file.
    @inline(__always)
    static func body(of file: CachedFile, _ start: Int64, _ end: Int64) -> ResponseBody {
        guard let memory = file.body else { return .fileRange(start, end) }
        return .bytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(memory)[Int(start)..<Int(end)]))
    }

    /// `first-last/length`.
    static func appendRange(_ first: Int64, _ last: Int64, _ length: Int64, _ writer: inout ByteWriter) {
        writer.appendDecimal(first)
        writer.append(byte: UInt8(ascii: "-"))
        writer.appendDecimal(last)
        writer.append(byte: UInt8(ascii: "/"))
        writer.appendDecimal(length)
    }

    // MARK: Directories and errors

    /// 301 from `/dir` to `/dir/`. The Location is built from the normalized path, percent-encoded, never
    /// from the raw target: `//evil.example` names the directory `evil.example` here, but echoed back it
    /// would be a protocol-relative redirect to another site, and a decoded CR LF would split the header.
    func redirectToDirectory(
        _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, pathLength: Int, pathEnd: Int, now: Int64
    ) -> Response {
        var writer = fields.writer()
        writer.append("Location: /")
        let hex: StaticString = "0123456789ABCDEF"
        for index in 0..<pathLength {
            let byte = pathBuffer[index]
            if RequestPath.isPathByte(byte) {
                writer.append(byte: byte)
            } else {
                writer.append(byte: UInt8(ascii: "%"))
                writer.append(byte: hex.utf8Start[Int(byte >> 4)])
                writer.append(byte: hex.utf8Start[Int(byte & 15)])
            }
        }
        writer.append(byte: UInt8(ascii: "/"))
        writer.append(bytes, ByteSpan(start: pathEnd, end: head.target.end))  // the query, as sent (visible ASCII)
        writer.append("\r\nContent-Length: 0\r\n")
        if writer.overflowed { return error(.uriTooLong, now: now) }
        return Response(.movedPermanently, fields: writer.written)
    }

    /// The `autoindex` listing of the directory at `pathBuffer[0..<pathLength]`.
    func listing(pathLength: Int, now: Int64) -> Response {
        let title = pathLength == 1 && pathBuffer[0] == UInt8(ascii: ".")
            ? [UInt8(ascii: "/")] : [UInt8(ascii: "/")] + Array(UnsafeBufferPointer(start: pathBuffer, count: pathLength)) + [UInt8(ascii: "/")]
        guard let html = DirectoryListing.html(root: root.fd, path: pathBuffer, title: title) else { return error(.forbidden, now: now) }
        if scratch.listingBytes.count < html.count {
            scratch.listingBytes.deallocate()
            scratch.listingBytes = .allocate(byteCount: html.count, alignment: 1)
        }
        html.withUnsafeBytes { scratch.listingBytes.copyMemory(from: $0) }
        var writer = fields.writer()
        writer.append("Content-Type: text/html; charset=utf-8\r\nCache-Control: no-cache\r\nContent-Length: ")
        writer.appendDecimal(Int64(html.count))
        writer.append("\r\n")
        return Response(.ok, fields: writer.written, body: .bytes(UnsafeRawBufferPointer(rebasing: scratch.listingBytes[..<html.count])))
    }

    /// An error answer: the configured page for the status (with its type and length, no validators:
    /// they would describe the page, not what the client asked for), else the built-in body. Fields
    /// already written (`Allow`, `Content-Range`) come first.
    func error(_ status: HTTPStatus, now: Int64, fieldsSoFar: ByteWriter? = nil) -> Response {
        var writer = fieldsSoFar ?? fields.writer()
        if let page = errorPages.page(for: status, now: now) {
            writer.append(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(page.headers)[..<page.lengthEnd]))
            return Response(status, fields: writer.written, representation: page, body: StaticFiles.body(of: page, 0, page.size))
        }
        return StaticFiles.builtInError(status, writer)
    }

    /// The built-in body for `status`, after the fields in `writer`.
    static func builtInError(_ status: HTTPStatus, _ writer: ByteWriter) -> Response {
        var writer = writer
        let body = status.errorBody
        writer.append("Content-Type: text/html; charset=utf-8\r\nContent-Length: ")
        writer.appendDecimal(Int64(body.utf8CodeUnitCount))
        writer.append("\r\n")
        return Response(status, fields: writer.written, body: .text(body))
    }
}
