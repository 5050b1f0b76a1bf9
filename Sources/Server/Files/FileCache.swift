import CSystemShims
import Glibc

/// One representation of a file beneath the root, shared by every request that names it: the file as it
/// is, a precompressed sidecar (`.br`, `.zst`, `.gz`), or a form compressed here (whole into memory, or
/// gzip while it is sent).
///
/// Owns its fd, if it has one (closed when the last holder lets go: the cache, or a connection still
/// sending from it) and, for files up to the inline limit and compressed bodies, the bytes, so a response
/// is one writev.
final class CachedFile {
    enum Coding: Equatable {
        /// The file's own bytes.
        case identity
        /// `FILE.br`, `FILE.zst` or `FILE.gz` beside the file, sent as it is with its Content-Encoding.
        case sidecar(ContentCoding)
        /// The file compressed whole, kept in the worker's compressed cache.
        case memory(ContentCoding)
        /// A form to make here (no fd or body of its own): the answer is the body compressed whole from
        /// the cache (whose own headers preconditions then compare), or, for a file above
        /// `cache_file_max`, these headers and the body compressed while it is sent (the response's
        /// `CompressionStream` reads the file).
        case toCompress(ContentCoding)

        /// The Content-Encoding it is sent with, if any.
        var contentCoding: ContentCoding? {
            switch self {
            case .identity: return nil
            case .sidecar(let coding), .memory(let coding), .toCompress(let coding): return coding
            }
        }
    }

    /// The open file; owned by this object. -1 for the forms compressed here.
    let fd: Int32
    /// Length of this representation's bytes (for a form to compress, the length of the file it reads).
    let size: Int64
    /// What revalidation compares: a file that changed in any of these is opened again. The gzip forms
    /// carry their source's, so they are keyed by the version they were made from.
    let device: UInt64
    let inode: UInt64
    let mode: UInt32
    let modifiedSeconds: Int64
    let modifiedNanoseconds: Int64
    /// `Content-Type`, `Content-Length` (or `Transfer-Encoding: chunked`), [`Content-Encoding`],
    /// [`Accept-Ranges`], `Last-Modified`, `ETag`, [`Vary`] and the configured lines, each ending in
    /// CRLF: a 200 sends them all, a 206 the type and from `lengthEnd` on, a 304 from `validatorsStart`.
    let headers: UnsafeMutableRawBufferPointer
    /// End of the Content-Type line, of the Content-Length line, start of Last-Modified, start of the
    /// configured lines, in `headers`.
    let typeEnd: Int
    let lengthEnd: Int
    let validatorsStart: Int
    let extraStart: Int
    /// The ETag with its quotes, in `headers`.
    let etag: ByteSpan
    /// The whole content when the file is small enough to keep (or compressed), else nil (sent with
    /// sendfile, or streamed).
    let body: UnsafeMutableRawBufferPointer?
    /// The path that was opened (NUL-terminated), for revalidation: a directory's index file, say.
    let openedPath: [UInt8]
    /// The key the file is cached under: the request's normalized path and whether it named a directory.
    let key: [UInt8]
    var validatedAt: Int64
    let contentType: StaticString
    let coding: Coding
    /// The level a form compressed here was made at (0 for the file and its sidecars).
    let level: Int
    /// The response could have been compressed (a compressible type and length, or a sidecar): every
    /// answer for it says `Vary: Accept-Encoding`.
    let varies: Bool
    /// Compression here applies to this file (its type, its length, and `gzip.enabled`).
    let compressible: Bool
    /// The sidecars beside the file not older than it, by `ContentCoding.rawValue` (empty: none).
    var sidecars: [CachedFile?] = []
    /// The forms to compress (`toCompress`), by `ContentCoding.rawValue`, made on first use: what
    /// preconditions compare and what a streamed response sends. They hold no reference back.
    var forms: [CachedFile?] = []

    func sidecar(_ coding: ContentCoding) -> CachedFile? {
        sidecars.isEmpty ? nil : sidecars[coding.rawValue]
    }

    /// The headers-only form of this file in `coding` at `level`, made once.
    func form(_ coding: ContentCoding, level: Int) -> CachedFile {
        if forms.isEmpty { forms = [nil, nil, nil] }
        if let form = forms[coding.rawValue] { return form }
        let form = CachedFile(compressed: self, coding: coding, level: level, body: nil)
        forms[coding.rawValue] = form
        return form
    }

