import CSystemShims
import Glibc

/// A file beneath the root, opened once and shared by every request that names it.
///
/// Owns its fd (closed when the last holder lets go: the cache, or a connection still sending from it)
/// and, for files up to the inline limit, a copy of the bytes so a response is one writev.
final class CachedFile {
    /// The open file; owned by this object.
    let fd: Int32
    let size: Int64
    /// What revalidation compares: a file that changed in any of these is opened again.
    let device: UInt64
    let inode: UInt64
    let mode: UInt32
    let modifiedSeconds: Int64
    let modifiedNanoseconds: Int64
    /// `Content-Type`, `Content-Length`, `Accept-Ranges`, `Last-Modified` and `ETag` lines, each ending
    /// in CRLF: a 200 sends them all, a 206 the type and from `lengthEnd` on, a 304 from `validatorsStart`.
    let headers: UnsafeMutableRawBufferPointer
    /// End of the Content-Type line, of the Content-Length line, and start of Last-Modified, in `headers`.
    let typeEnd: Int
    let lengthEnd: Int
    let validatorsStart: Int
    /// The ETag with its quotes, in `headers`.
    let etag: ByteSpan
    /// The whole content when the file is small enough to keep, else nil (sent with sendfile).
    let body: UnsafeMutableRawBufferPointer?
    /// The path that was opened (NUL-terminated), for revalidation: a directory's index file, say.
    let openedPath: [UInt8]
    /// The key the file is cached under: the request's normalized path and whether it named a directory.
    let key: [UInt8]
    var validatedAt: Int64

    init?(
        fd: Int32, info: stat, contentType: StaticString, openedPath: [UInt8], key: [UInt8], inlineLimit: Int, now: Int64,
        extraHeaders: [UInt8] = []
    ) {
        self.fd = fd
        size = Int64(info.st_size)
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        mode = info.st_mode
        modifiedSeconds = Int64(info.st_mtim.tv_sec)
        modifiedNanoseconds = Int64(info.st_mtim.tv_nsec)
        self.openedPath = openedPath
        self.key = key
        validatedAt = now

        let capacity = 512 + extraHeaders.count
        let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { scratch.deallocate() }
        var writer = ByteWriter(base: scratch, capacity: capacity)
        writer.append("Content-Type: ")
        writer.append(contentType)
        writer.append("\r\n")
        typeEnd = writer.count
        writer.append("Content-Length: ")
        writer.appendDecimal(size)
        writer.append("\r\n")
        lengthEnd = writer.count
        writer.append("Accept-Ranges: bytes\r\n")
        validatorsStart = writer.count
        writer.append("Last-Modified: ")
        HTTPDate.write(modifiedSeconds, into: &writer)
        // Strong: inode, size and modification time to the nanosecond identify one version of the file.
        writer.append("\r\nETag: ")
        let etagStart = writer.count
        writer.append(byte: 34)
        writer.appendHex(inode)
        writer.append(byte: 45)
        writer.appendHex(UInt64(size))
        writer.append(byte: 45)
        writer.appendHex(UInt64(modifiedSeconds) &* 1_000_000_000 &+ UInt64(modifiedNanoseconds))
        writer.append(byte: 34)
        etag = ByteSpan(start: etagStart, end: writer.count)
        writer.append("\r\n")
        // The `headers` rules that match this file: part of every 200, 206 and 304 for it.
        if !extraHeaders.isEmpty { extraHeaders.withUnsafeBufferPointer { writer.append($0.baseAddress!, $0.count) } }
        headers = .allocate(byteCount: writer.count, alignment: 1)
        headers.copyMemory(from: UnsafeRawBufferPointer(start: scratch, count: writer.count))

        if size <= Int64(inlineLimit) {
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(size), alignment: 16)
            var offset = 0
            while offset < Int(size) {
                let count = pread(fd, bytes.baseAddress! + offset, Int(size) - offset, off_t(offset))
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                offset += count
            }
            if offset != Int(size) {
                // The file changed while it was read: do not keep a torn copy.
                bytes.deallocate()
                headers.deallocate()
                closeDescriptor(fd)
                return nil
            }
            body = bytes
        } else {
            body = nil
        }
    }

    deinit {
        closeDescriptor(fd)
        headers.deallocate()
        body?.deallocate()
    }

    /// Whether `info` describes the same version of the file.
    func matches(_ info: stat) -> Bool {
        UInt64(info.st_ino) == inode && UInt64(info.st_dev) == device && Int64(info.st_size) == size
            && info.st_mode == mode && Int64(info.st_mtim.tv_sec) == modifiedSeconds
            && Int64(info.st_mtim.tv_nsec) == modifiedNanoseconds
    }
}

/// The worker's open-file cache: descriptor, stat, validators and small bodies, by request path.
///
/// Bounded in entries: a direct-mapped table of `entries` slots indexed by the path's hash, so a lookup
/// is one multiply-add per byte and one slot read, and a new file evicts whatever held its slot. An entry older than `validity` is checked against the file again (opened with
/// O_PATH beneath the root and stat-ed) before it is used; one that changed is dropped, so a changed
/// file is served fresh at most `validity` after it changed. A busy file is opened once, not per request.
struct FileCache {
    let capacity: Int
    let validity: Int64
    let inlineLimit: Int
    private var slots: [CachedFile?]

    init(capacity: Int, validityMilliseconds: Int, inlineLimit: Int) {
        self.capacity = capacity
        validity = Int64(validityMilliseconds)
        self.inlineLimit = inlineLimit
        slots = [CachedFile?](repeating: nil, count: max(capacity, 1))
    }

    @inline(__always)
    private func slot(_ hash: UInt64) -> Int { Int(hash % UInt64(slots.count)) }

    /// FNV-1a over the path bytes and the directory flag: the lookup allocates nothing.
    static func hash(_ path: UnsafePointer<UInt8>, _ length: Int, directory: Bool) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for index in 0..<length {
            hash = (hash ^ UInt64(path[index])) &* 0x100_0000_01b3
        }
        return (hash ^ (directory ? 1 : 0)) &* 0x100_0000_01b3
    }

    /// The cached file for this path if it is there and still current.
    mutating func lookup(
        _ path: UnsafePointer<UInt8>, _ length: Int, directory: Bool, hash: UInt64, now: Int64, root: Int32
    ) -> CachedFile? {
        guard capacity > 0, let file = slots[slot(hash)] else { return nil }
        guard file.key.count == length + 1, file.key[length] == (directory ? 1 : 0),
              memcmp(path, file.key, length) == 0
        else { return nil }
        if now - file.validatedAt >= validity {
            guard FileCache.stillCurrent(file, root: root) else {
                slots[slot(hash)] = nil
                return nil
            }
            file.validatedAt = now
        }
        return file
    }

    /// Checks the path again, beneath the root, and compares what it names now with the cached file.
    static func stillCurrent(_ file: CachedFile, root: Int32) -> Bool {
        let fd = file.openedPath.withUnsafeBufferPointer {
            BeneathRoot.open(root, $0.baseAddress!, flags: cs_O_PATH | cs_O_CLOEXEC)
        }
        guard fd >= 0 else { return false }
        defer { closeDescriptor(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return false }
        return file.matches(info)
    }

    /// Adds `file` in its slot, evicting the file that was there. A capacity of 0 caches nothing.
    mutating func insert(_ file: CachedFile, hash: UInt64) {
        guard capacity > 0 else { return }
        slots[slot(hash)] = file
    }
}
