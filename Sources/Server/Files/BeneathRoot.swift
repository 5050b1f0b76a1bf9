import CSystemShims
import Glibc

/// Opens paths beneath the site root without ever leaving it.
///
/// openat2 with RESOLVE_BENEATH when the kernel has it (Linux 5.6+): symlinks are followed while they
/// stay beneath the root. Where it does not (older kernels, some seccomp profiles, valgrind), a walk one
/// component at a time with O_NOFOLLOW: the same guarantee, and symlinks are refused (403).
enum BeneathRoot {
    /// Cleared the first time openat2 answers ENOSYS; per process.
    nonisolated(unsafe) static var hasOpenat2 = true

    /// Opens `path` beneath `root` with `flags`. The path must be normalized (no `.`, `..` or empty
    /// segments; `.` alone for the root itself) and NUL-terminated. Returns -1 with errno set.
    static func open(_ root: Int32, _ path: UnsafePointer<UInt8>, flags: Int32) -> Int32 {
        let text = UnsafeRawPointer(path).assumingMemoryBound(to: CChar.self)
        if hasOpenat2 {
            while true {
                let fd = cs_openat2(root, text, UInt64(flags), 0, cs_RESOLVE_BENEATH | cs_RESOLVE_NO_MAGICLINKS)
                if fd >= 0 { return fd }
                if errno == EINTR || errno == EAGAIN { continue }
                if errno != ENOSYS { return -1 }
                hasOpenat2 = false
                break
            }
        }
        return walk(root, path, flags: flags)
    }

    /// One openat per component, O_NOFOLLOW each time, so no symlink and no `..` is ever resolved.
    static func walk(_ root: Int32, _ path: UnsafePointer<UInt8>, flags: Int32) -> Int32 {
        let length = strlen(UnsafeRawPointer(path).assumingMemoryBound(to: CChar.self))
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { component -> Int32 in
            var directory = root
            var start = 0
            while true {
                var end = start
                while end < length && path[end] != 47 { end += 1 }
                let size = end - start
                guard size > 0, size < 256 else {
                    if directory != root { closeDescriptor(directory) }
                    errno = size == 0 ? ENOENT : ENAMETOOLONG
                    return -1
                }
                for index in 0..<size { component[index] = CChar(bitPattern: path[start + index]) }
                component[size] = 0
                let last = end >= length
                let fd = openat(
                    directory, component.baseAddress!,
                    last ? flags | cs_O_NOFOLLOW : cs_O_PATH | cs_O_DIRECTORY | cs_O_NOFOLLOW | cs_O_CLOEXEC)
                let saved = errno
                if directory != root { closeDescriptor(directory) }
                if fd < 0 {
                    // A symlink where a directory was expected reads as ENOTDIR; say "refused" either way.
                    errno = saved == ENOTDIR && !last ? ELOOP : saved
                    return -1
                }
                if last { return fd }
                directory = fd
                start = end + 1
            }
        }
    }
}