    /// The file itself, or a sidecar (`coding: .sidecar`, whose headers carry the original's type).
    init?(
        fd: Int32, info: stat, contentType: StaticString, openedPath: [UInt8], key: [UInt8], inlineLimit: Int, now: Int64,
        extraHeaders: [UInt8] = [], coding: Coding = .identity, varies: Bool = false, compressible: Bool = false
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
        self.contentType = contentType
        self.coding = coding
        level = 0
        self.varies = varies
        self.compressible = compressible
        validatedAt = now
        let layout = CachedFile.makeHeaders(
            contentType: contentType, length: size, coding: coding.contentCoding, ranges: true, modified: modifiedSeconds,
            inode: inode, size: size, modifiedNanoseconds: modifiedNanoseconds, level: -1, vary: varies, extra: extraHeaders)
        (headers, typeEnd, lengthEnd, validatorsStart, extraStart, etag) = layout

        if size <= Int64(inlineLimit) {
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(size), alignment: 16)
            if size > 0 && !readFully(fd, bytes.baseAddress!, Int(size), at: 0) {
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

    /// `source` in `coding` at `level`: with `body`, the whole compressed bytes and their length;
    /// without, the headers of a form still to make (`Transfer-Encoding: chunked`, as a streamed
    /// response sends them).
    init(compressed source: CachedFile, coding contentCoding: ContentCoding, level: Int, body: UnsafeMutableRawBufferPointer?) {
        fd = -1
        size = body.map { Int64($0.count) } ?? source.size
        device = source.device
        inode = source.inode
        mode = source.mode
        modifiedSeconds = source.modifiedSeconds
        modifiedNanoseconds = source.modifiedNanoseconds
        openedPath = source.openedPath
        key = source.key
        contentType = source.contentType
        coding = body == nil ? .toCompress(contentCoding) : .memory(contentCoding)
        self.level = level
        varies = true
        compressible = false
        self.body = body
        validatedAt = source.validatedAt
        let extra = Array(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(source.headers)[source.extraStart...]))
        // No Accept-Ranges: a range of this form is never served (bytes compressed on the fly would
        // not be the same from one request to the next if the level changed); a Range gets identity.
        (headers, typeEnd, lengthEnd, validatorsStart, extraStart, etag) = CachedFile.makeHeaders(
            contentType: contentType, length: body == nil ? -1 : size, coding: contentCoding, ranges: false, modified: modifiedSeconds,
            inode: inode, size: source.size, modifiedNanoseconds: modifiedNanoseconds, level: level, vary: true, extra: extra)
    }

    deinit {
        if fd >= 0 { closeDescriptor(fd) }
        headers.deallocate()
        body?.deallocate()
    }

    /// Bytes this representation keeps in memory, with a little for the object itself.
    var memoryCost: Int { headers.count + (body?.count ?? 0) + 256 }

    /// The header block and where its parts start. `length` -1 means chunked; a `level` of 0 or more marks
    /// the ETag of a form compressed here (`"INODE-SIZE-MTIME-gz6"`, `-br4`, `-zst6`, `-br0`), so each
    /// encoding and level has its own; -1 for the file and its sidecars (a sidecar's ETag is its own
    /// file's).
    static func makeHeaders(
        contentType: StaticString, length: Int64, coding: ContentCoding?, ranges: Bool, modified: Int64, inode: UInt64, size: Int64,
        modifiedNanoseconds: Int64, level: Int, vary: Bool, extra: [UInt8]
    ) -> (UnsafeMutableRawBufferPointer, Int, Int, Int, Int, ByteSpan) {
        let capacity = 512 + extra.count
        let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { scratch.deallocate() }
        var writer = ByteWriter(base: scratch, capacity: capacity)
        writer.append("Content-Type: ")
        writer.append(contentType)
        writer.append("\r\n")
        let typeEnd = writer.count
        if length >= 0 {
            writer.append("Content-Length: ")
            writer.appendDecimal(length)
            writer.append("\r\n")
        } else {
            writer.append("Transfer-Encoding: chunked\r\n")
        }
        let lengthEnd = writer.count
        if let coding {
            writer.append("Content-Encoding: ")
            writer.append(coding.token)
            writer.append("\r\n")
        }
        if ranges { writer.append("Accept-Ranges: bytes\r\n") }
        let validatorsStart = writer.count
        writer.append("Last-Modified: ")
        HTTPDate.write(modified, into: &writer)
        // Strong: inode, size and modification time to the nanosecond identify one version of the file.
        writer.append("\r\nETag: ")
        let etagStart = writer.count
        writer.append(byte: 34)
        writer.appendHex(inode)
        writer.append(byte: 45)
        writer.appendHex(UInt64(size))
        writer.append(byte: 45)
        writer.appendHex(UInt64(modified) &* 1_000_000_000 &+ UInt64(modifiedNanoseconds))
        if level >= 0, let coding {
            writer.append(byte: 45)
            writer.append(coding.tag)
            writer.appendDecimal(Int64(level))
        }
        writer.append(byte: 34)
        let etag = ByteSpan(start: etagStart, end: writer.count)
        writer.append("\r\n")
        if vary { writer.append("Vary: Accept-Encoding\r\n") }
        let extraStart = writer.count
        // The `headers` rules that match this file: part of every 200, 206 and 304 for it.
        if !extra.isEmpty { extra.withUnsafeBufferPointer { writer.append($0.baseAddress!, $0.count) } }
        let headers = UnsafeMutableRawBufferPointer.allocate(byteCount: writer.count, alignment: 1)
        headers.copyMemory(from: UnsafeRawBufferPointer(start: scratch, count: writer.count))
        return (headers, typeEnd, lengthEnd, validatorsStart, extraStart, etag)
    }

    /// Whether `info` describes the same version of the file.
    func matches(_ info: stat) -> Bool {
        UInt64(info.st_ino) == inode && UInt64(info.st_dev) == device && Int64(info.st_size) == size
            && info.st_mode == mode && Int64(info.st_mtim.tv_sec) == modifiedSeconds
            && Int64(info.st_mtim.tv_nsec) == modifiedNanoseconds
    }

    /// What preconditions and If-Range compare: the ETag in the header block and Last-Modified.
    var validators: Validators {
        Validators(etag: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(headers)[etag.start..<etag.end]), lastModified: modifiedSeconds)
    }

