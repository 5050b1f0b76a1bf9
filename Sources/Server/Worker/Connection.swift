/// One part of a multipart response: its boundary and headers, then bytes `start..<end` of the file.
struct ResponsePart {
    var prefix: [UInt8]
    var start: Int64
    var end: Int64
}

/// One client connection inside a worker. Owns its socket and, while a body is being sent, the file.
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

    /// The socket; the worker closes it through `Worker.close(_:)` only.
    let fd: Int32
    /// The client's address: the kernel's, or the one a trusted proxy's PROXY header gave.
    var peer: SocketAddress
    let listenerID: UInt16
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
    /// Write `100 Continue` ahead of the next response head (the client waits for it to send its body).
    var sendContinue = false
    /// The request body being skipped, if one is.
    var body: BodyReader?
    /// The TLS state of a connection that came in on a TLS socket; nil for plain HTTP.
    var tls: TLSSession?
    /// Bytes received but not yet parsed (a partial head, or pipelined requests behind a blocked response).
    var stash: [UInt8] = []
    /// Response head bytes the socket did not take yet.
    var pendingOutput: [UInt8] = []
    var pendingOffset = 0
    /// The file whose bytes are being sent with sendfile; held so its fd stays open until the end.
    var file: CachedFile?
    var fileOffset: Int64 = 0
    var fileEnd: Int64 = 0
    /// Further parts after the file range (multipart/byteranges), each sent in turn.
    var parts: [ResponsePart] = []
    /// Monotonic microseconds when the request being answered was parsed; 0 once it is counted.
    var startedAt: UInt64 = 0
    /// A body being compressed as it is sent (chunked), after `pendingOutput`.
    var gzip: GzipStream?

    init(fd: Int32, peer: SocketAddress, listenerID: UInt16, deadline: Int64) {
        self.fd = fd
        self.peer = peer
        self.listenerID = listenerID
        self.deadline = deadline
    }

    /// Whether output is still waiting for the socket.
    var hasPendingOutput: Bool { pendingOffset < pendingOutput.count || file != nil || gzip != nil }
}
