import Foundation
import Testing

@testable import Server

/// The start-up trim gives back the read-only file pages a process has mapped, and the process goes on
/// running the code it needs (this test's own process is the one trimmed).
@Suite struct ResidentPagesTests {
    static func fileResidentKiB() -> Int {
        let text = (try? String(contentsOfFile: "/proc/self/smaps_rollup", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return field("Rss") - field("Anonymous")
    }

    @Test func theTrimGivesBackFilePagesAndTheProcessGoesOn() {
        let before = ResidentPagesTests.fileResidentKiB()
        let trimmed = ResidentPages.trimStartupMappings()
        let after = ResidentPagesTests.fileResidentKiB()
        #expect(trimmed > 0)
        #expect(after < before, "file-backed resident \(before) KiB before, \(after) KiB after")
        // Code and read-only data come back as they are used.
        #expect(["b", "a"].sorted() == ["a", "b"] && String(decoding: Array("ok".utf8), as: UTF8.self) == "ok")
    }
}

/// The executable's `.rodata` sits in a writable segment of the toolchain's link, so the pass over
/// read-only mappings skips it; its pages still shared with the file are given back one run at a time,
/// and a page copied on write keeps what was written to it.
@Suite struct ReadOnlyDataTrimTests {
    /// Pagemap entries (bit 63 present, bit 61 the file's page) of `count` pages from `address`.
    static func entries(_ address: UInt, _ count: Int) -> [UInt64] {
        let fd = open("/proc/self/pagemap", O_RDONLY)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var entries = [UInt64](repeating: 0, count: count)
        let got = entries.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count * 8, off_t(address / 4096 * 8)) }
        return got == count * 8 ? entries : []
    }

    @Test func theExecutablesReadOnlyDataIsFound() throws {
        let range = try #require(ResidentPages.findReadOnlyData(), "this test binary's .rodata")
        #expect(range.lowerBound % 4096 == 0 && range.upperBound % 4096 == 0 && range.count > 0)
        // Inside a mapping of this executable.
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let maps = try String(contentsOfFile: "/proc/self/maps", encoding: .utf8).split(separator: "\n")
        let inside = maps.contains { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[5] == exe else { return false }
            let bounds = fields[0].split(separator: "-").compactMap { UInt($0, radix: 16) }
            return bounds.count == 2 && bounds[0] <= range.lowerBound && range.lowerBound < bounds[1]
        }
        #expect(inside, "\(range) in a mapping of \(exe)")
    }

    /// A private, writable mapping of a file (as the executable's data segment is): pages only read go,
    /// pages written stay with what was written, and what went reads back as the file.
    @Test func filePagesGoAndWrittenPagesStay() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ws-pages-\(UUID().uuidString)").path
        defer { unlink(path) }
        let pages = 64
        let contents = (0..<pages * 4096).map { UInt8(truncatingIfNeeded: $0 / 4096 &* 7 &+ $0 % 251) }
        try Data(contents).write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        let mapping = try #require(mmap(nil, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0))
        #expect(mapping != MAP_FAILED)
        defer { munmap(mapping, pages * 4096) }
        let bytes = mapping.assumingMemoryBound(to: UInt8.self)
        var sum = 0
        for page in 0..<pages { sum &+= Int(bytes[page * 4096 + 1]) }
        bytes[3 * 4096 + 5] = 0xAB
        bytes[40 * 4096] = 0xCD
        let start = UInt(bitPattern: mapping)
        let before = ReadOnlyDataTrimTests.entries(start, pages)
        #expect(before.count == pages && before.allSatisfy { $0 >> 63 & 1 == 1 }, "every page read is present")
        let given = ResidentPages.trimFilePages(in: start..<start + UInt(pages * 4096))
        #expect(given == (pages - 2) * 4096)
        let after = ReadOnlyDataTrimTests.entries(start, pages)
        #expect(after.count == pages)
        for (page, entry) in after.enumerated() {
            if page == 3 || page == 40 {
                #expect(entry >> 63 & 1 == 1 && entry >> 61 & 1 == 0, "page \(page), written, stays (anonymous)")
            } else {
                #expect(entry >> 63 & 1 == 0, "page \(page), only read, is given back")
            }
        }
        #expect(bytes[3 * 4096 + 5] == 0xAB && bytes[40 * 4096] == 0xCD)
        var again = 0
        for page in 0..<pages { again &+= Int(bytes[page * 4096 + 1]) }
        #expect(again == sum)
        #expect(bytes[3 * 4096 + 6] == contents[3 * 4096 + 6])
    }
}