    /// `openedPath` with `.br`, `.zst` or `.gz` added, NUL-terminated.
    func sidecarPath(_ coding: ContentCoding) -> [UInt8] {
        Array(openedPath.dropLast()) + coding.sidecarSuffix + [0]
    }
}

/// The worker's open-file cache: descriptor, stat, validators and small bodies, by request path.
///
/// Bounded in entries: a table of `entries` slots in sets of four, the set picked by the path's hash,
/// so a lookup is one multiply-add per byte and at most four hash compares, and a new file evicts the
/// least recently used of its set. (A direct-mapped table, one slot per hash, let two busy paths that
/// shared a slot evict each other on every request: with 60 files and 1,024 slots, four sites in five
/// have such a pair.) An entry older than `validity` is checked against the file again (opened with
/// O_PATH beneath the root and stat-ed) before it is used; one that changed is dropped, so a changed
/// file is served fresh at most `validity` after it changed. A busy file is opened once, not per request.
struct FileCache {
    let capacity: Int
    let validity: Int64
    let inlineLimit: Int
    /// Whether `.gz` sidecars are served, so revalidation checks them too.
    let sidecars: Bool
    /// Slots per set (four, fewer for a smaller cache), and the sets: `capacity` rounded down to whole sets.
    private let ways: Int
    private let sets: Int
    /// Each set's files, the most recently used first, and their paths' hashes (0 beside an empty slot).
    private var slots: [CachedFile?]
    private var hashes: [UInt64]

    init(capacity: Int, validityMilliseconds: Int, inlineLimit: Int, sidecars: Bool = false) {
        self.capacity = capacity
        validity = Int64(validityMilliseconds)
        self.inlineLimit = inlineLimit
        self.sidecars = sidecars
        ways = max(1, min(4, capacity))
        sets = max(1, capacity / ways)
        slots = [CachedFile?](repeating: nil, count: sets * ways)
        hashes = [UInt64](repeating: 0, count: sets * ways)
    }

