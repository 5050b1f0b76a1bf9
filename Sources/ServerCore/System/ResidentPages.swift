import CSystemShims
import Glibc

/// Gives back the page-table entries of the read-only file mappings a process touched while it started
/// (the binary's code and the libraries', mapped by the loader, relocation and the Swift runtime's
/// start-up, each fault mapping 16 pages around it), so its resident set is what its loop uses. The
/// pages stay in the page cache (shared with every other process), so nothing is read again from disk;
/// a page the loop needs comes back with one minor fault (with the kernel's fault-around, the 64 KiB
/// around it: that is per system, not per mapping).
///
/// Only mappings with no anonymous (copied-on-write) page are touched: dropping a private mapping's
/// PTEs discards its private copies, and a relocated read-only region (RELRO) holds such copies.
package enum ResidentPages {
    /// When to trim once more (monotonic ms; 0: not planned): a few seconds into the loop, after the
    /// first-time work of its first ticks (spawning workers, the first heartbeats, the first requests).
    nonisolated(unsafe) static var againAt: Int64 = 0

    /// Trims now, once a role is made, and plans one more trim 3 s on (`trimIfDue` from the loop's
    /// tick), after its first-time work.
    package static func trimAfterStartup() {
        trimStartupMappings()
        againAt = monotonicMilliseconds() + 3000
    }

    /// The planned trim, when it is due.
    @inline(__always)
    package static func trimIfDue(_ now: Int64) {
        if againAt != 0 && now >= againAt {
            againAt = 0
            trimStartupMappings()
        }
    }

    /// Trims what can be trimmed; returns the bytes given back (mappings and pages).
    @discardableResult
    package static func trimStartupMappings() -> Int {
        // And the heap start-up freed (the configuration's parse, the role's set-up).
        _ = cs_malloc_trim()
        return trimReadOnlyMappings() + trimReadOnlyData()
    }

    /// The read-only file mappings with no private page, whole.
    package static func trimReadOnlyMappings() -> Int {
        guard let file = fopen("/proc/self/smaps", "r") else { return 0 }
        defer { fclose(file) }
        var trimmed = 0
        var current: (start: UInt, end: UInt, eligible: Bool)? = nil
        var anonymous = false
        func finish() {
            if let mapping = current, mapping.eligible && !anonymous {
                let length = Int(mapping.end - mapping.start)
                if let address = UnsafeMutableRawPointer(bitPattern: mapping.start) {
                    if madvise(address, length, MADV_DONTNEED) == 0 { trimmed += length }
                }
            }
            current = nil
            anonymous = false
        }
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let text = line {
            let first = text.pointee
            let isHeader = (first >= 0x30 && first <= 0x39) || (first >= 0x61 && first <= 0x66)
            if isHeader {
                finish()
                // "start-end perms offset dev inode path", read in place: no String, and nothing of
                // Foundation's (its `contains` on a String pages in CoreFoundation's and ICU's tables).
                var cursor: UnsafeMutablePointer<CChar>? = nil
                let low = strtoul(text, &cursor, 16)
                guard let dash = cursor, dash.pointee == 0x2D else { continue }
                let high = strtoul(dash + 1, &cursor, 16)
                guard let space = cursor, space.pointee == 0x20, space[1] != 0, space[2] != 0 else { continue }
                // Read-only (the second permission letter is not "w") and file-backed: a path, not the
                // kernel's [vdso] or [vvar] (the header has no "/" before its path).
                current = (UInt(low), UInt(high), space[2] != 0x77 && strchr(space, 0x2F) != nil)
            } else if current != nil, strncmp(text, "Anonymous:", 10) == 0 {
                var value = text + 10
                while value.pointee == 0x20 { value += 1 }
                if atol(value) > 0 { anonymous = true }
            }
        }
        finish()
        return trimmed
    }

    /// The executable's `.rodata`: the toolchain's Swift objects mark their .rodata sections writable
    /// (protocol conformance descriptors and such, constants in fact), so the link puts it in the
    /// writable segment, the pass over read-only mappings never sees it, and what start-up read of it
    /// (Foundation's and ICU's tables, 1-4 MiB with fault-around) stayed resident. Nothing writes
    /// .rodata once the loader is done, so a page of it that `/proc/self/pagemap` shows present and
    /// still the file's (not copied on write) can go: runs of such pages are given back, pages the
    /// loader's relocations copied are kept. Returns the bytes given back.
    package static func trimReadOnlyData() -> Int {
        guard let range = readOnlyDataRange else { return 0 }
        return trimFilePages(in: range)
    }

    /// Gives back the pages of `range` (page-aligned, in a private file mapping) that are present and
    /// still the file's, in runs; a page copied on write is kept with its contents. Only for memory no
    /// thread writes any more: a write between the pagemap read and the madvise would be lost.
    package static func trimFilePages(in range: Range<UInt>) -> Int {
        openPageMap()
        let fd = pageMap
        let pageSize = UInt(sysconf(Int32(_SC_PAGESIZE)))
        guard fd >= 0, range.count > 0 else { return 0 }
        let pages = Int((range.upperBound - range.lowerBound) / pageSize)
        let entries = UnsafeMutablePointer<UInt64>.allocate(capacity: pages)
        defer { entries.deallocate() }
        let want = pages * 8
        let got = pread(fd, entries, want, off_t(range.lowerBound / pageSize * 8))
        guard got == want else { return 0 }
        // Bit 63: present; bit 61: a file page (not anonymous, that is not a private copy).
        let fileAndPresent: UInt64 = (1 << 63) | (1 << 61)
        var given = 0
        var runStart = -1
        for index in 0...pages {
            let drop = index < pages && entries[index] & fileAndPresent == fileAndPresent
            if drop {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                let address = UnsafeMutableRawPointer(bitPattern: range.lowerBound + UInt(runStart) * pageSize)
                let length = (index - runStart) * Int(pageSize)
                if madvise(address, length, MADV_DONTNEED) == 0 { given += length }
                runStart = -1
            }
        }
        return given
    }

    /// `/proc/self/pagemap`, kept open: a process that changed its user (the supervisor started as root)
    /// can no longer open it, so the supervisor opens it before it drops privileges.
    nonisolated(unsafe) static var pageMap: Int32 = -1

    package static func openPageMap() {
        if pageMap < 0 { pageMap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC) }
        _ = readOnlyDataRange
    }

    /// The whole pages of the running executable's `.rodata`, from its section headers and the load
    /// bias (nil when it cannot be read).
    nonisolated(unsafe) static var readOnlyDataRange: Range<UInt>? = findReadOnlyData()

    package static func findReadOnlyData() -> Range<UInt>? {
        let fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        func read<T: FixedWidthInteger>(_ type: T.Type, at offset: UInt64) -> T? {
            var value: T = 0
            let count = withUnsafeMutableBytes(of: &value) { pread(fd, $0.baseAddress, MemoryLayout<T>.size, off_t(offset)) }
            return count == MemoryLayout<T>.size ? T(littleEndian: value) : nil
        }
        // ELF64 little-endian only (x86-64, aarch64).
        guard read(UInt32.self, at: 0) == 0x464C_457F, read(UInt8.self, at: 4) == 2,
              let phoff = read(UInt64.self, at: 0x20), let shoff = read(UInt64.self, at: 0x28),
              let phentsize = read(UInt16.self, at: 0x36), let phnum = read(UInt16.self, at: 0x38),
              let shentsize = read(UInt16.self, at: 0x3A), let shnum = read(UInt16.self, at: 0x3C),
              let shstrndx = read(UInt16.self, at: 0x3E), shstrndx < shnum else { return nil }
        // The load bias: where the program headers are now, less where the file says (PT_PHDR).
        var bias: UInt? = nil
        let phdr = UInt(getauxval(UInt(AT_PHDR)))
        for index in 0..<UInt64(phnum) {
            let entry = phoff + index * UInt64(phentsize)
            if read(UInt32.self, at: entry) == 6 /* PT_PHDR */, let vaddr = read(UInt64.self, at: entry + 16) {
                bias = phdr &- UInt(vaddr)
            }
        }
        guard let bias, let names = read(UInt64.self, at: shoff + UInt64(shstrndx) * UInt64(shentsize) + 24) else { return nil }
        // ".rodata\0" is eight bytes: one little-endian UInt64.
        let wanted = UInt64(littleEndian: Array(".rodata\0".utf8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        for index in 0..<UInt64(shnum) {
            let header = shoff + index * UInt64(shentsize)
            guard let nameOffset = read(UInt32.self, at: header), let address = read(UInt64.self, at: header + 16),
                  let size = read(UInt64.self, at: header + 32) else { return nil }
            let matches = read(UInt64.self, at: names + UInt64(nameOffset)) == wanted
            guard matches, address != 0 else { continue }
            // Whole pages only: the first and the last may hold writable neighbours (.got.plt, .data).
            let pageSize = UInt(sysconf(Int32(_SC_PAGESIZE)))
            let low = (bias &+ UInt(address) + pageSize - 1) / pageSize * pageSize
            let high = (bias &+ UInt(address) &+ UInt(size)) / pageSize * pageSize
            return low < high ? low..<high : nil
        }
        return nil
    }
}
