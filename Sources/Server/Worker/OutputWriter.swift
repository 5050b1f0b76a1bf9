import Glibc

/// Moves responses to sockets: starts one (head and an in-memory body in one write where the transport
/// allows) and continues it whenever the socket has room, through the connection's `Transport`, so the
/// send loop is written once for plain and TLS connections alike. What the socket does not take waits in
/// the connection's `OutputQueue`.
///
/// Owns the record buffer TLS output is assembled in and the buffer TLS records are gathered in (one of
/// each per worker).
final class OutputWriter {
    enum Progress {
        /// Everything went.
        case done
        /// The socket is full (or a compressed body yields the loop): wait for EPOLLOUT.
        case blocked
        /// The connection cannot go on (an error, or a file that shrank under us): close it.
        case failed
    }

    /// Where a TLS response's head and small body are joined into one write, and file bytes are read
    /// into on their way through TLS.
    let record: UnsafeMutableRawBufferPointer
    /// Where the records of one TLS write are gathered to leave in one send (see `TLSSession`): room for
    /// the largest write, HTTP/2's 96 KiB of frames, as records.
    let gather: UnsafeMutableRawBufferPointer
    /// This worker's figures (`Stats` slots): bytes written to sockets.
    let stats: UnsafeMutablePointer<UInt64>
    /// Where a body compressed as it is sent takes its pending line from.
    let accessLog: AccessLog?

    deinit {
        record.deallocate()
        gather.deallocate()
    }

    init(headCapacity: Int, stats: UnsafeMutablePointer<UInt64>, accessLog: AccessLog?) {
        record = .allocate(byteCount: max(Transport.fileChunk, Transport.recordSize + headCapacity), alignment: 16)
        gather = .allocate(byteCount: 128 * 1024, alignment: 16)
        self.stats = stats
        self.accessLog = accessLog
    }