    /// The first slot of the set `hash` picks.
    @inline(__always)
    private func set(_ hash: UInt64) -> Int { Int(hash % UInt64(sets)) &* ways }

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
        guard capacity > 0 else { return nil }
        let first = set(hash)
        let index = hashes.withUnsafeBufferPointer { hashes in
            var index = first
            while index < first &+ ways && hashes[index] != hash { index &+= 1 }
            return index
        }
        if index < first &+ ways, let file = slots[index], file.key.count == length + 1,
            file.key[length] == (directory ? 1 : 0), memcmp(path, file.key, length) == 0
        {
            if now - file.validatedAt >= validity {
                guard FileCache.stillCurrent(file, root: root, sidecars: sidecars) else {
                    remove(at: index, first: first)
                    return nil
                }
                file.validatedAt = now
            }
            if index != first { moveToFront(index, first: first) }
            return file
        }
        return nil  // (two paths in one set with the same 64-bit hash: the second is never cached)
    }

    /// Makes the slot at `index` the first of its set (which starts at `first`), the ones before it moving
    /// down one.
    private mutating func moveToFront(_ index: Int, first: Int) {
        let file = slots[index]
        let hash = hashes[index]
        var slot = index
        while slot > first {
            slots[slot] = slots[slot - 1]
            hashes[slot] = hashes[slot - 1]
            slot -= 1
        }
        slots[first] = file
        hashes[first] = hash
    }

    /// Empties the slot at `index`, the ones after it in its set moving up one.
    private mutating func remove(at index: Int, first: Int) {
        var slot = index
        while slot < first + ways - 1 {
            slots[slot] = slots[slot + 1]
            hashes[slot] = hashes[slot + 1]
            slot += 1
        }
        slots[slot] = nil
        hashes[slot] = 0
    }

    /// Checks the path again, beneath the root, and compares what it names now with the cached file;
    /// with `sidecars`, the `.br`, `.zst` and `.gz` beside it too (one that appeared, changed or went
    /// away counts).
    static func stillCurrent(_ file: CachedFile, root: Int32, sidecars: Bool = false) -> Bool {
        guard let info = status(file.openedPath, root: root), file.matches(info) else { return false }
        guard sidecars else { return true }
        for coding in ContentCoding.allCases {
            let sidecar = status(file.sidecarPath(coding), root: root)
            if let current = file.sidecar(coding) {
                guard let sidecar, current.matches(sidecar) else { return false }
            } else if let sidecar, FileCache.usableSidecar(sidecar, of: file) {
                return false  // none was used, and now one is usable (one older than the file is ignored)
            }
        }
        return true
    }

    /// A sidecar is used when it is a regular file not older than the file it compresses.
    static func usableSidecar(_ sidecar: stat, of file: CachedFile) -> Bool {
        sidecar.st_mode & S_IFMT == S_IFREG
            && (Int64(sidecar.st_mtim.tv_sec), Int64(sidecar.st_mtim.tv_nsec)) >= (file.modifiedSeconds, file.modifiedNanoseconds)
    }

    /// What `path` (NUL-terminated, relative to the root) names now, or nil.
    static func status(_ path: [UInt8], root: Int32) -> stat? {
        let fd = path.withUnsafeBufferPointer { BeneathRoot.open(root, $0.baseAddress!, flags: cs_O_PATH | cs_O_CLOEXEC) }
        guard fd >= 0 else { return nil }
        defer { closeDescriptor(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return info
    }

    /// Drops every entry (the root names another directory now).
    mutating func removeAll() {
        for index in slots.indices {
            slots[index] = nil
            hashes[index] = 0
        }
    }

    /// Adds `file` first in its set, evicting the least recently used file when the set is full (a
    /// lookup that missed has already dropped the path's stale entry). A capacity of 0 caches nothing.
    mutating func insert(_ file: CachedFile, hash: UInt64) {
        guard capacity > 0 else { return }
        let first = set(hash)
        var last = first + ways - 1
        for index in first..<last where slots[index] == nil {
            last = index
            break
        }
        slots[last] = file
        hashes[last] = hash
        if last != first { moveToFront(last, first: first) }
    }
}
