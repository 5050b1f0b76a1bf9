import CSystemShims
import Glibc

/// A worker process: one epoll loop serving many connections, HTTP/1.1 with keep-alive and pipelining,
/// static files with sendfile, an access log.
///
/// Fd slots: 3 channel to the manager, 4 release channel to the listener, 5 config memfd, 6 access log
/// (only when `--access-log` is given). The worker owns every connection the manager hands it.
public final class Worker {
    let id: Int
    let config: ServerConfig
    let limits: ParserLimits
    let poller: Poller
    let ticker: Ticker
    let signals: SignalReader
    let channel: Channel
    let releaseChannel: Channel
    var accessLogFD: Int32
    let rootFD: Int32

    var connections: [Connection?] = []
    var live = 0
    var requestsTotal: UInt64 = 0
    var closedTotal: UInt64 = 0
    var acceptedTotal: UInt32 = 0
    var releasedPending: UInt32 = 0
    var draining = false
    var drainDeadline: Int64 = 0
    var lastHeartbeat: Int64 = 0
    var now: Int64
    /// HTTP minor version of the request being answered (1.0 clients need `Connection: keep-alive`).
    var currentMinorVersion: UInt8 = 1
    var fileCache: FileCache
    /// Compressed bodies by file version, within `gzip.cache`; the deflate state and its input buffer
    /// are made on the first compression and reused.
    var compressedCache: CompressedCache
    var deflater: GzipDeflater?
    var deflateInput: UnsafeMutableRawBufferPointer?
    let gzip: ServerConfig.GzipSettings
    /// Per listener number: whether its connections start with a PROXY header.
    let proxyListeners: [Bool]
    /// `proxy.trusted`, and the header whose hops name the client behind them.
    let trustedProxies: Networks
    let forwardedHeader: ClientAddress.Header
    /// The client of the request being answered (the peer, or the hop a trusted proxy named).
    var currentClient = SocketAddress(family: 0, port: 0, bytes: (0, 0))
    var lastUntrustedWarning: Int64 = -1_000_000
    /// This worker's figures for /metrics (`Stats` slots), sent to the manager with each heartbeat.
    let stats: UnsafeMutablePointer<UInt64>
    let bodyLimits: BodyReader.Limits
    let rejectEncodedSlash: Bool
    /// Connections from listener numbers at or above this came in on a TLS socket.
    let plainListeners: Int
    let tlsSites: TLSSites?
    /// `Strict-Transport-Security: ...` CRLF, for TLS responses to hosts that are not local.
    let hstsLine: [UInt8]?
    /// Whether the request being answered named a local host (localhost, 127.x, ::1) or none.
    var currentHostIsLocal = true
    /// Where a TLS response is assembled (head and body in one record) and file bytes are read into.
    let tlsBuffer: UnsafeMutableRawPointer
    static let tlsBufferCapacity = 16_384 + Worker.headCapacity
    /// `error_pages`: status → URL path; the pages themselves are kept open in `errorPageFiles`.
    let errorPages: [UInt16: String]
    var errorPageFiles: [UInt16: CachedFile] = [:]
    /// Ranges of the request being answered, sorted and coalesced (capacity `limits.ranges`).
    let rangeBuffer: UnsafeMutablePointer<(Int64, Int64)>
    /// The multipart/byteranges boundary: random per worker, so no file's bytes can forge it.
    let boundary: UnsafeMutablePointer<UInt8>
    static let boundaryLength = 24

    let readBuffer: UnsafeMutableRawBufferPointer
    let headBuffer: UnsafeMutablePointer<UInt8>
    static let headCapacity = 4096
    let pathBuffer: UnsafeMutablePointer<UInt8>
    let pathCapacity: Int
    let logBuffer: UnsafeMutablePointer<UInt8>
    static let logCapacity = 128 * 1024
    static let logFlushAt = 64 * 1024
    var logCount = 0
    /// `Date:` header value and the access log's time, rebuilt when the second changes.
    var dateSecond: Int64 = -1
    let dateBytes: UnsafeMutablePointer<UInt8>
    let logTimeBytes: UnsafeMutablePointer<UInt8>
    /// `access_log_format: json`, and its time field (rebuilt with the others once a second).
    let jsonLog: Bool
    let isoTimeBytes: UnsafeMutablePointer<UInt8>
    static let isoTimeLength = 20
    static let logTimeLength = 26

