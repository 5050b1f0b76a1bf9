import Glibc
public import Logging

/// The error log: one line per event, written with a single write(2) to fd 2, so lines from every
/// process of the server interleave whole. The supervisor points fd 2 at the error-log file (when one is
/// configured) before it starts any child, and children inherit it.
///
/// Line format: `2026-11-27T09:46:15.123Z warning worker[1234]: message key=value`.
public struct ErrorLogHandler: LogHandler {
    /// The role shown in every line (`supervisor`, `listener`, `manager`, `worker 3`).
    nonisolated(unsafe) public static var role = "webserver"

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = "\(ErrorLogHandler.timestamp()) \(event.level) \(ErrorLogHandler.role)[\(getpid())]: \(event.message)"
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        for key in all.keys.sorted() { line += " \(key)=\(all[key]!)" }
        line += "\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    break
                }
                offset += written
            }
        }
    }

    package static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(now.tv_nsec / 1_000_000), 3))Z"
    }

    /// Sets up swift-log for this process once, at `level` (a config `log_level` name).
    public static func bootstrap(role: String, level: String) {
        ErrorLogHandler.role = role
        let parsed = Logger.Level(rawValue: level) ?? .info
        LoggingSystem.bootstrap { label in ErrorLogHandler(label: label, level: parsed) }
    }
}

/// The logger every part of the server uses.
public let log = Logger(label: "webserver")

/// Applies a `reopenLogs` message's fds: the access-log fd (first, when `access`) replaces `accessLog`,
/// whose old fd is closed; the error-log fd (next, when `error`) is duplicated onto fd 2. Returns that
/// error-log fd, still open, for a caller that passes it on (it closes it after), or -1.
package func adoptReopenedLogs(_ fds: [Int32], access: Bool, error: Bool, accessLog: inout Int32) -> Int32 {
    var index = 0
    if access {
        if accessLog >= 0 { closeDescriptor(accessLog) }
        accessLog = fds[index]
        index += 1
    }
    guard error else { return -1 }
    _ = dup2(fds[index], 2)
    return fds[index]
}

/// `adoptReopenedLogs` for a process that writes no access log (the listener, the ACME process): only
/// its error log points at the new file; every fd received is closed.
package func adoptReopenedErrorLog(_ fds: [Int32], access: Bool, error: Bool) {
    var noAccessLog: Int32 = -1
    let errorLog = adoptReopenedLogs(fds, access: access, error: error, accessLog: &noAccessLog)
    if errorLog >= 0 { closeDescriptor(errorLog) }
    if noAccessLog >= 0 { closeDescriptor(noAccessLog) }
}
