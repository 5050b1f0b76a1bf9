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
