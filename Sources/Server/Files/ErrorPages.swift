import CSystemShims
import Glibc

/// `error_pages`: pages served with an error's status instead of the built-in body, opened beneath the
/// root on first use and kept open, checked against the disk like cached files.
final class ErrorPages {
    /// Status → URL path beneath the root.
    private let paths: [UInt16: String]
    private var files: [UInt16: CachedFile] = [:]
    private let root: SiteRoot
    private let validity: Int64
    private let inlineLimit: Int

    init(_ configured: [String: String], root: SiteRoot, validity: Int64, inlineLimit: Int) {
        var paths: [UInt16: String] = [:]
        for (status, path) in configured { if let code = UInt16(status) { paths[code] = path } }
        self.paths = paths
        self.root = root
        self.validity = validity
        self.inlineLimit = inlineLimit
    }

    /// Forgets the pages opened (the root names another directory now).
    func removeAll() { files = [:] }

    /// The configured page for `status`; nil when none is configured or it cannot be served (the
    /// built-in body is sent then, and the log says why).
    func page(for status: HTTPStatus, now: Int64) -> CachedFile? {
        guard !paths.isEmpty, let path = paths[status.rawValue] else { return nil }
        if let file = files[status.rawValue] {
            if now - file.validatedAt < validity { return file }
            if FileCache.stillCurrent(file, root: root.fd) {
                file.validatedAt = now
                return file
            }
            files[status.rawValue] = nil
        }
        var relative = Array(path.utf8.dropFirst())
        relative.append(0)
        let fd = relative.withUnsafeBufferPointer {
            BeneathRoot.open(root.fd, $0.baseAddress!, flags: O_RDONLY | cs_O_CLOEXEC | cs_O_NONBLOCK | O_NOCTTY)
        }
        guard fd >= 0 else {
            log.warning("error page \(path) for \(status.rawValue) cannot be opened: \(String(cString: strerror(errno)))")
            return nil
        }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            closeDescriptor(fd)
            log.warning("error page \(path) for \(status.rawValue) is not a regular file")
            return nil
        }
        let type = relative.withUnsafeBufferPointer { MediaTypes.forPath($0.baseAddress!, length: $0.count - 1) }
        guard let file = CachedFile(
            fd: fd, info: info, contentType: type, openedPath: relative, key: relative, inlineLimit: inlineLimit, now: now)
        else { return nil }
        files[status.rawValue] = file
        return file
    }
}
