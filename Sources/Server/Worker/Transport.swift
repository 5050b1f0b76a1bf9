import CSystemShims
import Glibc

/// How a connection's bytes cross its socket: as they are, or through its TLS session. This is the one
/// place the two differ; the reader, the output queue and the close path call these and never ask which.
enum Transport {
    case plain
    case tls(TLSSession)

    /// The TLS session, if the connection has one.
    var session: TLSSession? {
        if case .tls(let session) = self { return session }
        return nil
    }

    /// Like read(2): bytes read, 0 at the end of the stream, -1 with errno (EAGAIN: nothing yet).
    /// The corresponding C functions are `read` and `SSL_read`.
    @inline(__always)
    func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        switch self {
        case .plain: return Glibc.read(fd, buffer, count)
        case .tls(let session): return session.read(buffer, count)
        }
    }

    /// One write of `count` bytes as far as the socket takes them: bytes written, or -1 with errno.
    /// `more` (plain only) holds a partial segment back for what follows (MSG_MORE). The corresponding C
    /// functions are `send` and `SSL_write`.
    @inline(__always)
    func write(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int, more: Bool) -> Int {
        switch self {
        case .plain: return Glibc.send(fd, bytes, count, cs_MSG_NOSIGNAL | (more ? cs_MSG_MORE : 0))
        case .tls(let session): return session.write(bytes, count)
        }
    }

    /// A response head and a body in memory, in as few writes as the transport allows: one sendmsg of
    /// two iovecs, or over TLS both copied into `record` and written with one `TLSSession.write` when they
    /// fit.
    /// Returns how many bytes of head-then-body went (0 when the socket took nothing), or -1 with errno
    /// on an error that ends the connection.
    func write(
        _ fd: Int32, head: UnsafeRawBufferPointer, body: UnsafeRawBufferPointer, more: Bool, record: UnsafeMutableRawBufferPointer
    ) -> Int {
        switch self {
        case .plain:
            var vectors = (
                iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress), iov_len: head.count),
                iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress), iov_len: body.count)
            )
            var header = msghdr()
            let flags = cs_MSG_NOSIGNAL | (more ? cs_MSG_MORE : 0)
            while true {
                let count = withUnsafeMutablePointer(to: &vectors) { pointer in
                    pointer.withMemoryRebound(to: iovec.self, capacity: 2) { base in
                        header.msg_iov = base
                        header.msg_iovlen = body.isEmpty ? 1 : 2
                        return sendmsg(fd, &header, flags)
                    }
                }
                if count >= 0 { return count }
                if errno == EINTR { continue }
                return errno == EAGAIN ? 0 : -1
            }
        case .tls(let session):
            if head.count + body.count <= record.count {
                record.baseAddress!.copyMemory(from: head.baseAddress!, byteCount: head.count)
                if !body.isEmpty { (record.baseAddress! + head.count).copyMemory(from: body.baseAddress!, byteCount: body.count) }
                return Transport.writeAll(session, UnsafeRawBufferPointer(start: record.baseAddress, count: head.count + body.count))
            }
            let sent = Transport.writeAll(session, head)
            guard sent == head.count, !body.isEmpty else { return sent }
            let more = Transport.writeAll(session, body)
            return more < 0 ? -1 : sent + more
        }
    }

    /// Up to `count` bytes of `file` from `offset`: sendfile; over TLS, up to `fileChunk` read with pread
    /// into `record` and written with SSL_write (its records leave in one send). Returns the bytes taken from the file and how many of
    /// them went (over TLS the rest wait in `record[written..<taken]`, for the caller to keep), or
    /// taken -1 with errno (EAGAIN: the socket is full; 0 taken and errno 0: the file shrank).
    func writeFile(
        _ fd: Int32, file: Int32, offset: Int64, count: Int64, record: UnsafeMutableRawBufferPointer
    ) -> (taken: Int, written: Int) {
        switch self {
        case .plain:
            while true {
                var position = off_t(offset)
                let sent = sendfile(fd, file, &position, Int(min(count, 1 << 30)))
                if sent < 0 && errno == EINTR { continue }
                if sent == 0 { errno = 0 }
                return (sent, max(sent, 0))
            }
        case .tls(let session):
            let want = Int(min(count, Int64(min(Transport.fileChunk, record.count))))
            var read = 0
            while true {
                read = pread(file, record.baseAddress!, want, off_t(offset))
                if read < 0 && errno == EINTR { continue }
                break
            }
            if read <= 0 {
                if read == 0 { errno = 0 }
                return (read == 0 ? 0 : -1, 0)
            }
            let written = Transport.writeAll(session, UnsafeRawBufferPointer(start: record.baseAddress, count: read))
            if written < 0 { return (-1, 0) }
            return (read, written)
        }
    }

    /// SSL_write until all of `bytes` went or the socket is full: bytes written, or -1 on an error
    /// (the connection ends; what went before it no longer matters).
    static func writeAll(_ session: TLSSession, _ bytes: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        while offset < bytes.count {
            let count = session.write(bytes.baseAddress! + offset, bytes.count - offset)
            if count > 0 {
                offset += count
                continue
            }
            return errno == EAGAIN ? offset : -1
        }
        return offset
    }

    /// The TLS plaintext record size (the most a record carries).
    static let recordSize = 16_384
    /// File bytes go through TLS this many at a time: four records, sent together.
    static let fileChunk = 4 * recordSize
}
