import CSystemShims
import Glibc

/// The directory served, as its path names it now. Every file is opened beneath this fd; the path is
/// opened again every `file_cache.valid`, so a deploy that swaps a symlink (`current -> releases/42`)
/// or deletes and recreates the directory is served from within that time, as nginx does, with no
/// reload, and a release deleted after the swap costs nothing.
///
/// Owns the fd (the previous one is closed on a change; files opened beneath it keep their own).
final class SiteRoot {
    let path: String
    /// The root's directory, opened O_PATH.
    private(set) var fd: Int32
    private var device: UInt64
    private var inode: UInt64
    private var checkedAt: Int64
    private var lastWarning: Int64 = -1_000_000

    init(path: String, now: Int64) throws {
        self.path = path
        let opened = try syscall("open(root)") { open(path, cs_O_PATH | cs_O_DIRECTORY | cs_O_CLOEXEC) }
        fd = opened
        (device, inode) = SiteRoot.identity(opened)
        checkedAt = now
    }

    /// Opens the path again when `validity` has passed since the last look; true when it names another
    /// directory now (its fd replaced this one: what was cached beneath the old one should go). A path
    /// that cannot be opened (between a deploy's delete and create) keeps the directory served now.
    func refresh(now: Int64, validity: Int64) -> Bool {
        guard now - checkedAt >= validity else { return false }
        checkedAt = now
        let opened = open(path, cs_O_PATH | cs_O_DIRECTORY | cs_O_CLOEXEC)
        guard opened >= 0 else {
            if now - lastWarning >= 60_000 {
                lastWarning = now
                log.warning("the root \(path) cannot be opened (\(SystemError(call: "open", errno: errno))); still serving the directory it named before")
            }
            return false
        }
        let (newDevice, newInode) = SiteRoot.identity(opened)
        guard newDevice != device || newInode != inode else {
            closeDescriptor(opened)
            return false
        }
        closeDescriptor(fd)
        fd = opened
        (device, inode) = (newDevice, newInode)
        log.info("the root \(path) names another directory now; serving it")
        return true
    }

    private static func identity(_ fd: Int32) -> (UInt64, UInt64) {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return (0, 0) }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }
}
