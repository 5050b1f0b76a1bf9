import CSystemShims
import Foundation
import Glibc

/// The pid file and its lock: the running server holds an exclusive `flock` on it, so a stale file
/// (left by a crash) is recognized as stale and a second server refuses to start.
///
/// Owns the open file while the server runs; an upgrade hands the same open file to the new server
/// (so the new one holds the same lock), and then only the new one removes it.
public final class PidFile {
    let path: String
    private(set) var fd: Int32 = -1

    init(path: String) { self.path = path }

    /// The pid file: the configured one, else /run/webserver.pid for root, else one per user in
    /// $XDG_RUNTIME_DIR or /tmp.
    static func path(for config: ServerConfig) -> String {
        if let path = config.pidFile { return path }
        if getuid() == 0 { return "/run/webserver.pid" }
        let directory = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"] ?? "/tmp"
        return "\(directory)/webserver-\(getuid()).pid"
    }

    /// Takes the lock and writes this process's pid. `inherited` is the upgrading server's open pid
    /// file: when it is still the file at `path`, it is ours (with its lock) as it is.
    func lock(inherited: Int32? = nil) throws {
        if let inherited {
            var mine = stat()
            var theirs = stat()
            if fstat(inherited, &theirs) == 0, stat(path, &mine) == 0, mine.st_ino == theirs.st_ino, mine.st_dev == theirs.st_dev {
                _ = fcntl(inherited, F_SETFD, FD_CLOEXEC)
                fd = inherited
                writePid()
                return
            }
            closeDescriptor(inherited)  // another pid file now: lock that one as usual
        }
        let opened = try syscall("open(\(path))") { open(path, O_RDWR | O_CREAT | cs_O_CLOEXEC, 0o644) }
        if flock(opened, LOCK_EX | LOCK_NB) != 0 {
            defer { closeDescriptor(opened) }
            // The holder writes its pid just after taking the lock: a server started at the same moment
            // can find the file locked and still empty. Give it half a second to appear.
            for _ in 0..<20 {
                if let pid = Self.pid(in: opened) {
                    throw StartupError("another webserver is running (pid \(pid), pid file \(path))")
                }
                usleep(25_000)
            }
            throw StartupError(
                "another webserver holds the pid file \(path) and has written no pid in it: it is starting or stopping")
        }
        fd = opened
        writePid()
    }

    /// The pid written in the open file `fd`, if it holds one.
    public static func pid(in fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = pread(fd, &buffer, 31, 0)
        let text = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return Int32(text).flatMap { $0 > 0 ? $0 : nil }
    }

    private func writePid() {
        let text = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    /// Releases the file at stop: removed unless it was handed over to an upgrade's new server. A user
    /// the server became may not remove it from a directory root owns (/run): then it is emptied, which
    /// the commands read as no server running, like a file nobody holds the lock on.
    func release(handedOver: Bool) {
        guard fd >= 0 else { return }
        if !handedOver && unlink(path) != 0 { _ = ftruncate(fd, 0) }
        closeDescriptor(fd)
        fd = -1
    }
}

/// A startup failure explained in words.
public struct StartupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
