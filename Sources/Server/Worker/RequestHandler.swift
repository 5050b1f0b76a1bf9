/// What the server answers to a request, whichever protocol brought it: the HTTP-to-HTTPS redirect on
/// plain sockets, the methods it does not serve, then static files. A rule that applies to every
/// protocol is added here (or in what it calls), never in a protocol's code.
final class RequestHandler {
    let files: StaticFiles
    let fields: FieldBuffer
    /// `tls.redirect_http`, and the port of the TLS socket to redirect to (443 is left out of the URL).
    let redirectHTTP: Bool
    let redirectPort: Int

    init(config: ServerConfig, fields: FieldBuffer) throws {
        self.fields = fields
        files = try StaticFiles(config: config, fields: fields)
        redirectHTTP = config.tls.redirectHTTP
        redirectPort = config.tls.redirectPort
    }

    /// The answer to a parsed request.
    func respond(_ exchange: Exchange, _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, now: Int64) -> Response {
        // Nested, not `&&`: an autoclosure that takes the head would copy all of it.
        if !exchange.secure && redirectHTTP {
            if !RequestHandler.isACMEChallenge(head, bytes) { return redirectToTLS(head, bytes, now: now) }
        }
        switch head.method {
        case .get, .head:
            return files.respond(head, bytes, now: now)
        case .options:
            var writer = fields.writer()
            writer.append("Allow: GET, HEAD, OPTIONS\r\nContent-Length: 0\r\n")
            return Response(.noContent, fields: writer.written)
        default:
            var writer = fields.writer()
            writer.append("Allow: GET, HEAD, OPTIONS\r\n")
            return files.error(.methodNotAllowed, now: now, fieldsSoFar: writer)
        }
    }

    /// An error answer (the configured page, else the built-in body), for errors a protocol finds
    /// before there is a request to hand over: 400, 408, 413.
    func error(_ status: HTTPStatus, now: Int64) -> Response {
        files.error(status, now: now)
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

    /// HTTP to HTTPS (`tls.redirect_http`): the same host (its port replaced by the TLS socket's) and the
    /// target as sent; 301 for GET and HEAD, 308 for other methods so they keep their method and body.
    func redirectToTLS(_ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, now: Int64) -> Response {
        let method = head.method
        let status: HTTPStatus = method == .get || method == .head ? .movedPermanently : .permanentRedirect
        var writer = fields.writer()
        writer.append("Location: https://")
        if !head.host.isEmpty {
            // Drop the port: from the last ":" when it is not inside an IPv6 literal's brackets.
            var hostEnd = head.host.end
            var index = head.host.end - 1
            while index > head.host.start && bytes[index] != UInt8(ascii: ":") && bytes[index] != UInt8(ascii: "]") { index -= 1 }
            if bytes[index] == UInt8(ascii: ":") { hostEnd = index }
            writer.append(bytes, ByteSpan(start: head.host.start, end: hostEnd))
        } else {
            writer.append("localhost")
        }
        if redirectPort != 443 && redirectPort != 0 {
            writer.append(byte: UInt8(ascii: ":"))
            writer.appendDecimal(Int64(redirectPort))
        }
        let target = head.target
        if target.count > 0 && bytes[target.start] == UInt8(ascii: "/") {
            writer.append(bytes, target)
        } else {
            writer.append(byte: UInt8(ascii: "/"))
        }
        writer.append("\r\nContent-Length: 0\r\n")
        if writer.overflowed { return files.error(.uriTooLong, now: now) }
        return Response(status, fields: writer.written)
    }

    /// A request for /.well-known/acme-challenge/...: ACME's HTTP-01 check must be answered over HTTP.
    static func isACMEChallenge(_ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let prefix: StaticString = "/.well-known/acme-challenge/"
        guard head.target.count > prefix.utf8CodeUnitCount else { return false }
        for offset in 0..<prefix.utf8CodeUnitCount where bytes[head.target.start + offset] != prefix.utf8Start[offset] { return false }
        return true
    }
}
