import Foundation
import Testing

@testable import Server

/// The fuzzer's corpus (Fuzz/corpus) replayed through the same invariant checks the fuzz target runs,
/// so every input that ever mattered is checked on every test run, sanitizer or not.
@Suite struct FuzzCorpusTests {
    @Test func corpusKeepsItsInvariants() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Fuzz/corpus").standardized
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names.count >= 10)
        for name in names {
            let data = try Data(contentsOf: directory.appendingPathComponent(name))
            data.withUnsafeBytes { ParserCheck.run($0) }
        }
    }

    /// A client may send the CR and LF of an empty line before the request line in two segments.
    @Test func aSplitEmptyLineIsIncomplete() {
        #expect(parse("\r") == .incomplete)
        guard case .complete = parse("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") else { Issue.record("complete"); return }
    }

    /// Limits are decided the same way whether the bytes arrive at once or in pieces.
    @Test func limitsDoNotDependOnHowBytesArrive() {
        let limits = ParserLimits(requestLine: 17, headerBytes: 2048, headerCount: 32, headerField: 10)
        let exact = "GET /abc HTTP/1.1\r\nHost: a\r\nX: 1234567\r\n\r\n"  // line of 17, field of 10
        guard case .complete = parse(exact, limits: limits) else { Issue.record("exact limits"); return }
        let bytes = Array(exact.utf8)
        for cut in 1..<bytes.count {
            #expect(Array(bytes[0..<cut]).withUnsafeBytes { RequestParser.parse($0, limits: limits) } == .incomplete, "cut \(cut)")
        }
    }
}
