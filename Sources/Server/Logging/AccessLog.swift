import Glibc

/// A worker's access log: lines appended to a buffer as responses are made, written once per turn of
/// the event loop (or when the buffer is half full), whole lines only, to an `O_APPEND` file, so lines
/// from all workers never tear each other.
///
/// Formats: `combined` (Apache's and nginx's) or `json`, one object per line with every string escaped
/// so any request makes valid JSON. The time fields are rebuilt once a second, not per line. Owns its
/// buffer; the file descriptor is the worker's slot, replaced when the logs are reopened.
///
/// When the file cannot take what is written (a full disk, a file-size limit), the lines that did not
/// go are dropped and counted (`Stats.accessLogDropped`, in /metrics), the error log says so at most
/// once a minute, and a line the write stopped inside is taken back off the end of the file: the file
/// only ever holds whole lines, and the next lines are written whole once there is room again.
final class AccessLog {
    /// The open log file, or -1 when access logging is off; replaced when the logs are reopened.
    var fd: Int32
    let format: AccessLogFormat
    private let buffer: UnsafeMutablePointer<UInt8>
    private var count = 0
    static let capacity = 128 * 1024
    static let flushAt = 64 * 1024
    /// `[10/Oct/2000:13:55:36 +0000]`'s inside, and JSON's `2000-10-10T13:55:36Z`.
    private let logTime: UnsafeMutablePointer<UInt8>
    private let isoTime: UnsafeMutablePointer<UInt8>
    static let logTimeLength = 26
    static let isoTimeLength = 20

    /// This worker's figures: the dropped lines are counted there.
    private let stats: UnsafeMutablePointer<UInt64>
    /// Lines dropped since the error log last said so, and when it did.
    private var droppedUnreported: UInt64 = 0
    /// The line of the response just recorded whose body is compressed as it is sent, until that body
    /// takes it (`takePending`).
    private var pending: PendingLine?
    private var lastReport: Int64 = -1_000_000
    static let reportInterval: Int64 = 60_000

    deinit {
        buffer.deallocate()
        logTime.deallocate()
        isoTime.deallocate()
    }

    init(fd: Int32, format: AccessLogFormat, stats: UnsafeMutablePointer<UInt64>) {
        self.fd = fd
        self.format = format
        self.stats = stats
        buffer = .allocate(capacity: AccessLog.capacity)
        logTime = .allocate(capacity: AccessLog.logTimeLength)
        isoTime = .allocate(capacity: AccessLog.isoTimeLength + 8)
    }

    /// Rebuilds the time fields for `second` (the caller calls this when the second changes).
    func setTime(_ second: Int64) {
        var logWriter = ByteWriter(base: logTime, capacity: AccessLog.logTimeLength)
        HTTPDate.writeLogTime(second, into: &logWriter)
        if format == .json {
            var isoWriter = ByteWriter(base: isoTime, capacity: AccessLog.isoTimeLength + 8)
            HTTPDate.writeISOTime(second, into: &isoWriter)
        }
    }

    /// The line for a parsed request and its answer (every protocol's; HEAD's body counts 0).
    @inline(__always)
    func record(_ bytes: UnsafeRawBufferPointer, _ head: borrowing RequestHead, _ exchange: Exchange, _ response: borrowing Response) {
        guard fd >= 0 else { return }  // before the body's length is worked out
        record(
            bytes, requestLine: head.requestLine, referer: head.referer, userAgent: head.userAgent, client: exchange.client,
            status: response.status, bodyBytes: exchange.isHead ? 0 : response.bodyLength)
    }

    /// A line whose body length is known only once the body has gone (a body compressed as it is
    /// sent): made when the response starts, and written, with the compressed bytes the body came to,
    /// when the body ends or its connection or stream does (then with what went until then).
    final class PendingLine {
        unowned let log: AccessLog
        let text: [UInt8]
        /// Where the byte count goes in `text`.
        let split: Int
        /// The body's bytes so far (compressed, without chunked framing).
        var bodyBytes: Int64 = 0
        private var written = false

        init(log: AccessLog, text: [UInt8], split: Int) {
            self.log = log
            self.text = text
            self.split = split
        }

        /// Appends the line to the log with `bodyBytes` (once).
        func finish() {
            guard !written else { return }
            written = true
            log.append(self)
        }
    }

    /// A pending line no body took (its stream could not start: bodies take theirs in the turn that
    /// made it) goes with its length unknown.
    private func finishUnclaimed() {
        guard let unclaimed = pending else { return }
        pending = nil
        unclaimed.bodyBytes = -1
        unclaimed.finish()
    }

