import CSystemShims
import Glibc

/// Every connection a worker holds, through its life: adoption from the manager, the PROXY header, the
/// TLS handshake, reading (handing the bytes to the protocol), waiting for the socket to drain, phase
/// deadlines, the drain at shutdown, and the close (at once, or lingering so the client can read an
/// error before the reset a close with unread input would send).
///
/// Owns the connections (a table by fd: the socket number is the epoll token) and the read buffer.
final class ConnectionDriver {
    let poller: Poller
    let output: OutputWriter
    let stats: UnsafeMutablePointer<UInt64>
    /// HTTP/1.1, the protocol every connection speaks once its handshake is done, unless it speaks
    /// HTTP/2: ALPN chose h2, or (`http2.cleartext`) a plain connection opened with the preface.
    let http1: HTTP1Codec
    let http2: HTTP2Codec
    let http2Cleartext: Bool
    private(set) var connections: [Connection?] = []
    /// Open connections, and the running counts the heartbeat reports.
    private(set) var live = 0
    private(set) var acceptedTotal: UInt32 = 0
    private(set) var closedTotal: UInt64 = 0
    /// Closes not yet reported to the listeners (the worker sends them in batches), in all and per
    /// listener process.
    var releasedPending: UInt32 = 0
    var releasedPendingBy: [UInt32]
    /// Of those, per listener, the ones it counted per client address: their addresses.
    var releasedPeers: [[SocketAddress]]
    /// Draining: every response says `Connection: close`; nothing new is kept open.
    private(set) var draining = false
    /// The clock as of this wake-up (set by the worker's loop).
    var now: Int64
    /// One buffer for every read; a connection's unparsed bytes are copied in first.
    let readBuffer: UnsafeMutableRawBufferPointer
    let tlsSites: TLSSites?
    /// Connections from listener numbers at or above this came in on a TLS socket.
    let plainListeners: Int
    /// Per listener number: whether its connections start with a PROXY header.
    let proxyListeners: [Bool]
    let trustedProxies: Networks
    private var lastUntrustedWarning: Int64 = -1_000_000
    private var lastBrokenHeaderWarning: Int64 = -1_000_000
    /// Each phase's timeout.
    let timeouts: Connection.Timeouts
    /// How recently an idle connection must have been busy to get a last request during a drain.
    static let drainIdleGrace: Int64 = 1000

    deinit { readBuffer.deallocate() }

    init(
        config: ServerConfig, poller: Poller, http1: HTTP1Codec, http2: HTTP2Codec, output: OutputWriter,
        stats: UnsafeMutablePointer<UInt64>, tlsSites: TLSSites?
    ) {
        self.poller = poller
        self.http1 = http1
        self.http2 = http2
        http2Cleartext = config.http2.cleartext
        releasedPendingBy = Array(repeating: 0, count: config.listenerCount)
        releasedPeers = Array(repeating: [], count: config.listenerCount)
        self.output = output
        self.stats = stats
        self.tlsSites = tlsSites
        now = monotonicMilliseconds()
        readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        plainListeners = config.listen.count
        proxyListeners = config.allListen.map(\.proxyProtocol)
        trustedProxies = Networks(config.proxy.trusted) ?? Networks()
        timeouts = Connection.Timeouts(config)
    }

    @inline(__always)
    func connection(for fd: Int32) -> Connection? {
        Int(fd) < connections.count ? connections[Int(fd)] : nil
    }

    /// Whether `connection` is still open (it may have been closed while it was being answered).
    @inline(__always)
    func isOpen(_ connection: Connection) -> Bool { !connection.closed }

    // MARK: Adoption, PROXY, TLS

