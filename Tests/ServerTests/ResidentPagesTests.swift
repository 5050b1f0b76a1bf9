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
/// read-only mappings skips it; its pages still shared with the file are given back one by one.
@Suite struct ReadOnlyDataTrimTests {
    /// KiB of `.rodata` present in this process and still the file's (pagemap bits 63 and 61).
    static func presentFileKiB(_ range: Range<UInt>) -> Int {
        let fd = open("/proc/self/pagemap", O_RDONLY)
        guard fd >= 0 else { return -1 }
        defer { close(fd) }
        let pages = Int((range.upperBound - range.lowerBound) / 4096)
        var entries = [UInt64](repeating: 0, count: pages)
        let got = entries.withUnsafeMutableBytes { pread(fd, $0.baseAddress, pages * 8, off_t(range.lowerBound / 4096 * 8)) }
        guard got == pages * 8 else { return -1 }
        return entries.filter { $0 & (1 << 63 | 1 << 61) == (1 << 63 | 1 << 61) }.count * 4
    }

    @Test func pagesOfReadOnlyDataAreGivenBackAndReadAgain() throws {
        let range = try #require(ResidentPages.findReadOnlyData(), "this test binary's .rodata")
        #expect(range.lowerBound % 4096 == 0 && range.upperBound % 4096 == 0)
        // Read every page of it, as start-up reading tables would.
        var sum: UInt8 = 0
        var address = range.lowerBound
        while address < range.upperBound {
            sum &+= UnsafePointer<UInt8>(bitPattern: address)!.pointee
            address += 4096
        }
        let before = ReadOnlyDataTrimTests.presentFileKiB(range)
        let given = ResidentPages.trimReadOnlyData()
        let after = ReadOnlyDataTrimTests.presentFileKiB(range)
        #expect(given > 0)
        #expect(before > 0 && after < before / 2, ".rodata present and shared with the file: \(before) KiB before, \(after) KiB after")
        // The contents are the file's: reading again gives the same bytes.
        var again: UInt8 = 0
        address = range.lowerBound
        while address < range.upperBound {
            again &+= UnsafePointer<UInt8>(bitPattern: address)!.pointee
            address += 4096
        }
        #expect(again == sum)
    }
}
