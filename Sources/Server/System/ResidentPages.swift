import Glibc

/// Gives back the page-table entries of the read-only file mappings a process touched while it started
/// (the binary's code and the libraries', mapped by the loader, relocation and the Swift runtime's
/// start-up, each fault mapping 16 pages around it), so its resident set is what its loop uses. The
/// pages stay in the page cache (shared with every other process), so nothing is read again from disk;
/// a page the loop needs comes back with one minor fault, one page at a time (MADV_RANDOM turns the
/// kernel's fault-around off for these mappings).
///
/// Only mappings with no anonymous (copied-on-write) page are touched: dropping a private mapping's
/// PTEs discards its private copies, and a relocated read-only region (RELRO) holds such copies.
enum ResidentPages {
    /// When to trim once more (monotonic ms; 0: not planned): a few seconds into the loop, after the
    /// first-time work of its first ticks (spawning workers, the first heartbeats, the first requests).
    nonisolated(unsafe) static var againAt: Int64 = 0

    /// Trims now, and plans one more trim `later` milliseconds on (`trimIfDue` from the loop's tick).
    static func trim(thenAgainIn later: Int64) {
        trimStartupMappings()
        againAt = monotonicMilliseconds() + later
    }

    /// The planned trim, when it is due.
    @inline(__always)
    static func trimIfDue(_ now: Int64) {
        if againAt != 0 && now >= againAt {
            againAt = 0
            trimStartupMappings()
        }
    }

    /// Trims what can be trimmed; returns the bytes of the mappings trimmed.
    @discardableResult
    static func trimStartupMappings() -> Int {
        guard let file = fopen("/proc/self/smaps", "r") else { return 0 }
        defer { fclose(file) }
        var trimmed = 0
        var current: (start: UInt, end: UInt, eligible: Bool)? = nil
        var anonymous = false
        func finish() {
            if let mapping = current, mapping.eligible && !anonymous {
                let length = Int(mapping.end - mapping.start)
                if let address = UnsafeMutableRawPointer(bitPattern: mapping.start) {
                    _ = madvise(address, length, MADV_RANDOM)
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
                // start-end perms offset dev inode path
                let parts = String(cString: text).split(separator: " ", omittingEmptySubsequences: true)
                guard parts.count >= 6, case let range = parts[0].split(separator: "-"), range.count == 2,
                      let low = UInt(range[0], radix: 16), let high = UInt(range[1], radix: 16) else { continue }
                // Read-only and file-backed (not the kernel's [vdso] or [vvar]).
                current = (low, high, !parts[1].contains("w") && parts[5].hasPrefix("/"))
            } else if current != nil, strncmp(text, "Anonymous:", 10) == 0 {
                var value = text + 10
                while value.pointee == 0x20 { value += 1 }
                if atol(value) > 0 { anonymous = true }
            }
        }
        finish()
        return trimmed
    }
}
