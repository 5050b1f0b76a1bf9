import Glibc

/// Watches the directories of the TLS certificate and key files (inotify), because certbot, Kubernetes
/// and most deploy tools replace them by rename or by swapping a symlink, which a watch on the file
/// itself would miss. An event only schedules a check; the check compares what each path now names
/// (device, inode, size, modification time, after symlinks) with what it named before.
final class CertificateWatch {
    let fd: Int32
    private var paths: [String] = []
    private var identities: [String: [Int64]] = [:]
    /// When the pending check is due (monotonic ms), or nil: events come in bursts, so wait for quiet.
    private(set) var checkAt: Int64?
    static let quietMilliseconds: Int64 = 500

    init?(paths: [String]) {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        self.fd = fd
        watch(paths)
    }

    deinit { closeDescriptor(fd) }

    /// Watches the directories of `paths` (again, after a reload may have named other files).
    func watch(_ newPaths: [String]) {
        paths = newPaths
        var directories = Set<String>()
        for path in paths {
            let slash = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
            directories.insert(slash.isEmpty ? "/" : slash)
        }
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB)
        for directory in directories { _ = inotify_add_watch(fd, directory, mask) }
        identities = Dictionary(paths.map { ($0, CertificateWatch.identity($0)) }, uniquingKeysWith: { first, _ in first })
    }

    /// Drains the events; schedules a check after a quiet moment.
    func drain(now: Int64) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while read(fd, &buffer, buffer.count) > 0 {}
        checkAt = now + CertificateWatch.quietMilliseconds
    }

    /// Whether a scheduled check is due and found a watched file changed.
    func changed(now: Int64) -> Bool {
        guard let due = checkAt, now >= due else { return false }
        checkAt = nil
        var changed = false
        for path in paths {
            let current = CertificateWatch.identity(path)
            if identities[path] != current {
                identities[path] = current
                changed = true
            }
        }
        return changed
    }

    static func identity(_ path: String) -> [Int64] {
        var info = stat()
        guard stat(path, &info) == 0 else { return [] }
        return [Int64(info.st_dev), Int64(info.st_ino), Int64(info.st_size), Int64(info.st_mtim.tv_sec), Int64(info.st_mtim.tv_nsec)]
    }
}
