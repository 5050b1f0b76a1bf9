import CSystemShims
import Foundation
import Glibc

/// What the configuration adds around files: per-path headers, custom error pages, directory listings.
/// None of it is on the path of a cached file's response: headers are built once per file version,
/// error pages and listings are answers to requests that were going to fail or be rare anyway.
extension Worker {
    /// The header lines of every `headers` rule that matches the file at `pathBuffer[0..<pathLength]`
    /// (relative to the root), a later rule replacing an earlier one's header of the same name.
    func extraHeaders(pathLength: Int) -> [UInt8] {
        guard !config.headers.isEmpty else { return [] }
        let path = "/" + String(decoding: UnsafeBufferPointer(start: pathBuffer, count: pathLength), as: UTF8.self)
        var chosen: [(name: String, value: String)] = []
        for rule in config.headers where rule.matches(path) {
            for pair in rule.set where pair.count == 2 {
                chosen.removeAll { $0.name.lowercased() == pair[0].lowercased() }
                chosen.append((pair[0], pair[1]))
            }
        }
        var bytes: [UInt8] = []
        for (name, value) in chosen { bytes += Array("\(name): \(value)\r\n".utf8) }
        return bytes
    }

    /// The configured page for `status`, opened beneath the root and kept open; checked against the disk
    /// like a cached file. Nil when none is configured or it cannot be served (the built-in body is sent).
    func errorPage(_ status: HTTPStatus) -> CachedFile? {
        guard let path = errorPages[status.rawValue] else { return nil }
        if let file = errorPageFiles[status.rawValue] {
            if now - file.validatedAt < fileCache.validity { return file }
            if FileCache.stillCurrent(file, root: rootFD) {
                file.validatedAt = now
                return file
            }
            errorPageFiles[status.rawValue] = nil
        }
        var relative = Array(path.utf8.dropFirst())
        relative.append(0)
        let fd = relative.withUnsafeBufferPointer {
            BeneathRoot.open(rootFD, $0.baseAddress!, flags: O_RDONLY | cs_O_CLOEXEC | cs_O_NONBLOCK | O_NOCTTY)
        }
        guard fd >= 0 else {
            log.warning("error page \(path) for \(status.rawValue) cannot be opened: \(String(cString: strerror(errno)))")
            return nil
        }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            closeDescriptor(fd)
            log.warning("error page \(path) for \(status.rawValue) is not a regular file")
            return nil
        }
        let type = relative.withUnsafeBufferPointer { MediaTypes.forPath($0.baseAddress!, length: $0.count - 1) }
        guard let file = CachedFile(
            fd: fd, info: info, contentType: type, openedPath: relative, key: relative,
            inlineLimit: fileCache.inlineLimit, now: now)
        else { return nil }
        errorPageFiles[status.rawValue] = file
        return file
    }

    /// The error status with the page's type, length and bytes (no validators: they describe the page,
    /// not the resource the client asked for).
    func sendErrorPage(
        _ page: CachedFile, _ status: HTTPStatus, _ connection: Connection, head: RequestHead?, bytes: UnsafeRawBufferPointer?
    ) {
        var writer = beginHead(status, connection)
        if status == .methodNotAllowed { writer.append("Allow: GET, HEAD, OPTIONS\r\n") }
        appendHeaders(page, from: 0, to: page.lengthEnd, &writer)
        writer.append("\r\n")
        let isHead = head?.method == .head
        if let bytes, let head {
            logRequest(connection, bytes: bytes, head: head, status: status, bodyBytes: isHead ? 0 : page.size)
        } else if let bytes {
            logUnparsed(connection, bytes: bytes, status: status, bodyBytes: page.size)
        }
        startResponse(connection, writer.count, wholeFile: page, headOnly: isHead)
    }

    /// An HTML listing of the directory at `pathBuffer[0..<pathLength]` (`autoindex`): names sorted,
    /// dotfiles left out, each name HTML-escaped in the text and percent-encoded in its link.
    func sendListing(
        _ connection: Connection, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer, pathLength: Int, pathEnd: Int
    ) {
        let fd = BeneathRoot.open(rootFD, pathBuffer, flags: O_RDONLY | cs_O_DIRECTORY | cs_O_CLOEXEC)
        guard fd >= 0, let directory = fdopendir(fd) else {
            if fd >= 0 { closeDescriptor(fd) }
            return answerError(connection, head, bytes, .forbidden)
        }
        var entries: [(name: [UInt8], isDirectory: Bool)] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                Array(raw.prefix(while: { $0 != 0 }))
            }
            if name.first == 46 { continue }  // dotfiles, "." and ".."
            var isDirectory = entry.pointee.d_type == UInt8(DT_DIR)
            if entry.pointee.d_type == UInt8(DT_UNKNOWN) || entry.pointee.d_type == UInt8(DT_LNK) {
                var info = stat()
                isDirectory = name.withUnsafeBufferPointer { buffer in
                    var terminated = Array(buffer)
                    terminated.append(0)
                    return terminated.withUnsafeBufferPointer {
                        fstatat(dirfd(directory), UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), &info, 0) == 0
                    } && info.st_mode & S_IFMT == S_IFDIR
                }
            }
            entries.append((name, isDirectory))
        }
        closedir(directory)
        entries.sort { $0.name.lexicographicallyPrecedes($1.name) }

        let title = pathLength == 1 && pathBuffer[0] == 46
            ? [UInt8]("/".utf8) : [47] + Array(UnsafeBufferPointer(start: pathBuffer, count: pathLength)) + [47]
        var html = Array("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Index of ".utf8)
        Worker.appendEscapedHTML(title, to: &html)
        html += Array("</title></head>\n<body><h1>Index of ".utf8)
        Worker.appendEscapedHTML(title, to: &html)
        html += Array("</h1>\n<ul>\n".utf8)
        if title.count > 1 { html += Array("<li><a href=\"../\">../</a></li>\n".utf8) }
        for entry in entries {
            html += Array("<li><a href=\"".utf8)
            Worker.appendPercentEncoded(entry.name, to: &html)
            if entry.isDirectory { html.append(47) }
            html += Array("\">".utf8)
            Worker.appendEscapedHTML(entry.name, to: &html)
            if entry.isDirectory { html.append(47) }
            html += Array("</a></li>\n".utf8)
        }
        html += Array("</ul>\n</body></html>\n".utf8)

        var writer = beginHead(.ok, connection)
        writer.append("Content-Type: text/html; charset=utf-8\r\nCache-Control: no-cache\r\nContent-Length: ")
        writer.appendDecimal(Int64(html.count))
        writer.append("\r\n\r\n")
        let isHead = head.method == .head
        logRequest(connection, bytes: bytes, head: head, status: .ok, bodyBytes: isHead ? 0 : Int64(html.count))
        if isHead {
            startResponse(connection, writer.count)
        } else {
            html.withUnsafeBytes { startResponse(connection, writer.count, inline: $0) }
        }
    }

    /// `&`, `<`, `>`, `"` and `'` as entities; bytes that are not UTF-8 text are shown as U+FFFD by the
    /// browser, never interpreted.
    static func appendEscapedHTML(_ name: [UInt8], to html: inout [UInt8]) {
        for byte in name {
            switch byte {
            case 38: html += Array("&amp;".utf8)
            case 60: html += Array("&lt;".utf8)
            case 62: html += Array("&gt;".utf8)
            case 34: html += Array("&quot;".utf8)
            case 39: html += Array("&#39;".utf8)
            default: html.append(byte)
            }
        }
    }

    /// Every byte outside the unreserved set and a few safe path characters as %XX.
    static func appendPercentEncoded(_ name: [UInt8], to html: inout [UInt8]) {
        let hex: [UInt8] = Array("0123456789ABCDEF".utf8)
        for byte in name {
            let safe = (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
                || byte == 45 || byte == 46 || byte == 95 || byte == 126
            if safe {
                html.append(byte)
            } else {
                html += [37, hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            }
        }
    }
}
