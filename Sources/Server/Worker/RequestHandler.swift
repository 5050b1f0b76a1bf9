import Glibc

/// What the server answers to a request, whichever protocol brought it. First the site: the Host (or
/// `:authority`) is looked up in the `SiteTable` (a name no site claims goes to the default site, or
/// gets `unmatched_host`), and over TLS a site whose certificate is not the one the handshake presented
/// gets 421. Then that site's rules in order: `rate_limit` (429), `access` (403), the HTTP-to-HTTPS
/// redirect, `canonical_host`, `redirects`, `auth` (401), the methods it does not serve, then its
/// static files (with `try_files`). A rule that applies to every protocol is added here (or in what it
/// calls), never in a protocol's code.
final class RequestHandler {
    let fields: FieldBuffer
    /// Every site, the default first (`ServerConfig.allSites`), and the table that finds them by name.
    let sites: [Site]
    let table: SiteTable
    /// Whether a name no site claims goes to the default site, else what it gets.
    let hasDefaultSite: Bool
    let unmatchedHost: UnmatchedHost
    /// The port of the TLS socket to redirect to (443 is left out of the URL).
    let redirectPort: Int
    /// `proxy.trusted`: whose X-Forwarded-Proto (or Forwarded proto=) is believed for `redirect_http`.
    let trustedProxies: Networks
    /// What every site's files share: the worker's scratch buffers and compressed-body cache.
    let scratch: FileScratch
    let compressed: CompressedCache
    let config: ServerConfig
    /// Basic authentication's libcrypt work area and remembered outcomes (made on first use).
    private var basicAuth: BasicAuth?
    /// Set by `respond` when the answer is to close the connection without one (`unmatched_host:
    /// close`); the protocol that asked clears it.
    var dropConnection = false
    /// The one site's files when there is one site and no rule: every request goes straight to them,
    /// as it did before there were sites (a stored constant, so the call retains nothing).
    let onlyFiles: StaticFiles?
    /// The ACME state directories whose HTTP-01 key authorizations plain requests for
    /// /.well-known/acme-challenge/TOKEN are answered from, ahead of every site's rules (nil: none).
    let acmeTokenDirectories: [String]?
    /// The last key authorization sent (valid until the next response, as a `Response` needs).
    private var acmeBody = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 1)

    init(config: ServerConfig, fields: FieldBuffer) throws {
        self.fields = fields
        self.config = config
        let scratch = FileScratch(config: config)
        let compressed = CompressedCache(budget: config.gzip.cacheBytes)
        self.scratch = scratch
        self.compressed = compressed
        let sites = config.allSites.enumerated().map { Site($1, index: $0) }
        self.sites = sites
        table = SiteTable(config.allSites)
        hasDefaultSite = config.hasDefaultSite
        unmatchedHost = config.unmatchedHost
        redirectPort = config.tls.redirectPort
        trustedProxies = Networks(config.proxy.trusted) ?? Networks()
        // The default site's files are opened now, so a root that cannot be opened stops the worker at
        // start as it always has; the other sites' on their first request.
        if !config.root.isEmpty {
            sites[0].madeFiles = try StaticFiles(site: config.defaultSite, config: config, fields: fields, scratch: scratch, compressed: compressed)
        }
        onlyFiles = sites.count == 1 && !sites[0].hasRules ? sites[0].madeFiles : nil
        let http01 = config.acmeCertificates.filter { $0.settings.challenges.contains(.http01) }.map(\.settings.http01Directory)
        acmeTokenDirectories = http01.isEmpty ? nil : Array(Set(http01)).sorted()
        for site in sites { site.refresh(now: monotonicMilliseconds()) }
    }

    deinit { acmeBody.deallocate() }

    private func makeFiles(_ settings: SiteSettings) throws -> StaticFiles {
        try StaticFiles(site: settings, config: config, fields: fields, scratch: scratch, compressed: compressed)
    }

    /// The default site's files, when it serves any (error pages for answers made before a request is
    /// known).
    var defaultFiles: StaticFiles? { sites[0].madeFiles }

    /// Looks at every site's root and password files again (from the tick).
    func refresh(now: Int64) {
        for site in sites { site.refresh(now: now) }
    }

    // MARK: Answering

    /// The answer to a parsed request on `connection`.
    @inline(__always)
    func respond(
        _ exchange: Exchange, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, _ connection: Connection, now: Int64
    ) -> Response {
        if let onlyFiles {
            switch head.method {
            case .get, .head: return onlyFiles.respond(head, bytes, now: now)
            default: break
            }
        }
        return route(exchange, head, bytes, connection, now: now)
    }

    /// The site of a request (and 421 when its certificate is another), then its answer.
    @inline(never)
    private func route(
        _ exchange: Exchange, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, _ connection: Connection, now: Int64
    ) -> Response {
        if acmeTokenDirectories != nil && !exchange.secure {
            if RequestHandler.isACMEChallenge(head, bytes), let answer = acmeChallenge(head, bytes) { return answer }
        }
        var index = table.site(bytes, head.host)
        if index < 0 {
            guard hasDefaultSite else { return unmatched(now: now) }
            index = 0
        }
        let site = sites[index]
        // RFC 9110 section 15.5.20: this connection's certificate was not presented for that site.
        if connection.certificateSite >= 0 && connection.certificateSite != site.certificateSite {
            return error(.misdirectedRequest, site.madeFiles, now: now)
        }
        return respond(site, exchange, head, bytes, connection, now: now)
    }

    private func respond(
        _ site: Site, _ exchange: Exchange, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, _ connection: Connection,
        now: Int64
    ) -> Response {
        let files = site.madeFiles ?? site.makeFiles(makeFiles, now: now)
        if site.hasRules {
            if let answer = rules(site, files, exchange, head, bytes, connection, now: now) { return answer }
        }
        switch head.method {
        case .get, .head:
            guard let files else { return error(.notFound, nil, now: now) }
            return files.respond(head, bytes, now: now)
        case .options:
            var writer = fields.writer()
            writer.append("Allow: GET, HEAD, OPTIONS\r\nContent-Length: 0\r\n")
            return Response(.noContent, fields: writer.written)
        default:
            var writer = fields.writer()
            writer.append("Allow: GET, HEAD, OPTIONS\r\n")
            return error(.methodNotAllowed, files, now: now, fieldsSoFar: writer)
        }
    }

    /// The site's rules before its files, in order; nil when the request passes them all. Kept out of
    /// `respond` so a site without rules pays one test for them.
    @inline(never)
    private func rules(
        _ site: Site, _ files: StaticFiles?, _ exchange: Exchange, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer,
        _ connection: Connection, now: Int64
    ) -> Response? {
        if site.rateLimiter != nil, let wait = site.rateLimiter!.admit(exchange.client, now: now) {
            var writer = fields.writer()
            writer.append("Retry-After: ")
            writer.appendDecimal(Int64(wait))
            writer.append("\r\n")
            return error(.tooManyRequests, files, now: now, fieldsSoFar: writer)
        }
        // The rules that guard paths compare the normalized path (a rejected one is answered below).
        var normalized: (length: Int, directory: Bool)? = nil
        if !site.access.isEmpty || !site.auth.isEmpty, head.target.count + 4 <= scratch.pathCapacity,
           case .path(let length, let directory, _) = RequestPath.normalize(
               bytes, target: head.target, into: scratch.pathBuffer, rejectEncodedSlash: config.encodedSlash == .reject) {
            normalized = (length, directory)
        }
        for rule in site.access where Site.covers(rule.prefix, normalized, scratch.pathBuffer) {
            let client = exchange.client
            if rule.deny.contains(client, unixMatches: false) || (!rule.allow.isEmpty && !rule.allow.contains(client, unixMatches: false)) {
                return error(.forbidden, files, now: now)
            }
        }
        // Nested, not `&&`: an autoclosure that takes the head would copy all of it.
        if !exchange.secure && site.redirectHTTP {
            if !RequestHandler.isACMEChallenge(head, bytes) {
                if !forwardedHTTPS(head, bytes, connection) { return redirectToTLS(head, bytes, now: now) }
            }
        }
        if let canonical = site.canonicalHost {
            if let location = canonicalLocation(canonical, head, bytes, secure: exchange.secure) { return location }
        }
        if !site.redirects.isEmpty {
            if let location = redirect(site, head, bytes) { return location }
        }
        for rule in site.auth where Site.covers(rule.prefix, normalized, scratch.pathBuffer) {
            if basicAuth == nil { basicAuth = BasicAuth() }
            if !basicAuth!.allows(bytes, headLength: head.headLength, file: rule.users) {
                var writer = fields.writer()
                rule.challenge.withUnsafeBytes { writer.append($0) }
                return error(.unauthorized, files, now: now, fieldsSoFar: writer)
            }
        }
        return nil
    }

    /// A name no site claims, with no default site: `unmatched_host`.
    private func unmatched(now: Int64) -> Response {
        switch unmatchedHost {
        case .notFound: return error(.notFound, nil, now: now)
        case .misdirected: return error(.misdirectedRequest, nil, now: now)
        case .close:
            dropConnection = true
            return error(.misdirectedRequest, nil, now: now)
        }
    }

    /// An error answer: the site's page for it when it has one, else the built-in body.
    private func error(_ status: HTTPStatus, _ files: StaticFiles?, now: Int64, fieldsSoFar: ByteWriter? = nil) -> Response {
        if let files { return files.error(status, now: now, fieldsSoFar: fieldsSoFar) }
        return StaticFiles.builtInError(status, fieldsSoFar ?? fields.writer())
    }

    /// An error answer for errors a protocol finds before there is a request to hand over (400, 408,
    /// 413): the default site's page, else the built-in body.
    func error(_ status: HTTPStatus, now: Int64) -> Response {
        error(status, defaultFiles, now: now)
    }

    /// The answer to plain HTTP sent to a TLS socket.
    func plainHTTPOnTLS() -> Response {
        let body: StaticString = "<html><body><h1>400 Bad Request</h1><p>This port speaks HTTPS: use an https:// address.</p></body></html>\n"
        var writer = fields.writer()
        writer.append("Content-Type: text/html; charset=utf-8\r\nContent-Length: ")
        writer.appendDecimal(Int64(body.utf8CodeUnitCount))
        writer.append("\r\n")
        return Response(.badRequest, fields: writer.written, body: .text(body))
    }

    // MARK: Redirects

    /// Whether a trusted proxy in front says the client's request came over HTTPS (`X-Forwarded-Proto:
    /// https`, or `Forwarded: proto=https`): a TLS-terminating proxy passes HTTPS on as plain HTTP, and
    /// redirecting that would loop.
    private func forwardedHTTPS(_ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, _ connection: Connection) -> Bool {
        guard trustedProxies.contains(connection.peer) else { return false }
        for value in RequestParser.fieldValues(bytes, headLength: head.headLength, name: "x-forwarded-proto") {
            // The first hop's: "https" or "https, http".
            var end = value.start
            while end < value.end && bytes[end] != UInt8(ascii: ",") && bytes[end] != UInt8(ascii: " ") { end += 1 }
            return RequestHandler.equalsLowercase(bytes, value.start, end, "https")
        }
        for value in RequestParser.fieldValues(bytes, headLength: head.headLength, name: "forwarded") {
            // The first element's proto= parameter.
            var index = value.start
            while index + 6 <= value.end && bytes[index] != UInt8(ascii: ",") {
                if RequestHandler.equalsLowercase(bytes, index, index + 6, "proto=") {
                    var start = index + 6
                    if start < value.end && bytes[start] == UInt8(ascii: "\"") { start += 1 }
                    return start + 5 <= value.end && RequestHandler.equalsLowercase(bytes, start, start + 5, "https")
                }
                index += 1
            }
            return false
        }
        return false
    }

    static func equalsLowercase(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ word: StaticString) -> Bool {
        guard end - start == word.utf8CodeUnitCount else { return false }
        for offset in 0..<word.utf8CodeUnitCount where bytes[start + offset] | 0x20 != word.utf8Start[offset] | 0x20 { return false }
        return true
    }

    /// HTTP to HTTPS (`redirect_http`): the same host (its port replaced by the TLS socket's) and the
    /// target as sent; 301 for GET and HEAD, 308 for other methods so they keep their method and body.
    func redirectToTLS(_ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, now: Int64) -> Response {
        var writer = fields.writer()
        writer.append("Location: https://")
        if !head.host.isEmpty {
            writer.append(bytes, ByteSpan(start: head.host.start, end: RequestHandler.hostEnd(bytes, head.host)))
        } else {
            writer.append("localhost")
        }
        if redirectPort != 443 && redirectPort != 0 {
            writer.append(byte: UInt8(ascii: ":"))
            writer.appendDecimal(Int64(redirectPort))
        }
        return finishRedirect(writer, head, bytes, now: now)
    }

    /// `canonical_host`: www.example.com to example.com (`apex`) or the other way (`www`), same scheme,
    /// port and target; nil when the Host is the canonical one already (or an address, or local).
    private func canonicalLocation(
        _ canonical: CanonicalHost, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, secure: Bool
    ) -> Response? {
        let host = head.host
        guard host.count > 4, bytes[host.start] != UInt8(ascii: "[") else { return nil }
        let hasWWW = RequestHandler.equalsLowercase(bytes, host.start, host.start + 4, "www.")
        var writer = fields.writer()
        writer.append(secure ? "Location: https://" : "Location: http://")
        switch canonical {
        case .apex:
            guard hasWWW else { return nil }
            writer.append(bytes, ByteSpan(start: host.start + 4, end: host.end))
        case .www:
            let end = RequestHandler.hostEnd(bytes, host)
            let last = bytes[end - 1]
            // Not for an IPv4 address or a name without a dot (localhost).
            guard !hasWWW, !(last >= UInt8(ascii: "0") && last <= UInt8(ascii: "9")),
                  memchr(bytes.baseAddress! + host.start, Int32(UInt8(ascii: ".")), end - host.start) != nil
            else { return nil }
            writer.append("www.")
            writer.append(bytes, host)
        }
        return finishRedirect(writer, head, bytes, now: 0)
    }

    /// The target after a Location's origin, then the status by method (301 for GET and HEAD, 308 else).
    private func finishRedirect(_ writer: ByteWriter, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, now: Int64) -> Response {
        var writer = writer
        let target = head.target
        if target.count > 0 && bytes[target.start] == UInt8(ascii: "/") {
            writer.append(bytes, target)
        } else {
            writer.append(byte: UInt8(ascii: "/"))
        }
        writer.append("\r\nContent-Length: 0\r\n")
        if writer.overflowed { return error(.uriTooLong, now: now) }
        let method = head.method
        return Response(method == .get || method == .head ? .movedPermanently : .permanentRedirect, fields: writer.written)
    }

    /// The first of the site's `redirects` the target's path matches (as sent: exact, or a prefix whose
    /// rest replaces the `*` in `to`), with the query kept unless the rule drops it.
    private func redirect(_ site: Site, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer) -> Response? {
        let target = head.target
        guard target.count > 0, bytes[target.start] == UInt8(ascii: "/") else { return nil }
        let pathEnd = Site.pathEnd(bytes, target)
        let pathLength = pathEnd - target.start
        for rule in site.redirects {
            if rule.prefix {
                guard pathLength >= rule.from.count, RequestHandler.same(bytes, target.start, rule.from) else { continue }
            } else {
                guard pathLength == rule.from.count, RequestHandler.same(bytes, target.start, rule.from) else { continue }
            }
            var writer = fields.writer()
            writer.append("Location: ")
            var hasQuery = false
            for byte in rule.to {
                if byte == UInt8(ascii: "*") && rule.prefix {
                    writer.append(bytes, ByteSpan(start: target.start + rule.from.count, end: pathEnd))
                } else {
                    if byte == UInt8(ascii: "?") { hasQuery = true }
                    writer.append(byte: byte)
                }
            }
            if rule.keepQuery && pathEnd < target.end - 1 {
                writer.append(byte: hasQuery ? UInt8(ascii: "&") : UInt8(ascii: "?"))
                writer.append(bytes, ByteSpan(start: pathEnd + 1, end: target.end))
            }
            writer.append("\r\nContent-Length: 0\r\n")
            if writer.overflowed { return error(.uriTooLong, now: 0) }
            return Response(rule.status, fields: writer.written)
        }
        return nil
    }

    private static func same(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ word: [UInt8]) -> Bool {
        for offset in 0..<word.count where bytes[start + offset] != word[offset] { return false }
        return true
    }

    /// Where a Host's name ends: before its port.
    static func hostEnd(_ bytes: UnsafeRawBufferPointer, _ host: ByteSpan) -> Int {
        SiteTable.nameEnd(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), host.start, host.end)
    }

    /// ACME HTTP-01 (RFC 8555 section 8.3): the key authorization the ACME process wrote for the token,
    /// whatever the Host and the site's rules (a CA's validator must reach it); nil when no such token is
    /// waiting (the site's own files answer, so a webroot for another ACME client still works). A token
    /// is base64url, so it cannot name anything but a file in the challenge directory.
    private func acmeChallenge(_ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer) -> Response? {
        guard let acmeTokenDirectories else { return nil }
        switch head.method {
        case .get, .head: break
        default: return nil
        }
        let start = head.target.start + "/.well-known/acme-challenge/".utf8.count
        var end = start
        while end < head.target.end && bytes[end] != UInt8(ascii: "?") { end += 1 }
        guard end > start, end - start <= 256 else { return nil }
        for index in start..<end where !AcmeCrypto.isBase64url(bytes[index]) { return nil }
        let token = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
        for directory in acmeTokenDirectories {
            let fd = open("\(directory)/\(token)", O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { continue }
            defer { closeDescriptor(fd) }
            if acmeBody.count < 1024 {
                acmeBody.deallocate()
                acmeBody = .allocate(byteCount: 1024, alignment: 1)
            }
            let count = read(fd, acmeBody.baseAddress, acmeBody.count)
            guard count > 0 else { continue }
            var writer = fields.writer()
            writer.append("Content-Type: application/octet-stream\r\nCache-Control: no-store\r\nContent-Length: ")
            writer.appendDecimal(Int64(count))
            writer.append("\r\n")
            return Response(.ok, fields: writer.written, body: .bytes(UnsafeRawBufferPointer(rebasing: acmeBody[..<count])))
        }
        return nil
    }

    /// A request for /.well-known/acme-challenge/...: ACME's HTTP-01 check must be answered over HTTP.
    static func isACMEChallenge(_ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let prefix: StaticString = "/.well-known/acme-challenge/"
        guard head.target.count > prefix.utf8CodeUnitCount else { return false }
        for offset in 0..<prefix.utf8CodeUnitCount where bytes[head.target.start + offset] != prefix.utf8Start[offset] { return false }
        return true
    }
}

extension Site {
    /// Whether a rule for `prefix` covers the request: its normalized path is under it; a path that did
    /// not normalize is covered by every rule (it is answered with an error, never with a file).
    static func covers(_ prefix: [UInt8], _ normalized: (length: Int, directory: Bool)?, _ path: UnsafePointer<UInt8>) -> Bool {
        guard let normalized else { return true }
        return RequestPath.isUnder(path, normalized.length, directory: normalized.directory, prefix)
    }
}
