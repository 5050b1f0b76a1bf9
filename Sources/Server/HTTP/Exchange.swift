/// One request's own facts, made by the protocol layer that read the request and passed explicitly to
/// everything that answers it: the handler, the head encoder, the access log. Nothing about a request
/// lives anywhere else, so a response written later (from the timer, or for bytes that did not parse)
/// cannot pick up another client's facts.
struct Exchange {
    /// HTTP minor version: 1.0 clients need `Connection: keep-alive` to keep the connection.
    var minorVersion: UInt8
    /// HEAD answers carry GET's fields and no body.
    var method: HTTPMethod
    /// The connection speaks TLS (HSTS may apply).
    var secure: Bool
    /// The client: the connection's peer, or the hop a trusted proxy named.
    var client: SocketAddress
    /// The Host named this machine (localhost, *.localhost, 127.x, ::1) or was not known: no HSTS,
    /// which a browser would otherwise pin for every local project.
    var hostIsLocal: Bool
    /// The client waits for `100 Continue` before it sends the body (HTTP/1.1, RFC 9110 section 10.1.1).
    var expectsContinue = false

    var isHead: Bool { method == .head }

    /// For a response to bytes that never became a request (400) or to a head that never arrived
    /// (408): HTTP/1.1, the peer as the client, no Host known (so no HSTS), a body like GET's.
    static func unparsed(peer: SocketAddress, secure: Bool) -> Exchange {
        Exchange(minorVersion: 1, method: .get, secure: secure, client: peer, hostIsLocal: true)
    }

    /// localhost, *.localhost, 127.x.y.z or [::1], with or without a port; an absent Host counts as local.
    /// Bytes only: this runs for every TLS request when HSTS is on.
    static func isLocalHost(_ bytes: UnsafeRawBufferPointer, _ host: ByteSpan) -> Bool {
        guard !host.isEmpty else { return true }
        let start = host.start
        if bytes[start] == UInt8(ascii: "[") {
            return host.count >= 5 && bytes[start + 1] == UInt8(ascii: ":") && bytes[start + 2] == UInt8(ascii: ":")
                && bytes[start + 3] == UInt8(ascii: "1") && bytes[start + 4] == UInt8(ascii: "]")
        }
        var end = host.end
        var index = end - 1
        while index > start && bytes[index] != UInt8(ascii: ":") { index -= 1 }
        if bytes[index] == UInt8(ascii: ":") { end = index }
        let length = end - start
        if length >= 4 && bytes[start] == UInt8(ascii: "1") && bytes[start + 1] == UInt8(ascii: "2")
            && bytes[start + 2] == UInt8(ascii: "7") && bytes[start + 3] == UInt8(ascii: ".") {
            return true
        }
        let word: StaticString = "localhost"
        guard length >= 9, length == 9 || bytes[end - 10] == UInt8(ascii: ".") else { return false }
        for offset in 0..<9 where bytes[end - 9 + offset] | 0x20 != word.utf8Start[offset] { return false }
        return true
    }
}

extension Exchange {
    /// A parsed request's exchange on `connection`: the client (the peer, or the hop a trusted proxy
    /// names in `forwardedHeader`), and whether its Host is local (looked at only when HSTS is on:
    /// `checkHost`).
    @inline(__always)
    init(
        _ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, connection: Connection, trusted: Networks,
        forwardedHeader: ClientAddress.Header, checkHost: Bool
    ) {
        self.init(minorVersion: head.minorVersion, method: head.method, secure: connection.isSecure, client: connection.peer, hostIsLocal: true)
        if head.forwardedFor.count | head.forwarded.count != 0 && forwardedHeader != .none {
            client = ClientAddress.resolve(bytes, head, peer: connection.peer, trusted: trusted, header: forwardedHeader)
        }
        if checkHost && secure { hostIsLocal = Exchange.isLocalHost(bytes, head.host) }
    }
}