    public init(id: Int, config: ServerConfig, hasAccessLog: Bool) throws {
        self.id = id
        self.config = config
        limits = ParserLimits(
            requestLine: config.limits.requestLine, headerBytes: config.limits.headerBytes,
            headerCount: config.limits.headerCount, headerField: config.limits.headerField)
        bodyLimits = BodyReader.Limits(chunkLine: 4096, trailerBytes: config.limits.headerBytes)
        poller = try Poller()
        ticker = try Ticker(intervalMilliseconds: 250)
        signals = try SignalReader([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGPIPE])
        channel = Channel(fd: 3)
        releaseChannel = Channel(fd: 4)
        accessLogFD = hasAccessLog ? 6 : -1
        rootFD = try syscall("open(root)") { open(config.root, cs_O_PATH | cs_O_DIRECTORY | cs_O_CLOEXEC) }
        readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        headBuffer = .allocate(capacity: Worker.headCapacity)
        pathCapacity = config.limits.requestLine + config.index.utf8.count + 8
        pathBuffer = .allocate(capacity: pathCapacity)
        logBuffer = .allocate(capacity: Worker.logCapacity)
        dateBytes = .allocate(capacity: HTTPDate.length)
        logTimeBytes = .allocate(capacity: Worker.logTimeLength)
        jsonLog = config.accessLogFormat == "json"
        isoTimeBytes = .allocate(capacity: Worker.isoTimeLength + 8)
        rejectEncodedSlash = config.encodedSlash == "reject"
        plainListeners = config.listen.count
        if !config.tls.listen.isEmpty && !config.tls.defaultPairs.isEmpty {
            do {
                tlsSites = try TLSSites(settings: config.tls)
            } catch {
                throw SystemError(call: "TLS: \(error.description)", errno: EINVAL)
            }
        } else {
            tlsSites = nil
        }
        tlsBuffer = .allocate(byteCount: Worker.tlsBufferCapacity, alignment: 16)
        hstsLine = config.tls.hsts.map { Array("Strict-Transport-Security: \($0)\r\n".utf8) }
        BeneathRoot.symlinks = BeneathRoot.SymlinkPolicy(rawValue: config.symlinks) ?? .follow
        var pages: [UInt16: String] = [:]
        for (status, path) in config.errorPages { if let code = UInt16(status) { pages[code] = path } }
        errorPages = pages
        rangeBuffer = .allocate(capacity: config.limits.ranges)
        boundary = .allocate(capacity: Worker.boundaryLength)
        var random = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &random) { _ = getrandom($0.baseAddress, $0.count, 0) }
        let hex: StaticString = "0123456789abcdef"
        for index in 0..<Worker.boundaryLength {
            let word = index < 16 ? random.0 >> UInt64(index * 4) : random.1 >> UInt64((index - 16) * 4)
            boundary[index] = hex.utf8Start[Int(word & 15)]
        }
        now = monotonicMilliseconds()
        fileCache = FileCache(
            capacity: config.fileCache.entries, validityMilliseconds: config.fileCache.validMilliseconds,
            inlineLimit: config.fileCache.inlineMax, sidecars: config.gzip.precompressed)
        gzip = config.gzip
        stats = .allocate(capacity: Stats.count)
        stats.initialize(repeating: 0, count: Stats.count)
        proxyListeners = config.allListen.indices.map { config.proxyProtocol(listener: $0) }
        trustedProxies = Networks(config.proxy.trusted) ?? Networks()
        forwardedHeader = ClientAddress.Header(rawValue: config.proxy.forwardedHeader) ?? .none
        compressedCache = CompressedCache(budget: config.gzip.cacheBytes)
        Socket.setNonBlocking(3)
        Socket.setNonBlocking(4)
        try poller.add(channel.fd, events: Poller.readable)
        try poller.add(ticker.fd, events: Poller.readable)
        try poller.add(signals.fd, events: Poller.readable)
        refreshDate()
    }

    /// Runs until the worker has drained; returns the process exit status.
    public func run() -> Int32 {
        log.debug("worker started", metadata: ["id": "\(id)"])
        sendHeartbeat()
        while true {
            // The clock as of this wake-up (a coarse vDSO read): deadlines and the file cache's
            // `valid` window are measured from it, not from the last 250 ms tick, which could make a
            // changed file be served from the cache for up to `valid` + 250 ms.
            poller.wait(timeoutMilliseconds: 1000, woke: { now = monotonicMilliseconds() }) { fd, events in
                if fd == channel.fd {
                    handleChannel()
                } else if fd == ticker.fd {
                    ticker.drain()
                    tick()
                } else if fd == signals.fd {
                    for signal in signals.pending() where signal == SIGTERM {
                        log.info("SIGTERM: draining")
                        startDrain(deadline: config.timeouts.shutdownMilliseconds)
                    }
                } else if let connection = connection(for: fd) {
                    if events & Poller.writable != 0 || connection.phase == .writing {
                        if events & (Poller.writable | Poller.hangup) != 0 { onWritable(connection) }
                    } else {
                        onReadable(connection)
                    }
                }
            }
            endOfIteration()
            if draining && (live == 0 || now >= drainDeadline) { break }
        }
        for case let connection? in connections { close(connection) }
        endOfIteration()
        log.debug("worker exiting", metadata: ["id": "\(id)", "requests": "\(requestsTotal)"])
        return 0
    }

    @inline(__always)
    func connection(for fd: Int32) -> Connection? {
        Int(fd) < connections.count ? connections[Int(fd)] : nil
    }

    // MARK: Manager channel

    func handleChannel() {
        let open = channel.receiveAll(from: "manager") { message, fds in
            switch message {
            case .connections(let entries):
                for (entry, fd) in zip(entries, fds) { adopt(fd: fd, info: entry) }
            case .shutdown(let deadline):
                startDrain(deadline: Int(deadline))
            case .ticketKeys(let keys):
                keys.withUnsafeBufferPointer { cs_set_ticket_keys($0.baseAddress, Int32(keys.count / Message.ticketKeySize)) }
            case .reopenLogs(let access, let error):
                let errorLog = adoptReopenedLogs(fds, access: access, error: error, accessLog: &accessLogFD)
                if errorLog >= 0 { closeDescriptor(errorLog) }
            default:
                Channel.reject(message, fds: fds, from: "manager")
            }
        }
        if !open {
            poller.remove(channel.fd)
            if !draining {
                log.warning("manager is gone: draining")
                startDrain(deadline: config.timeouts.shutdownMilliseconds)
            }
        }
    }

    func adopt(fd: Int32, info: ConnectionInfo) {
        acceptedTotal &+= 1
        let connection = Connection(
            fd: fd, peer: info.peer, listenerID: info.listenerID,
            deadline: now + Int64(config.keepalive.timeoutMilliseconds))
        if draining { connection.closeAfterResponse = true }
        if Int(fd) >= connections.count {
            connections.append(contentsOf: repeatElement(nil, count: Int(fd) + 64 - connections.count))
        }
        connections[Int(fd)] = connection
        live += 1
        if Int(info.listenerID) < proxyListeners.count && proxyListeners[Int(info.listenerID)] {
            // Only a trusted load balancer may say who the client is; anyone else is cut off.
            guard trustedProxies.contains(info.peer) else {
                if now - lastUntrustedWarning >= 1000 {
                    lastUntrustedWarning = now
                    log.warning("closed a connection from \(info.peer.hostText) on a PROXY protocol socket: not in proxy.trusted")
                }
                return close(connection)
            }
            connection.phase = .proxyHeader
            connection.deadline = now + Int64(config.proxy.headerTimeoutMilliseconds)
            return readProxyHeader(connection)
        }
        begin(connection)
    }

    /// Starts a connection's protocol: the TLS handshake on a TLS socket, else the request.
    func begin(_ connection: Connection) {
        if Int(connection.listenerID) >= plainListeners, let context = tlsSites?.defaultContext {
            guard let session = TLSSession(context: context, fd: connection.fd) else {
                log.error("cannot start a TLS session: \(TLSContext.lastError("SSL_new"))")
                return close(connection)
            }
            connection.tls = session
            connection.phase = .handshake
            connection.deadline = now + Int64(config.tls.handshakeMilliseconds)
            continueHandshake(connection)
        } else {
            // The client usually sent its request before the hand-off (always, with defer_accept): read
            // and answer it now. The socket joins the epoll set only if it then has to wait for more.
            onReadable(connection)
        }
        if connections[Int(connection.fd)] === connection && connection.watched == 0 {
            watch(connection, events: Poller.readable)
        }
    }

    /// The PROXY header: peeked, so that nothing after it is taken from the socket; once whole, read off
    /// exactly (the request or TLS ClientHello behind it stays for the next reader). A partial header is
    /// taken off and kept in the stash (every byte of it belongs to the header), so a level-triggered
    /// epoll does not wake again for bytes already seen.
    func readProxyHeader(_ connection: Connection) {
        let have = connection.stash.count
        let buffer = readBuffer.baseAddress!
        if have > 0 { connection.stash.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: have) } }
        var count = 0
        while true {
            count = recv(connection.fd, buffer + have, ProxyProtocol.maximumLength - have, cs_MSG_PEEK)
            if count < 0 && errno == EINTR { continue }
            break
        }
        if count == 0 || (count < 0 && errno != EAGAIN) { return close(connection) }
        if count < 0 { return watch(connection, events: Poller.readable) }
        let total = have + count
        switch ProxyProtocol.parse(UnsafeRawBufferPointer(start: buffer, count: total)) {
        case .invalid:
            log.debug("closed a connection from \(connection.peer.hostText): no valid PROXY header")
            close(connection)
        case .incomplete:
            guard total < ProxyProtocol.maximumLength, take(connection, buffer + have, count) else { return close(connection) }
            connection.stash = Array(UnsafeRawBufferPointer(start: buffer, count: total))
            watch(connection, events: Poller.readable)
        case .complete(let length, let source):
            guard take(connection, buffer + have, length - have) else { return close(connection) }
            connection.stash = []
            if let source { connection.peer = source }
            connection.phase = .idle
            connection.deadline = now + Int64(config.keepalive.timeoutMilliseconds)
            begin(connection)
        }
    }

    /// Reads exactly `count` bytes the socket is known to hold (they were peeked).
    func take(_ connection: Connection, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Bool {
        var done = 0
        while done < count {
            let read = recv(connection.fd, buffer + done, count - done, 0)
            if read < 0 && errno == EINTR { continue }
            if read <= 0 { return false }
            done += read
        }
        return true
    }

    /// Registers the socket for `events`, or changes its registration; a socket that cannot be
    /// watched is closed, since nothing would ever wake it again.
    func watch(_ connection: Connection, events: UInt32) {
        guard connection.watched != events else { return }
        do {
            if connection.watched == 0 {
                try poller.add(connection.fd, events: events)
            } else {
                try poller.modify(connection.fd, events: events)
            }
            connection.watched = events
        } catch {
            log.error("cannot watch a connection: \(error)")
            close(connection)
        }
    }

    func startDrain(deadline: Int) {
        if draining { return }
        draining = true
        drainDeadline = now + Int64(deadline)
        let keepalive = Int64(config.keepalive.timeoutMilliseconds)
        for case let connection? in connections {
            connection.closeAfterResponse = true
            guard connection.phase == .idle else { continue }
            // An idle keep-alive connection closes now, unless it was busy within the last second: a
            // client in the middle of a run of requests may have the next one on the wire, which a
            // close would lose. Those get `Connection: close` on that next response, or close when the
            // second is up (the tick closes idle connections past their deadline).
            let lastActive = connection.deadline - keepalive
            if now - lastActive >= Worker.drainIdleGrace {
                close(connection)
            } else {
                connection.deadline = lastActive + Worker.drainIdleGrace
            }
        }
    }

    /// How recently an idle connection must have been busy to get a last request during a drain.
    static let drainIdleGrace: Int64 = 1000

    // MARK: Timers, heartbeats, batching

    func refreshDate() {
        var clock = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &clock)
        let second = Int64(clock.tv_sec)
        if second == dateSecond { return }
        dateSecond = second
        var writer = ByteWriter(base: dateBytes, capacity: HTTPDate.length)
        HTTPDate.write(second, into: &writer)
        var logWriter = ByteWriter(base: logTimeBytes, capacity: Worker.logTimeLength)
        HTTPDate.writeLogTime(second, into: &logWriter)
        if jsonLog {
            var isoWriter = ByteWriter(base: isoTimeBytes, capacity: Worker.isoTimeLength + 8)
            HTTPDate.writeISOTime(second, into: &isoWriter)
        }
    }

    /// Every 250 ms (the ticker); `now` was read at this wake-up.
    func tick() {
        refreshDate()
        sendReleases()
        if now - lastHeartbeat >= Int64(config.supervisor.heartbeatIntervalMilliseconds) { sendHeartbeat() }
        for case let connection? in connections where connection.deadline <= now {
            switch connection.phase {
            case .idle:
                close(connection)
            case .readingHead:
                connection.stash = []
                if !draining {
                    sendError(connection, .requestTimeout)
                    connection.lingerOnClose = true
                }
                if !connection.hasPendingOutput { finish(connection) }
            case .writing, .readingBody, .lingering, .handshake, .proxyHeader:
                close(connection)
            }
        }
    }

    func sendHeartbeat() {
        lastHeartbeat = now
        let beat = Heartbeat(
            liveConnections: UInt32(live), acceptedTotal: acceptedTotal, requestsTotal: requestsTotal,
            closedTotal: closedTotal)
        _ = try? channel.send(.heartbeat(beat))
        // The gauges are counted now: what each connection is doing.
        var reading: UInt64 = 0
        var writing: UInt64 = 0
        var waiting: UInt64 = 0
        for case let connection? in connections {
            switch connection.phase {
            case .idle: waiting += 1
            case .writing: writing += 1
            case .readingHead, .readingBody, .handshake, .proxyHeader, .lingering: reading += 1
            }
        }
        stats[Stats.reading] = reading
        stats[Stats.writing] = writing
        stats[Stats.waiting] = waiting
        stats[Stats.handled] = UInt64(acceptedTotal)
        _ = try? channel.send(.stats(Stats(values: Array(UnsafeBufferPointer(start: stats, count: Stats.count)))))
    }

    /// Release notices go out in batches of 32, and at every tick (250ms) for the rest: the listener
    /// needs them only to admit new connections near max_connections, and each one costs a syscall here
    /// and a wake-up there.
    func endOfIteration() {
        if releasedPending >= 32 || draining && releasedPending > 0 { sendReleases() }
        flushLog()
    }

    func sendReleases() {
        guard releasedPending > 0 else { return }
        if (try? releaseChannel.send(.released(count: releasedPending))) == true { releasedPending = 0 }
    }

    func flushLog() {
        guard logCount > 0 else { return }
        if accessLogFD >= 0 {
            // Whole lines in one write to an O_APPEND file: lines from all workers never tear.
            var offset = 0
            while offset < logCount {
                let written = write(accessLogFD, logBuffer + offset, logCount - offset)
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { break }
                offset += written
            }
        }
        logCount = 0
    }

    // MARK: Connections

    /// Closes a connection once; later calls for the same connection do nothing.
    func close(_ connection: Connection) {
        guard connections[Int(connection.fd)] === connection else { return }
        // No EPOLL_CTL_DEL: once the listener and manager have closed their copies, this close is the
        // last reference and the kernel drops the socket from the epoll set itself. Under load the
        // worker can answer a connection before their `close_range` has run (see `finish`); a
        // registration then lasts those few microseconds and can at most wake the loop for whatever
        // connection now has this number: a read that finds nothing (EAGAIN), and nothing else, since
        // hang-ups are acted on only through reads and writes.
        if let tls = connection.tls {
            if connection.phase != .lingering { tls.notifyClose() }
            connection.tls = nil
        }
        closeDescriptor(connection.fd)
        connection.file = nil
        connection.gzip = nil
        connections[Int(connection.fd)] = nil
        live -= 1
        closedTotal += 1
        releasedPending += 1
    }

    /// TLS handshake steps as the socket allows; once done, the request that usually follows at once.
    func continueHandshake(_ connection: Connection) {
        guard let tls = connection.tls else { return }
        switch tls.handshake() {
        case .done:
            connection.phase = .idle
            connection.deadline = now + Int64(config.keepalive.timeoutMilliseconds)
            onReadable(connection)
            if connections[Int(connection.fd)] === connection && connection.watched == 0 {
                watch(connection, events: Poller.readable)
            }
        case .wantRead:
            watch(connection, events: Poller.readable)
        case .wantWrite:
            watch(connection, events: Poller.writable)
        case .failed:
            close(connection)
        }
    }

    /// read(2), or SSL_read on a TLS connection.
    @inline(__always)
    func receive(_ connection: Connection, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        if let tls = connection.tls { return tls.read(buffer, count) }
        return Glibc.read(connection.fd, buffer, count)
    }

    func onReadable(_ connection: Connection) {
        if connection.phase == .lingering { return drainLingering(connection) }
        if connection.phase == .proxyHeader { return readProxyHeader(connection) }
        if connection.phase == .handshake { return continueHandshake(connection) }
        var length = 0
        if !connection.stash.isEmpty {
            length = connection.stash.count
            connection.stash.withUnsafeBytes { readBuffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: length) }
            connection.stash = []
        }
        // A TLS read returns one record at a time: read on while records come, so what OpenSSL or the
        // socket holds is not left waiting for an event that will not come.
        while length < readBuffer.count {
            let count = receive(connection, readBuffer.baseAddress! + length, readBuffer.count - length)
            if count > 0 {
                length += count
                if connection.tls == nil { break }
                continue
            } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                // The end of the stream, or an error: answer what came before it, if anything.
                if length == 0 { return close(connection) }
            } else if length == 0 {
                return
            }
            break
        }
        process(connection, length: length)
        // A full buffer can leave part of a TLS record inside OpenSSL, where epoll cannot see it.
        if let tls = connection.tls, tls.hasBufferedInput, connections[Int(connection.fd)] === connection,
           !connection.hasPendingOutput, connection.phase != .lingering {
            onReadable(connection)
        }
    }

    /// Parses and answers the requests in `readBuffer[0..<length]`, in order, skipping their bodies.
    ///
    /// Pipelining is bounded by the read buffer: while a response waits for the socket, at most what one
    /// read brought in is kept (the stash) and nothing more is read from that connection.
    func process(_ connection: Connection, length: Int) {
        var offset = 0
        // Parsed in place and lent to respond(): the head is never copied.
        var head = RequestHead()
        while offset < length {
            if connection.body != nil {
                let result = connection.body!.consume(UnsafeRawBufferPointer(rebasing: readBuffer[offset..<length]))
                switch result {
                case .needMore:
                    offset = length
                case .done(let consumed):
                    offset += consumed
                    connection.body = nil
                case .invalid, .tooLarge:
                    // The response went out already; the framing is lost, so the connection ends.
                    connection.body = nil
                    connection.lingerOnClose = true
                    return finish(connection)
                }
                continue
            }
            let bytes = UnsafeRawBufferPointer(rebasing: readBuffer[offset..<length])
            switch RequestParser.parse(bytes, limits: limits, into: &head) {
            case .incomplete:
                connection.stash = Array(bytes)
                if connection.phase != .readingHead {
                    connection.phase = .readingHead
                    connection.deadline = now + Int64(config.timeouts.headerMilliseconds)
                }
                return
            case .invalid(let status):
                requestsTotal += 1
                currentMinorVersion = 1
                logUnparsed(connection, bytes: bytes, status: status, bodyBytes: Int64(status.errorBody.utf8CodeUnitCount))
                sendError(connection, status)
                if !connection.hasPendingOutput { finish(connection) }
                return
            case .complete:
                offset += head.headLength
                // The next request's head gets its own header deadline, from its own first byte.
                connection.phase = .idle
                respond(connection, head, bytes)
                if connections[Int(connection.fd)] !== connection { return }  // closed while answering
                if head.hasBody {
                    if connection.closeAfterResponse {
                        connection.lingerOnClose = true
                    } else {
                        connection.body = head.chunked
                            ? BodyReader(chunkedWithMaxContent: Int64(config.limits.bodyBytes), limits: bodyLimits)
                            : BodyReader(contentLength: head.contentLength)
                    }
                }
                if connection.hasPendingOutput {
                    if !connection.closeAfterResponse && offset < length {
                        connection.stash = Array(UnsafeRawBufferPointer(rebasing: readBuffer[offset..<length]))
                    }
                    return
                }
                if connection.closeAfterResponse {
                    if offset < length { connection.lingerOnClose = true }
                    return finish(connection)
                }
            }
        }
        if connection.body != nil {
            connection.phase = .readingBody
            connection.deadline = now + Int64(config.timeouts.bodyMilliseconds)
        } else {
            connection.phase = .idle
            connection.deadline = now + Int64(config.keepalive.timeoutMilliseconds)
        }
    }

    /// Ends a connection whose last response has been sent: at once, or, when the client may still be
    /// sending, by half-closing and reading what arrives for up to `lingerMilliseconds`. Closing a
    /// socket with unread input makes the kernel send a reset, which can destroy the response before the
    /// client has read it.
    func finish(_ connection: Connection) {
        guard connection.lingerOnClose else {
            // The FIN goes now, carrying the response's last bytes (held back by MSG_MORE), whoever
            // holds the socket's last reference: when the worker answers a connection before the
            // listener or manager has closed its copy, `close` alone would leave response and FIN
            // waiting for that copy to go, and the client might close first and keep the TIME_WAIT.
            if connection.tls == nil { shutdown(connection.fd, Int32(SHUT_WR)) }
            return close(connection)
        }
        connection.lingerOnClose = false
        connection.stash = []
        connection.body = nil
        connection.tls?.notifyClose()
        connection.phase = .lingering
        connection.deadline = now + Worker.lingerMilliseconds
        shutdown(connection.fd, Int32(SHUT_WR))
        watch(connection, events: Poller.readable)
    }

    static let lingerMilliseconds: Int64 = 2000

    /// Reads and drops what a lingering client sends; closes at its end of stream or on an error.
    func drainLingering(_ connection: Connection) {
        while true {
            let count = receive(connection, readBuffer.baseAddress!, readBuffer.count)
            if count > 0 { continue }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EAGAIN { return }
            return close(connection)
        }
    }

    func onWritable(_ connection: Connection) {
        if connection.phase == .handshake { return continueHandshake(connection) }
        guard continueSending(connection) else { return }
        if connection.hasPendingOutput {
            connection.deadline = now + Int64(config.timeouts.sendMilliseconds)
            return
        }
        recordDuration(connection)
        if connection.closeAfterResponse { return finish(connection) }
        watch(connection, events: Poller.readable)
        guard connections[Int(connection.fd)] === connection else { return }
        connection.phase = .idle
        connection.deadline = now + Int64(config.keepalive.timeoutMilliseconds)
        if !connection.stash.isEmpty {
            let length = connection.stash.count
            connection.stash.withUnsafeBytes { readBuffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: length) }
            connection.stash = []
            process(connection, length: length)
        }
    }
}
