import CSystemShims
import Glibc

/// Opens paths beneath the site root without ever leaving it.
///
/// openat2 with RESOLVE_BENEATH when the kernel has it (Linux 5.6+): symlinks are followed while they
/// stay beneath the root, as `symlinks` allows (follow, owner-match, never). Where it does not (older kernels, some seccomp profiles, valgrind), a walk one
/// component at a time with O_NOFOLLOW: the same guarantee, and symlinks are refused (403).
enum BeneathRoot {
    /// Cleared the first time openat2 answers ENOSYS; per process.
    nonisolated(unsafe) static var hasOpenat2 = true

    /// What to do with symlinks beneath the root (the `symlinks` key): set once when a worker starts,
    /// from its configuration.
    nonisolated(unsafe) static var symlinks = SymlinkPolicy.follow

    /// Opens `path` beneath `root` with `flags`. The path must be normalized (no `.`, `..` or empty
    /// segments; `.` alone for the root itself) and NUL-terminated. Returns -1 with errno set.
    static func open(_ root: Int32, _ path: UnsafePointer<UInt8>, flags: Int32) -> Int32 {
        let text = UnsafeRawPointer(path).assumingMemoryBound(to: CChar.self)
        if hasOpenat2 {
            let beneath = cs_RESOLVE_BENEATH | cs_RESOLVE_NO_MAGICLINKS
            let fd = openat2(root, text, flags, symlinks == .follow ? beneath : beneath | cs_RESOLVE_NO_SYMLINKS)
            if fd >= 0 { return fd }
            if hasOpenat2 {
                // Under owner-match, ELOOP means a symlink is on the way: follow it if every link's owner matches.
                guard errno == ELOOP && symlinks == .ownerMatch else { return -1 }
                guard ownersMatch(root, path) else {
                    errno = ELOOP
                    return -1
                }
                return openat2(root, text, flags, beneath)
            }
        }
        return walk(root, path, flags: flags)
    }

    /// openat2 that retries EINTR/EAGAIN and clears `hasOpenat2` on ENOSYS (then returns -1).
    static func openat2(_ root: Int32, _ path: UnsafePointer<CChar>, _ flags: Int32, _ resolve: UInt64) -> Int32 {
        while true {
            let fd = cs_openat2(root, path, UInt64(flags), 0, resolve)
            if fd >= 0 { return fd }
            if errno == EINTR || errno == EAGAIN { continue }
            if errno == ENOSYS { hasOpenat2 = false }
            return -1
        }
    }

    /// For each prefix of `path` that is a symlink: does the link's owner own what it resolves to
    /// (beneath the root)? Prefixes are checked from the top, so a link is only looked through once every
    /// link above it has passed. A link may be replaced between this check and the open; like Apache's
    /// option, this is a publishing policy, not a boundary (RESOLVE_BENEATH is the boundary).
    static func ownersMatch(_ root: Int32, _ path: UnsafePointer<UInt8>) -> Bool {
        let length = strlen(UnsafeRawPointer(path).assumingMemoryBound(to: CChar.self))
        var prefix = [CChar](repeating: 0, count: length + 1)
        var end = 0
        while end < length {
            end += 1
            while end < length && path[end] != 47 { end += 1 }
            for index in 0..<end { prefix[index] = CChar(bitPattern: path[index]) }
            prefix[end] = 0
            var link = stat()
            guard fstatat(root, prefix, &link, AT_SYMLINK_NOFOLLOW) == 0 else { return false }
            guard link.st_mode & S_IFMT == S_IFLNK else { continue }
            let target = openat2(root, prefix, cs_O_PATH | cs_O_CLOEXEC, cs_RESOLVE_BENEATH | cs_RESOLVE_NO_MAGICLINKS)
            guard target >= 0 else { return false }
            var resolved = stat()
            let status = fstat(target, &resolved)
            closeDescriptor(target)
            guard status == 0, resolved.st_uid == link.st_uid else { return false }
        }
        return true
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