    /// The pending line of the response just recorded, for its body to carry.
    func takePending() -> PendingLine? {
        defer { pending = nil }
        return pending
    }

    private func append(_ line: PendingLine) {
        guard fd >= 0 else { return }
        if count + line.text.count + 20 > AccessLog.capacity { flush() }
        var writer = ByteWriter(base: buffer + count, capacity: AccessLog.capacity - count)
        line.text.withUnsafeBufferPointer { text in
            writer.append(text.baseAddress!, line.split)
            if line.bodyBytes >= 0 {
                writer.appendDecimal(line.bodyBytes)
            } else if format == .json {
                writer.append("null")
            } else {
                writer.append(byte: UInt8(ascii: "-"))
            }
            writer.append(text.baseAddress! + line.split, text.count - line.split)
        }
        if !writer.overflowed { count += writer.count }
    }

    /// The line for bytes that never became a request, by their first line.
    func recordUnparsed(_ bytes: UnsafeRawBufferPointer, client: SocketAddress, status: HTTPStatus, bodyBytes: Int64) {
        guard fd >= 0 else { return }
        record(bytes, requestLine: AccessLog.firstLine(bytes), referer: .none, userAgent: .none, client: client, status: status, bodyBytes: bodyBytes)
    }

    /// One line for a request: its line, referer and user agent as spans of `bytes`, the client, the
    /// status and the body bytes sent (-1: not known when the line is made, a body compressed as sent).
    func record(
        _ bytes: UnsafeRawBufferPointer, requestLine: ByteSpan, referer: ByteSpan, userAgent: ByteSpan, client: SocketAddress,
        status: HTTPStatus, bodyBytes: Int64
    ) {
        guard fd >= 0 else { return }
        finishUnclaimed()
        if count >= AccessLog.flushAt { flush() }
        var writer = ByteWriter(base: buffer + count, capacity: AccessLog.capacity - count)
        var split = -1
        switch format {
        case .combined:
            AccessLog.appendHost(client, &writer)
            writer.append(" - - [")
            writer.append(logTime, AccessLog.logTimeLength)
            writer.append("] \"")
            AccessLog.appendEscaped(&writer, bytes, requestLine)
            writer.append("\" ")
            writer.appendDecimal(Int64(status.rawValue))
            writer.append(byte: UInt8(ascii: " "))
            if bodyBytes >= 0 { writer.appendDecimal(bodyBytes) } else { split = writer.count }
            writer.append(" \"")
            if !referer.isEmpty { AccessLog.appendEscaped(&writer, bytes, referer) } else { writer.append(byte: UInt8(ascii: "-")) }
            writer.append("\" \"")
            if !userAgent.isEmpty { AccessLog.appendEscaped(&writer, bytes, userAgent) } else { writer.append(byte: UInt8(ascii: "-")) }
            writer.append("\"\n")
        case .json:
            writer.append("{\"time\":\"")
            writer.append(isoTime, AccessLog.isoTimeLength)
            writer.append("\",\"client\":\"")
            AccessLog.appendHost(client, &writer)
            writer.append("\",\"client_port\":")
            writer.appendDecimal(Int64(client.port))
            writer.append(",\"request\":\"")
            AccessLog.appendEscaped(&writer, bytes, requestLine, json: true)
            writer.append("\",\"status\":")
            writer.appendDecimal(Int64(status.rawValue))
            writer.append(",\"bytes\":")
            if bodyBytes >= 0 { writer.appendDecimal(bodyBytes) } else { split = writer.count }
            writer.append(",\"referer\":\"")
            AccessLog.appendEscaped(&writer, bytes, referer, json: true)
            writer.append("\",\"user_agent\":\"")
            AccessLog.appendEscaped(&writer, bytes, userAgent, json: true)
            writer.append("\"}\n")
        }
        guard !writer.overflowed else { return }
        if split >= 0 {
            // The body's length comes when it ends: the line waits for it (a rare path: bodies too large
            // to compress whole).
            pending = PendingLine(log: self, text: Array(UnsafeBufferPointer(start: buffer + count, count: writer.count)), split: split)
            return
        }
        count += writer.count
    }

    /// The request line of bytes that did not parse: their first line, as far as it goes (1 KiB at most).
    static func firstLine(_ bytes: UnsafeRawBufferPointer) -> ByteSpan {
        var end = 0
        while end < bytes.count && end < 1024 && bytes[end] != UInt8(ascii: "\r") && bytes[end] != UInt8(ascii: "\n") { end += 1 }
        return ByteSpan(start: 0, end: end)
    }

