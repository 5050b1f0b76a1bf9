import CSystemShims
import Glibc

/// The supervisor's side of the logs: it opens the access log (children write it through the fd they
/// are given) and points its own fd 2, which every child inherits, at the error log. On SIGUSR1 (after
/// logrotate moved the files) it opens both again and hands the new fds down.
final class ServerLogs {
    /// The open access log, or -1 when access logging is off; owned here.
    private(set) var accessLogFD: Int32 = -1
    /// The error log file, when there is one: kept open only to give it to the server's user.
    private var errorLogFD: Int32 = -1

    /// Opens the configured files (the error log replaces fd 2).
    func open(_ config: ServerConfig) throws {
        if let path = config.accessLog {
            accessLogFD = try syscall("open(\(path))") { Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | cs_O_CLOEXEC, 0o644) }
        }
        if let path = config.errorLog {
            let fd = try syscall("open(\(path))") { Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | cs_O_CLOEXEC, 0o644) }
            _ = dup2(fd, 2)
            errorLogFD = fd
        }
    }

    /// Gives the log files opened as root to `uid`/`gid`, the user the server becomes, so that user can
    /// open them again when they are reopened (SIGUSR1).
    func give(to uid: uid_t, _ gid: gid_t) {
        for fd in [accessLogFD, errorLogFD] where fd >= 0 { _ = fchown(fd, uid, gid) }
        if errorLogFD >= 0 {
            closeDescriptor(errorLogFD)
            errorLogFD = -1
        }
    }

    /// Opens both files again: the access log replaces the one held here; the error log is put on fd 2.
    /// Returns the new fds for the children (access first when there is one) and which they are; the
    /// caller closes the error log's fd once it has passed it on.
    func reopen(_ config: ServerConfig) -> (fds: [Int32], access: Bool, error: Bool) {
        var fds: [Int32] = []
        var access = false
        var error = false
        if let path = config.accessLog {
            let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | cs_O_CLOEXEC, 0o644)
            if fd >= 0 {
                if accessLogFD >= 0 { closeDescriptor(accessLogFD) }
                accessLogFD = fd
                fds.append(fd)
                access = true
            } else {
                log.error("cannot reopen \(path): \(SystemError(call: "open", errno: errno))")
            }
        } else if accessLogFD >= 0 {
            closeDescriptor(accessLogFD)
            accessLogFD = -1
        }
        if let path = config.errorLog {
            let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | cs_O_CLOEXEC, 0o644)
            if fd >= 0 {
                _ = dup2(fd, 2)
                fds.append(fd)
                error = true
            }
        }
        return (fds, access, error)
    }
}
