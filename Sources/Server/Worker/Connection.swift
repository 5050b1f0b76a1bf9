/// One client connection inside a worker: its socket, its transport, where it is in its life (the
/// phase and that phase's deadline), the input not yet parsed and the output not yet sent. Nothing here
/// belongs to one request; what a request brings travels in its `Exchange`.
///
/// Owns its socket (closed only through `ConnectionDriver.close`) and, while a body is being sent, the
/// file it reads from (through `output`).
final class Connection {
    enum Phase {
        /// Between requests; the keep-alive deadline runs.
        case idle
        /// Part of a request head has arrived; the header deadline runs.
        case readingHead
        /// A response is waiting for the socket to drain; the send deadline runs.
        case writing
        /// Skipping the rest of a request body; the body deadline runs.
        case readingBody
        /// The TLS handshake is under way; the handshake deadline runs.
        case handshake
        /// Waiting for the PROXY protocol header a load balancer sends first; its own deadline runs.
        case proxyHeader
        /// Answered and half-closed: reading what the client still sends, so the close does not reset
        /// the connection before the client has read the response (RFC 9112 section 9.6).
        case lingering
    }

    /// The socket.
    let fd: Int32
    /// The client's address: the kernel's, or the one a trusted proxy's PROXY header gave.
    var peer: SocketAddress
    /// Which listening socket it came from (numbered as `ServerConfig.allListen`).
    let listenerID: UInt16
    /// Plain, or TLS once a session is made for a connection from a TLS socket.
    var transport = Transport.plain
    /// The HTTP/2 session once the connection speaks HTTP/2 (ALPN h2, or the preface on a plain
    /// socket with `http2.cleartext`); nil for HTTP/1.1.
    var http2: HTTP2Session?
    var phase = Phase.idle
    /// The epoll events the socket is registered for; 0 until it first has to wait (a request answered
    /// straight from the hand-off and closed never touches epoll).
    var watched: UInt32 = 0
    /// Monotonic milliseconds at which the current phase times out.
    var deadline: Int64
    /// Requests answered on this connection.
    var requests = 0
    /// Close once the response in flight is sent.
    var closeAfterResponse = false
    /// The client may still be sending (an error, an unread body): close by lingering, not at once.
    var lingerOnClose = false
    /// The request body being skipped, if one is.
    var body: BodyReader?
    /// Bytes received but not yet parsed (a partial head, or pipelined requests behind a blocked response).
    var stash: [UInt8] = []
    /// The response bytes still to send.
    var output = OutputQueue()
    /// Nothing is waiting to be sent: not in `output`, nor as TLS records the socket has not taken.
    var outputIsEmpty: Bool { output.isEmpty && !(transport.session?.hasPendingOutput ?? false) }
    /// Monotonic microseconds when the request being answered was parsed; 0 once it is counted.
    var startedAt: UInt64 = 0
    /// Closed: whoever still holds the object (a caller up the stack) must leave it alone.
    var closed = false
    /// On a TLS socket: the client's first byte has been looked at (a TLS record, not plain HTTP).
    var sawFirstByte = false
    /// Over TLS, the site whose certificates the handshake presented (0: the default certificate); -1
    /// on a plain connection. A request for a site with other certificates gets 421.
    var certificateSite: Int32 = -1
    /// The listener counted this connection against `limits.connections_per_ip`, so its close is
    /// reported with its address (`peer`: counted connections come from sockets without PROXY
    /// protocol, so it is the kernel's address the listener counted).
    var countedPerIP = false
    /// The listener process that admitted it: its close is reported there.
    var admittedBy: UInt8 = 0

    init(fd: Int32, peer: SocketAddress, listenerID: UInt16, deadline: Int64) {
        self.fd = fd
        self.peer = peer
        self.listenerID = listenerID
        self.deadline = deadline
    }

    /// How long each phase may last, in milliseconds: one deadline per phase, from the configuration.
    struct Timeouts {
        let idle: Int64
        let readingHead: Int64
        let readingBody: Int64
        let writing: Int64
        let handshake: Int64
        let proxyHeader: Int64
        /// Reading what a client sends after an error, before the close (not configurable: long
        /// enough for a client to read a response, short enough not to matter).
        static let lingering: Int64 = 2000

        init(_ config: ServerConfig) {
            idle = Int64(config.keepalive.timeoutMilliseconds)
            readingHead = Int64(config.timeouts.headerMilliseconds)
            readingBody = Int64(config.timeouts.bodyMilliseconds)
            writing = Int64(config.timeouts.sendMilliseconds)
            handshake = Int64(config.tls.handshakeMilliseconds)
            proxyHeader = Int64(config.proxy.headerTimeoutMilliseconds)
        }

        func limit(_ phase: Phase) -> Int64 {
            switch phase {
            case .idle: return idle
            case .readingHead: return readingHead
            case .readingBody: return readingBody
            case .writing: return writing
            case .handshake: return handshake
            case .proxyHeader: return proxyHeader
            case .lingering: return Timeouts.lingering
            }
        }
    }

    /// Enters `phase` (or starts it again): its deadline is its timeout from `now`.
    @inline(__always)
    func enter(_ phase: Phase, at now: Int64, _ timeouts: Timeouts) {
        self.phase = phase
        deadline = now + timeouts.limit(phase)
    }

    /// Whether the connection speaks TLS.
    var isSecure: Bool {
        if case .tls = transport { return true }
        return false
    }
}

/// What a connection still has to send, in order: bytes (a head, an in-memory body, a part's boundary,
/// a compressed chunk), then a range of a file, then further parts (multipart/byteranges), or chunks
/// of a body compressed as it goes. `OutputWriter` moves it to the socket.
struct OutputQueue {
    /// Bytes the socket did not take yet, from `pendingOffset`.
    var pending: [UInt8] = []
    var pendingOffset = 0
    /// The representation whose bytes `fileOffset..<fileEnd` go next (held so its fd stays open).
    var file: CachedFile?
    var fileOffset: Int64 = 0
    var fileEnd: Int64 = 0
    /// Further parts after the current range.
    var parts: [ResponsePart] = []
    /// A body being compressed as it is sent (chunked), after `pending`.
    var compression: CompressionStream?

    /// Nothing is waiting.
    var isEmpty: Bool { pendingOffset >= pending.count && file == nil && compression == nil }

    /// Drops everything (the connection is closing).
    mutating func clear() {
        pending = []
        pendingOffset = 0
        file = nil
        parts = []
        compression = nil
    }
}