    /// Writes the buffered lines: whole lines in one write to an O_APPEND file.
    func flush() {
        finishUnclaimed()
        guard count > 0 else { return }
        defer { count = 0 }
        guard fd >= 0 else { return }
        var offset = 0
        var failure: Int32 = 0
        while offset < count {
            let written = write(fd, buffer + offset, count - offset)
            if written > 0 {
                offset += written
                continue
            }
            if written < 0 && errno == EINTR { continue }
            failure = written < 0 ? errno : ENOSPC
            break
        }
        guard offset < count else { return }
        // The write stopped inside a line (or before one): take the torn part back, drop the rest.
        var lineStart = offset
        while lineStart > 0 && buffer[lineStart - 1] != UInt8(ascii: "\n") { lineStart -= 1 }
        if lineStart < offset { takeBack(UnsafeRawBufferPointer(start: buffer + lineStart, count: offset - lineStart)) }
        var dropped: UInt64 = 0
        for index in lineStart..<count where buffer[index] == UInt8(ascii: "\n") { dropped += 1 }
        stats[Stats.accessLogDropped] &+= dropped
        droppedUnreported &+= dropped
        let now = monotonicMilliseconds()
        if now - lastReport >= AccessLog.reportInterval {
            lastReport = now
            log.error("access log: \(droppedUnreported) lines dropped: \(SystemError(call: "write", errno: failure == 0 ? ENOSPC : failure)); whole lines resume when there is room (see webserver_access_log_dropped_lines_total)")
            droppedUnreported = 0
        }
    }

    /// Removes `torn`, the start of a line a write stopped inside, from the end of the file, if it is
    /// still the end: on a full disk nobody can have written after it, and the bytes are compared first
    /// (through a read-only open of the same file: the log's own fd is write-only), so another worker's
    /// line is never cut.
    private func takeBack(_ torn: UnsafeRawBufferPointer) {
        let reader = open("/proc/self/fd/\(fd)", O_RDONLY | O_CLOEXEC)
        guard reader >= 0 else { return }
        defer { closeDescriptor(reader) }
        var info = stat()
        guard fstat(reader, &info) == 0, Int(info.st_size) >= torn.count else { return }
        let start = off_t(Int(info.st_size) - torn.count)
        let tail = UnsafeMutableRawBufferPointer.allocate(byteCount: torn.count, alignment: 1)
        defer { tail.deallocate() }
        guard pread(reader, tail.baseAddress, torn.count, start) == torn.count,
              memcmp(tail.baseAddress!, torn.baseAddress!, torn.count) == 0
        else { return }
        _ = ftruncate(fd, start)
    }

    /// The client's address as text (`203.0.113.9`, `2001:db8::1`), formatted on the stack.
    static func appendHost(_ client: SocketAddress, _ writer: inout ByteWriter) {
        var host: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &host) { scratch in
            let base = scratch.baseAddress!.assumingMemoryBound(to: CChar.self)
            let length = client.formatHost(into: base, capacity: scratch.count)
            writer.append(UnsafeRawPointer(base).assumingMemoryBound(to: UInt8.self), length)
        }
    }

    /// Copies a field into the log, at most 4096 input bytes, then `...`. Control bytes, quotes,
    /// backslashes and every byte above 0x7e are escaped: as `\xHH` in the combined format, and for JSON
    /// as `\"`, `\\` and `\u00XX`, so any request makes a valid line.
    static func appendEscaped(_ writer: inout ByteWriter, _ bytes: UnsafeRawBufferPointer, _ span: ByteSpan, json: Bool = false) {
        let hex: StaticString = json ? "0123456789abcdef" : "0123456789ABCDEF"
        let end = min(span.end, span.start + 4096)
        var index = span.start
        while index < end {
            let byte = bytes[index]
            if byte >= 32 && byte < 127 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") {
                writer.append(byte: byte)
            } else if json && byte >= 32 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                    writer.append(byte: UInt8(ascii: "\\"))
                    writer.append(byte: byte)
                } else {
                    writer.append("\\u00")
                    writer.append(byte: hex.utf8Start[Int(byte >> 4)])
                    writer.append(byte: hex.utf8Start[Int(byte & 15)])
                }
            } else {
                writer.append(json ? "\\u00" : "\\x")
                writer.append(byte: hex.utf8Start[Int(byte >> 4)])
                writer.append(byte: hex.utf8Start[Int(byte & 15)])
            }
            index += 1
        }
        if end < span.end { writer.append("...") }
    }
}