    /// Takes a connection the manager handed over and starts it.
    func adopt(fd: Int32, info: ConnectionInfo) {
        acceptedTotal &+= 1
        let connection = Connection(fd: fd, peer: info.peer, listenerID: info.listenerID, deadline: now + timeouts.idle)
        connection.countedPerIP = info.countedPerIP
        connection.admittedBy = Int(info.admittedBy) < releasedPendingBy.count ? info.admittedBy : 0
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
            connection.enter(.proxyHeader, at: now, timeouts)
            return readProxyHeader(connection)
        }
        begin(connection)
    }

    /// Starts a connection's protocol: the TLS handshake on a TLS socket, else the request.
    func begin(_ connection: Connection) {
        if Int(connection.listenerID) >= plainListeners, let context = tlsSites?.defaultContext {
            guard let session = TLSSession(context: context, fd: connection.fd, gather: output.gather) else {
                log.error("cannot start a TLS session: \(TLSContext.lastError("SSL_new"))")
                return close(connection)
            }
            connection.transport = .tls(session)
            connection.enter(.handshake, at: now, timeouts)
            continueHandshake(connection)
        } else {
            // The client usually sent its request before the hand-off (always, with defer_accept): read
            // and answer it now. The socket joins the epoll set only if it then has to wait for more.
            onReadable(connection)
        }
        if isOpen(connection) && connection.watched == 0 { watch(connection, events: Poller.readable) }
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
            // As nginx says it: what came instead of a header (a client that skipped the load balancer,
            // or a balancer not set to send one), once a second at most.
            if now - lastBrokenHeaderWarning >= 1000 {
                lastBrokenHeaderWarning = now
                let shown = UnsafeRawBufferPointer(start: buffer, count: min(total, 48))
                    .map { $0 >= 32 && $0 < 127 && $0 != 34 && $0 != 92 ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
                log.warning("broken header: \"\(shown)\" while reading the PROXY protocol header, client: \(connection.peer.hostText); closed")
            }
            close(connection)
        case .incomplete:
            guard total < ProxyProtocol.maximumLength, take(connection, buffer + have, count) else { return close(connection) }
            connection.stash = Array(UnsafeRawBufferPointer(start: buffer, count: total))
            watch(connection, events: Poller.readable)
        case .complete(let length, let source):
            guard take(connection, buffer + have, length - have) else { return close(connection) }
            connection.stash = []
            if let source { connection.peer = source }
            connection.enter(.idle, at: now, timeouts)
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

    /// TLS handshake steps as the socket allows; once done, the request that usually follows at once.
    func continueHandshake(_ connection: Connection) {
        guard let session = connection.transport.session else { return }
        if !connection.sawFirstByte {
            // A TLS connection starts with a handshake record (0x16). A letter is a plain HTTP request
            // sent to the HTTPS port: it gets a 400 that says so, in plain HTTP, not a bare reset.
            var first: UInt8 = 0
            let count = recv(connection.fd, &first, 1, cs_MSG_PEEK)
            if count < 0 && (errno == EAGAIN || errno == EINTR) { return watch(connection, events: Poller.readable) }
            if count <= 0 { return close(connection) }
            connection.sawFirstByte = true
            if first >= UInt8(ascii: "A") && first <= UInt8(ascii: "Z") { return answerPlainHTTP(connection) }
        }
        switch session.handshake() {
        case .done:
            connection.enter(.idle, at: now, timeouts)
            connection.certificateSite = tlsSites?.certificateSite(of: session) ?? 0
            // A TLS-ALPN-01 validator only wanted the handshake (RFC 8737 section 3).
            if session.choseACME { return close(connection) }
            if session.choseHTTP2 {
                guard http2.start(connection) else { return close(connection) }
                // The server's SETTINGS go at once (RFC 9113 section 3.4), before the client's preface.
                http2.send(connection, connection.http2!, self)
                guard isOpen(connection) else { return }
            }
            onReadable(connection)
            if isOpen(connection) && connection.watched == 0 { watch(connection, events: Poller.readable) }
        case .wantRead:
            watch(connection, events: Poller.readable)
        case .wantWrite:
            watch(connection, events: Poller.writable)
        case .failed:
            close(connection)
        }
    }

    /// Plain HTTP on a TLS socket: the request is read (for the access log), the TLS session dropped
    /// unused, and the answer is a 400 in plain HTTP saying the port speaks HTTPS, then a lingering close.
    func answerPlainHTTP(_ connection: Connection) {
        connection.transport = .plain
        var length = 0
        while length < readBuffer.count {
            let count = read(connection.fd, readBuffer.baseAddress! + length, readBuffer.count - length)
            if count > 0 { length += count } else if count < 0 && errno == EINTR { continue } else { break }
        }
        connection.lingerOnClose = true
        http1.answerPlainHTTPOnTLS(connection, UnsafeRawBufferPointer(rebasing: readBuffer[0..<length]), self)
        if isOpen(connection) && connection.outputIsEmpty { finish(connection) }
    }

    // MARK: Reading and writing

    /// An epoll event for a connection's socket.
    func onEvent(_ connection: Connection, events: UInt32) {
        if connection.http2 != nil {
            // HTTP/2 waits for the socket (EPOLLOUT alone) or for the client, whose frames (window
            // updates among them) are read in any phase.
            if events & Poller.writable != 0 { return onWritable(connection) }
            return onReadable(connection)
        }
        if events & Poller.writable != 0 || connection.phase == .writing {
            if events & (Poller.writable | Poller.hangup) != 0 { onWritable(connection) }
        } else {
            onReadable(connection)
        }
    }

    /// Reads what the socket (or OpenSSL) has, after any stashed bytes, and hands it to the protocol.
    func onReadable(_ connection: Connection) {
        switch connection.phase {
        case .lingering: return drainLingering(connection)
        case .proxyHeader: return readProxyHeader(connection)
        case .handshake: return continueHandshake(connection)
        case .idle, .readingHead, .readingBody, .writing: break
        }
        var length = takeStash(connection)
        var ended = false
        // A TLS read returns one record at a time: read on while records come, so what OpenSSL or the
        // socket holds is not left waiting for an event that will not come.
        while length < readBuffer.count {
            let count = connection.transport.read(connection.fd, readBuffer.baseAddress! + length, readBuffer.count - length)
            if count > 0 {
                length += count
                if case .plain = connection.transport { break }
                continue
            } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                // The end of the stream, or an error: answer what came before it, if anything.
                if length == 0 { return close(connection) }
                ended = true
            } else if length == 0 {
                return
            }
            break
        }
        let input = UnsafeRawBufferPointer(rebasing: readBuffer[0..<length])
        if let session = connection.http2 {
            http2.process(connection, session, input, self)
        } else if http2Cleartext && connection.requests == 0 && !connection.isSecure && input[0] == UInt8(ascii: "P") {
            startCleartextHTTP2(connection, input)
        } else {
            http1.process(connection, input, self)
        }
        if ended { return inputEnded(connection) }
        // A full buffer can leave part of a TLS record inside OpenSSL, where epoll cannot see it.
        if case .tls(let session) = connection.transport, session.hasBufferedInput, connection.outputIsEmpty,
           connection.phase != .lingering {
            onReadable(connection)
        }
    }

    /// A plain connection's first bytes with `http2.cleartext`: the HTTP/2 preface (RFC 9113 section
    /// 3.3, prior knowledge) starts HTTP/2; a part of it waits for the rest; anything else is HTTP/1.1.
    func startCleartextHTTP2(_ connection: Connection, _ input: UnsafeRawBufferPointer) {
        let preface: StaticString = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        let compared = min(input.count, preface.utf8CodeUnitCount)
        var matches = true
        for index in 0..<compared where input[index] != preface.utf8Start[index] {
            matches = false
            break
        }
        guard matches else { return http1.process(connection, input, self) }
        if compared < preface.utf8CodeUnitCount {
            connection.stash = Array(input)
            if connection.phase != .readingHead { connection.enter(.readingHead, at: now, timeouts) }
            return
        }
        guard http2.start(connection), let session = connection.http2 else { return close(connection) }
        http2.process(connection, session, input, self)
    }

    /// The client closed its side (or the read failed) after bytes that have been answered as far as
    /// they went: nothing more will come, so a response in flight is the last (the connection closes
    /// after it), and anything else waiting (part of a head, a body being skipped) never completes:
    /// the connection closes now. Level-triggered epoll would otherwise report the end of the stream
    /// again at every turn, and the loop would spin until the header deadline.
    func inputEnded(_ connection: Connection) {
        guard isOpen(connection) else { return }
        if let session = connection.http2 {
            // No more frames can come: what is queued goes, then the connection closes.
            if connection.outputIsEmpty { return finish(connection) }
            session.closeWhenFlushed = true
            return
        }
        if !connection.outputIsEmpty {
            connection.closeAfterResponse = true
            connection.stash = []
            return
        }
        connection.lingerOnClose = false
        finish(connection)
    }

    /// Moves a connection's unparsed bytes to the front of the read buffer; returns their length.
    @inline(__always)
    func takeStash(_ connection: Connection) -> Int {
        guard !connection.stash.isEmpty else { return 0 }
        let length = connection.stash.count
        connection.stash.withUnsafeBytes { readBuffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: length) }
        connection.stash = []
        return length
    }

    /// After the protocol started a response: done (its duration counted), waiting for the socket
    /// under the send deadline, or a connection that cannot go on.
    func responseStarted(_ connection: Connection, _ progress: OutputWriter.Progress) {
        switch progress {
        case .done:
            recordDuration(connection)
        case .blocked:
            connection.enter(.writing, at: now, timeouts)
            watch(connection, events: Poller.writable)
        case .failed:
            close(connection)
        }
    }

    /// The socket is full: the rest waits for EPOLLOUT under the send deadline.
    func waitForSocket(_ connection: Connection) {
        connection.enter(.writing, at: now, timeouts)
        watch(connection, events: Poller.writable)
    }

    func onWritable(_ connection: Connection) {
        if connection.phase == .handshake { return continueHandshake(connection) }
        if let session = connection.http2 {
            if session.closeWhenFlushed {
                // Only what was queued goes.
                switch output.flush(connection) {
                case .failed: return close(connection)
                case .blocked: return
                case .done: return finish(connection)
                }
            }
            return http2.send(connection, session, self)
        }
        switch output.flush(connection) {
        case .failed:
            return close(connection)
        case .blocked:
            connection.enter(.writing, at: now, timeouts)  // it moved: the send deadline starts again
            return
        case .done:
            break
        }
        recordDuration(connection)
        if connection.closeAfterResponse { return finish(connection) }
        watch(connection, events: Poller.readable)
        guard isOpen(connection) else { return }
        connection.enter(.idle, at: now, timeouts)
        // Requests that came in behind the response (pipelined) are answered now.
        let length = takeStash(connection)
        if length > 0 { http1.process(connection, UnsafeRawBufferPointer(rebasing: readBuffer[0..<length]), self) }
    }

    /// Counts a finished response in the duration histogram (from its request's parse to the last byte
    /// handed to the kernel).
    @inline(__always)
    func recordDuration(_ connection: Connection) {
        guard connection.startedAt != 0 else { return }
        Stats.recordDuration(since: connection.startedAt, in: stats)
        connection.startedAt = 0
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

    // MARK: Closing

    /// Ends a connection whose last response has been sent: at once, or, when the client may still be
    /// sending, by half-closing and reading what arrives for up to `Timeouts.lingering`. Closing a
    /// socket with unread input makes the kernel send a reset, which can destroy the response before the
    /// client has read it.
    func finish(_ connection: Connection) {
        guard connection.lingerOnClose else {
            // The FIN goes now, carrying the response's last bytes (held back by MSG_MORE), whoever
            // holds the socket's last reference: when the worker answers a connection before the
            // listener or manager has closed its copy, `close` alone would leave response and FIN
            // waiting for that copy to go, and the client might close first and keep the TIME_WAIT.
            if case .plain = connection.transport { shutdown(connection.fd, Int32(SHUT_WR)) }
            return close(connection)
        }
        connection.lingerOnClose = false
        connection.stash = []
        connection.body = nil
        connection.transport.session?.notifyClose()
        connection.enter(.lingering, at: now, timeouts)
        shutdown(connection.fd, Int32(SHUT_WR))
        watch(connection, events: Poller.readable)
    }

    /// Reads and drops what a lingering client sends; closes at its end of stream or on an error.
    func drainLingering(_ connection: Connection) {
        while true {
            let count = connection.transport.read(connection.fd, readBuffer.baseAddress!, readBuffer.count)
            if count > 0 { continue }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EAGAIN { return }
            return close(connection)
        }
    }

    /// Closes a connection once; later calls for the same connection do nothing.
    func close(_ connection: Connection) {
        guard isOpen(connection) else { return }
        // No EPOLL_CTL_DEL: once the listener and manager have closed their copies, this close is the
        // last reference and the kernel drops the socket from the epoll set itself. Under load the
        // worker can answer a connection before their `close_range` has run (see `finish`); a
        // registration then lasts those few microseconds and can at most wake the loop for whatever
        // connection now has this number: a read that finds nothing (EAGAIN), and nothing else, since
        // hang-ups are acted on only through reads and writes.
        if let session = connection.transport.session {
            if connection.phase != .lingering { session.notifyClose() }
            connection.transport = .plain
        }
        closeDescriptor(connection.fd)
        connection.closed = true
        connection.output.clear()
        connection.http2 = nil
        connections[Int(connection.fd)] = nil
        live -= 1
        closedTotal += 1
        releasedPending += 1
        releasedPendingBy[Int(connection.admittedBy)] += 1
        if connection.countedPerIP { releasedPeers[Int(connection.admittedBy)].append(connection.peer) }
    }

    /// Closes every connection (the worker is exiting).
    func closeAll() {
        for case let connection? in connections { close(connection) }
    }

    // MARK: Deadlines and draining

    /// Ends the phases whose deadline has passed: a head that did not arrive in time gets 408 and a
    /// lingering close; anything else closes. HTTP/2 connections idle for at least
    /// `HTTP2Session.quietMilliseconds` give back libnghttp2's frame buffer and empty stream table.
    func expireDeadlines() {
        for case let connection? in connections {
            guard connection.deadline <= now else {
                if let session = connection.http2, connection.phase == .idle, session.pages.pointee.resident != 0,
                    now - (connection.deadline - timeouts.idle) >= HTTP2Session.quietMilliseconds
                {
                    session.releasePages()
                }
                continue
            }
            if let session = connection.http2 {
                http2.expire(connection, session, self)
                continue
            }
            switch connection.phase {
            case .idle:
                close(connection)
            case .readingHead:
                connection.stash = []
                if !draining {
                    http1.answerUnparsed(connection, .requestTimeout, bytes: nil, self)
                    connection.lingerOnClose = true
                }
                if isOpen(connection) && connection.outputIsEmpty { finish(connection) }
            case .writing, .readingBody, .lingering, .handshake, .proxyHeader:
                close(connection)
            }
        }
    }

    /// Stops keeping connections: idle ones close (unless busy within the last second, see below), the
    /// rest get `Connection: close` on their next response.
    func startDrain() {
        if draining { return }
        draining = true
        for case let connection? in connections {
            if let session = connection.http2 {
                http2.drain(connection, session, self)
                continue
            }
            connection.closeAfterResponse = true
            guard connection.phase == .idle else { continue }
            // An idle keep-alive connection closes now, unless it was busy within the last second: a
            // client in the middle of a run of requests may have the next one on the wire, which a
            // close would lose. Those get `Connection: close` on that next response, or close when the
            // second is up (the deadline sweep closes idle connections past their deadline).
            let lastActive = connection.deadline - timeouts.idle
            if now - lastActive >= ConnectionDriver.drainIdleGrace {
                close(connection)
            } else {
                connection.deadline = lastActive + ConnectionDriver.drainIdleGrace
            }
        }
    }

    /// What each connection is doing now, for the gauges: (reading, writing, waiting).
    func phaseCounts() -> (reading: UInt64, writing: UInt64, waiting: UInt64) {
        var counts: (reading: UInt64, writing: UInt64, waiting: UInt64) = (0, 0, 0)
        for case let connection? in connections {
            switch connection.phase {
            case .idle: counts.waiting += 1
            case .writing: counts.writing += 1
            case .readingHead, .readingBody, .handshake, .proxyHeader, .lingering: counts.reading += 1
            }
        }
        return counts
    }
}
