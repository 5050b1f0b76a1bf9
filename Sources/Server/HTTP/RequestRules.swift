/// What every protocol holds a request to, from the configuration: the head's limits (each with its
/// status), the body limit, the requests one connection may carry, and whom to believe about the client
/// behind a proxy. One value, read by the HTTP/1.1 and HTTP/2 codecs alike.
struct RequestRules {
    let limits: ParserLimits
    /// `limits.body`: a larger Content-Length is refused with 413 before any of it is read; 0 no limit.
    let bodyLimit: Int64
    /// `keepalive.requests`: requests (HTTP/1.1) or streams (HTTP/2) on one connection.
    let keepaliveRequests: Int
    /// `proxy.trusted`, and the header whose hops name the client behind them.
    let trustedProxies: Networks
    let forwardedHeader: ClientAddress.Header

    init(_ config: ServerConfig) {
        limits = ParserLimits(
            requestLine: config.limits.requestLine, headerBytes: config.limits.headerBytes,
            headerCount: config.limits.headerCount, headerField: config.limits.headerField)
        bodyLimit = Int64(config.limits.bodyBytes)
        keepaliveRequests = config.keepalive.requests
        trustedProxies = Networks(config.proxy.trusted) ?? Networks()
        forwardedHeader = config.proxy.forwardedHeader
    }

    /// Whether a body of `length` bytes is over `limits.body` (413).
    @inline(__always)
    func bodyTooLarge(_ length: Int64) -> Bool { bodyLimit > 0 && length > bodyLimit }

    /// A parsed request's exchange on `connection` (see `Exchange.init(_:_:connection:...)`).
    @inline(__always)
    func exchange(_ head: borrowing RequestHead, _ bytes: UnsafeRawBufferPointer, _ connection: Connection, checkHost: Bool) -> Exchange {
        Exchange(head, bytes, connection: connection, trusted: trustedProxies, forwardedHeader: forwardedHeader, checkHost: checkHost)
    }
}