    /// Sends `head`, then the response's body (unless `headOnly`: HEAD, which carries GET's fields and
    /// no body), reading from its representation where the body says so.
    func start(_ connection: Connection, head: UnsafeRawBufferPointer, _ response: borrowing Response, headOnly: Bool) -> Progress {
        let none = UnsafeRawBufferPointer(start: nil, count: 0)
        if headOnly { return write(connection, head: head, inline: none, range: nil, representation: nil, parts: []) }
        switch response.body {
        case .none:
            return write(connection, head: head, inline: none, range: nil, representation: nil, parts: [])
        case .text(let text):
            let inline = UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)
            return write(connection, head: head, inline: inline, range: nil, representation: nil, parts: [])
        case .bytes(let bytes):
            return write(connection, head: head, inline: bytes, range: nil, representation: nil, parts: [])
        case .fileRange(let start, let end):
            if start == end { return write(connection, head: head, inline: none, range: nil, representation: nil, parts: []) }
            return write(connection, head: head, inline: none, range: (start, end), representation: response.representation, parts: [])
        case .multipart(let parts):
            return write(connection, head: head, inline: none, range: (0, 0), representation: response.representation, parts: Array(parts))
        case .compressStream(let coding, let level):
            guard let source = response.representation, let stream = CompressionStream(source: source, coding: coding, level: level) else { return .failed }
            stream.pendingLog = accessLog?.takePending()
            connection.output.compression = stream
            return write(connection, head: head, inline: none, range: nil, representation: nil, parts: [])
        }
    }

    private func write(
        _ connection: Connection, head: UnsafeRawBufferPointer, inline: UnsafeRawBufferPointer, range: (start: Int64, end: Int64)?,
        representation: CachedFile?, parts: [ResponsePart]
    ) -> Progress {
        // MSG_MORE also when the connection closes after this response: the bytes wait in the socket
        // for the FIN that `ConnectionDriver.finish` sends right after, and leave with it in one segment.
        let more = range != nil || connection.output.compression != nil || connection.closeAfterResponse
        let total = head.count + inline.count
        let sent = connection.transport.write(connection.fd, head: head, body: inline, more: more, record: record)
        if sent < 0 { return .failed }
        stats[Stats.bytesSent] &+= UInt64(sent)
        if let range, let representation {
            connection.output.file = representation
            connection.output.fileOffset = range.start
            connection.output.fileEnd = range.end
            connection.output.parts = parts
        }
        guard sent == total else {
            // The socket is full: keep the rest of head and body for EPOLLOUT.
            var rest: [UInt8] = []
            rest.reserveCapacity(total - sent)
            if sent < head.count { rest.append(contentsOf: UnsafeRawBufferPointer(rebasing: head[sent...])) }
            if !inline.isEmpty { rest.append(contentsOf: UnsafeRawBufferPointer(rebasing: inline[max(0, sent - head.count)...])) }
            connection.output.pending = rest
            connection.output.pendingOffset = 0
            return .blocked
        }
        return connection.outputIsEmpty ? .done : flush(connection)
    }

    /// Pushes what is queued: pending bytes, then the file's range, then each further part, or the
    /// next chunks of a compressed body (at most 256 KiB of file per call, so one large download does
    /// not stall the worker's other connections; level-triggered EPOLLOUT brings the next turn).
    func flush(_ connection: Connection) -> Progress {
        guard let session = connection.transport.session else { return flushQueue(connection) }
        // TLS records made before go first; those the queue's writes make and the socket does not take
        // wait in the session, so the queue is done only when they went too.
        if session.hasPendingOutput, let blocked = Progress(session.flushPending()) { return blocked }
        let progress = flushQueue(connection)
        guard progress == .done, session.hasPendingOutput else { return progress }
        return Progress(session.flushPending()) ?? .done
    }

    private func flushQueue(_ connection: Connection) -> Progress {
        let transport = connection.transport
        let fd = connection.fd
        var compressedNow = 0
        while true {
            while connection.output.pendingOffset < connection.output.pending.count {
                let more = connection.output.file != nil || connection.output.compression != nil || connection.closeAfterResponse
                let offset = connection.output.pendingOffset
                let count = connection.output.pending.withUnsafeBytes {
                    transport.write(fd, $0.baseAddress! + offset, $0.count - offset, more: more)
                }
                if count > 0 {
                    stats[Stats.bytesSent] &+= UInt64(count)
                    connection.output.pendingOffset += count
                    continue
                }
                if count < 0 && errno == EINTR { continue }
                return count < 0 && errno == EAGAIN ? .blocked : .failed
            }
            if !connection.output.pending.isEmpty {
                connection.output.pending = []
                connection.output.pendingOffset = 0
            }
            guard let file = connection.output.file else {
                guard let stream = connection.output.compression else { return .done }
                if compressedNow >= 262_144 { return .blocked }
                // nil: the file shrank under us, so the body cannot be finished.
                guard let chunk = stream.nextChunk(consumed: &compressedNow) else { return .failed }
                if stream.finished { connection.output.compression = nil }
                connection.output.pending = Array(chunk)
                connection.output.pendingOffset = 0
                continue
            }
            while connection.output.fileOffset < connection.output.fileEnd {
                let (taken, written) = transport.writeFile(
                    fd, file: file.fd, offset: connection.output.fileOffset,
                    count: connection.output.fileEnd - connection.output.fileOffset, record: record)
                if taken < 0 && errno == EAGAIN { return .blocked }
                // An error, or 0 bytes: the file shrank under us and the promised length cannot be sent.
                if taken <= 0 { return .failed }
                stats[Stats.bytesSent] &+= UInt64(written)
                connection.output.fileOffset += Int64(taken)
                if written < taken {
                    // Through TLS: the record's unsent rest goes before the next read from the file.
                    connection.output.pending = Array(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(record)[written..<taken]))
                    connection.output.pendingOffset = 0
                    return .blocked
                }
                // Through TLS, all was taken but the socket filled: its records wait in the session, and
                // the file is read again only once they went.
                if transport.session?.hasPendingOutput == true { return .blocked }
            }
            if connection.output.parts.isEmpty {
                connection.output.file = nil
                return .done
            }
            let part = connection.output.parts.removeFirst()
            connection.output.pending = part.prefix
            connection.output.pendingOffset = 0
            connection.output.fileOffset = part.start
            connection.output.fileEnd = part.end
            // The closing boundary has no range: nothing follows it, so it goes without MSG_MORE.
            if part.start == part.end && connection.output.parts.isEmpty { connection.output.file = nil }
        }
    }
}

extension OutputWriter.Progress {
    /// What a TLS session's flush of its waiting records means for the connection's output: nil when
    /// they all went (the rest can follow).
    init?(_ flushed: TLSSession.Progress) {
        switch flushed {
        case .done: return nil
        case .failed: self = .failed
        default: self = .blocked
        }
    }
}
