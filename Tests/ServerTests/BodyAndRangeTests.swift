import Testing

@testable import Server

/// Feeds `text` to a chunked reader in pieces of `split` bytes; returns the result and bytes consumed.
func readChunked(_ text: String, split: Int = .max, max: Int64 = 0, limits: BodyReader.Limits = BodyReader.Limits())
    -> (BodyReader.Result, Int)
{
    var reader = BodyReader(chunkedWithMaxContent: max, limits: limits)
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let end = Swift.min(bytes.count, offset + split)
        let result = bytes[offset..<end].withUnsafeBytes { reader.consume($0) }
        switch result {
        case .needMore: offset = end
        case .done(let consumed): return (.done(consumed: offset + consumed), offset + consumed)
        default: return (result, offset)
        }
    }
    return (.needMore, offset)
}

struct ChunkCase: CustomTestStringConvertible, Sendable {
    let section: String
    let body: String
    /// nil: the body is complete at the end of `body` minus `rest`; otherwise the failure.
    let failure: BodyReader.Result?
    let rest: String
    init(_ section: String, _ body: String, _ failure: BodyReader.Result? = nil, rest: String = "") {
        self.section = section
        self.body = body
        self.failure = failure
        self.rest = rest
    }
    var testDescription: String { "\(section): \(body.debugDescription.prefix(50))" }
}

@Suite struct BodyReaderTests {
    static let cases: [ChunkCase] = [
        ChunkCase("RFC 9112 7.1 one chunk", "5\r\nhello\r\n0\r\n\r\n"),
        ChunkCase("RFC 9112 7.1 hex sizes, any case", "a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n"),
        ChunkCase("RFC 9112 7.1 the next request follows", "1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n", rest: "GET / HTTP/1.1\r\n"),
        ChunkCase("RFC 9112 7.1.1 extensions", "5;name=value;flag\r\nhello\r\n0;last\r\n\r\n"),
        ChunkCase("RFC 9112 7.1.1 quoted extension", "5;n=\"a;b\"\r\nhello\r\n0\r\n\r\n"),
        ChunkCase("RFC 9112 7.1.2 trailer fields", "1\r\nx\r\n0\r\nChecksum: abc\r\nX-More: y\r\n\r\n"),
        ChunkCase("RFC 9112 7.1 no size", "\r\nx\r\n0\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1 non-hex size", "g\r\nx\r\n0\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1 negative size", "-1\r\nx\r\n0\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1 0x prefix", "0x1\r\nx\r\n0\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1 size overflow", "fffffffffffffffff\r\nx\r\n", .invalid),
        ChunkCase("RFC 9112 7.1 bare LF after size", "1\nx\r\n0\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1 data longer than its size", "1\r\nxy\r\n0\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1 bare LF after data", "1\r\nx\n0\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1.1 control byte in an extension", "1;a\u{01}\r\nx\r\n0\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1.1 extension beyond the limit", "1;" + String(repeating: "e", count: 5000) + "\r\nx\r\n0\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1.2 obs-fold in a trailer", "0\r\nA: b\r\n c\r\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1.2 bare LF in trailers", "0\r\nA: b\n\r\n", .invalid),
        ChunkCase("RFC 9112 7.1.2 trailers beyond the limit", "0\r\nA: " + String(repeating: "b", count: 20_000) + "\r\n\r\n", .invalid),
    ]

    @Test(arguments: cases)
    func rule(_ row: ChunkCase) {
        // Whole, and one byte at a time: any split of the input gives the same answer.
        for split in [Int.max, 1, 3] {
            let (result, consumed) = readChunked(row.body, split: split)
            if let failure = row.failure {
                #expect(result == failure, "split \(split)")
            } else {
                #expect(result == .done(consumed: row.body.utf8.count - row.rest.utf8.count), "split \(split)")
                #expect(consumed == row.body.utf8.count - row.rest.utf8.count)
            }
        }
    }

    @Test func contentBeyondTheLimitIsTooLarge() {
        #expect(readChunked("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", max: 8).0 == .tooLarge)
        #expect(readChunked("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", max: 10).0 == .done(consumed: 25))
    }

    @Test func fixedLengthBodies() {
        var reader = BodyReader(contentLength: 10)
        #expect(Array("hello".utf8).withUnsafeBytes { reader.consume($0) } == .needMore)
        #expect(Array("worldGET".utf8).withUnsafeBytes { reader.consume($0) } == .done(consumed: 5))
        var empty = BodyReader(contentLength: 0)
        #expect(Array("GET".utf8).withUnsafeBytes { empty.consume($0) } == .done(consumed: 0))
    }
}

func resolve(_ header: String, length: Int64, limit: Int = 16) -> ByteRanges.Outcome {
    let output = UnsafeMutablePointer<(Int64, Int64)>.allocate(capacity: limit)
    defer { output.deallocate() }
    let bytes = Array(header.utf8)
    return bytes.withUnsafeBytes {
        ByteRanges.resolve($0, ByteSpan(start: 0, end: bytes.count), length: length, limit: limit, into: output)
    }
}

func ranges(_ header: String, length: Int64, gap: Int64 = 80) -> [[Int64]] {
    let output = UnsafeMutablePointer<(Int64, Int64)>.allocate(capacity: 16)
    defer { output.deallocate() }
    let bytes = Array(header.utf8)
    let outcome = bytes.withUnsafeBytes {
        ByteRanges.resolve($0, ByteSpan(start: 0, end: bytes.count), length: length, limit: 16, gap: gap, into: output)
    }
    guard case .ranges(let count) = outcome else { return [] }
    return (0..<count).map { [output[$0].0, output[$0].1] }
}

@Suite struct RangeTests {
    @Test func rfc9110Section14() {
        // 14.1.2: first-last, open, suffix; last clamped to the length.
        #expect(ranges("bytes=0-499", length: 10_000) == [[0, 499]])
        #expect(ranges("bytes=9500-", length: 10_000) == [[9500, 9999]])
        #expect(ranges("bytes=-500", length: 10_000) == [[9500, 9999]])
        #expect(ranges("bytes=0-99999", length: 10_000) == [[0, 9999]])
        #expect(ranges("bytes=-20000", length: 10_000) == [[0, 9999]])
        #expect(ranges("BYTES = 0-1", length: 10) == [])  // no whitespace around "="
        #expect(ranges("Bytes=0-1", length: 10) == [[0, 1]])  // the unit is case-insensitive
        // 14.2: overlapping and nearby ranges coalesced, in order of position.
        #expect(ranges("bytes=500-600,601-999", length: 10_000) == [[500, 999]])
        #expect(ranges("bytes=500-700,601-999", length: 10_000) == [[500, 999]])
        #expect(ranges("bytes=5000-5099,0-99", length: 10_000) == [[0, 99], [5000, 5099]])
        #expect(ranges("bytes=0-0,-1", length: 10_000) == [[0, 0], [9999, 9999]])
        #expect(ranges("bytes=0-9,20-29", length: 100, gap: 0) == [[0, 9], [20, 29]])
        #expect(ranges("bytes=0-9,20-29,5-25", length: 100, gap: 0) == [[0, 29]])
        // Files past 4 GiB.
        #expect(ranges("bytes=4294967296-", length: 5 << 30) == [[4_294_967_296, (5 << 30) - 1]])
    }

    @Test func unsatisfiableAndIgnored() {
        #expect(resolve("bytes=10000-", length: 10_000) == .unsatisfiable)
        #expect(resolve("bytes=-0", length: 10_000) == .unsatisfiable)
        #expect(resolve("bytes=0-1", length: 0) == .unsatisfiable)
        #expect(resolve("bytes=20000-30000,40000-", length: 10_000) == .unsatisfiable)
        #expect(resolve("bytes=5-1", length: 10_000) == .ignore)  // last before first: invalid
        #expect(resolve("bytes=a-b", length: 10_000) == .ignore)
        #expect(resolve("items=0-1", length: 10_000) == .ignore)
        #expect(resolve("bytes=", length: 10_000) == .ignore)
        #expect(resolve("bytes=-", length: 10_000) == .ignore)
        #expect(resolve("bytes=1-2,3-4,5-6", length: 10_000, limit: 2) == .ignore)  // more than the limit
        // Found by the fuzzer: a number past Int64 once trapped the worker; it is now simply invalid.
        #expect(resolve("bytes=" + String(repeating: "9", count: 40) + "0-9", length: 10_000) == .ignore)
        #expect(resolve("bytes=0-" + String(repeating: "9", count: 19), length: 10_000) == .ignore)
        #expect(resolve("bytes=0-999999999999999999", length: 10_000) == .ranges(1))  // 18 digits are fine
    }
}

@Suite struct ValidatorTests {
    func matches(_ list: String, _ tag: String, weak: Bool) -> Bool {
        let bytes = Array(list.utf8)
        let tagBytes = Array(tag.utf8)
        return bytes.withUnsafeBytes { b in
            tagBytes.withUnsafeBytes { EntityTags.list(b, ByteSpan(start: 0, end: bytes.count), matches: $0, weak: weak) }
        }
    }

    @Test func rfc9110Section8_8_3() {
        #expect(matches("\"a\"", "\"a\"", weak: false))
        #expect(matches("\"x\", \"a\"", "\"a\"", weak: false))
        #expect(!matches("W/\"a\"", "\"a\"", weak: false))  // strong comparison: a weak tag never matches
        #expect(matches("W/\"a\"", "\"a\"", weak: true))  // weak comparison ignores W/
        #expect(matches("*", "\"a\"", weak: false))
        #expect(!matches("\"ab\"", "\"a\"", weak: true))
        #expect(!matches("a", "\"a\"", weak: true))  // unquoted: malformed
        #expect(!matches("\"a", "\"a\"", weak: true))
    }

    func date(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { HTTPDate.parse($0, ByteSpan(start: 0, end: bytes.count)) }
    }

    @Test func rfc9110Section5_6_7Dates() {
        // The three forms a recipient must accept, all the same instant.
        #expect(date("Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        #expect(date("Sunday, 06-Nov-94 08:49:37 GMT") == 784_111_777)
        #expect(date("Sun Nov  6 08:49:37 1994") == 784_111_777)
        #expect(date("Thu, 01 Jan 1970 00:00:00 GMT") == 0)
        #expect(date("Sun, 06 Nov 1994 08:49:37 UTC") == nil)
        #expect(date("Sun, 6 Nov 1994 08:49:37 GMT") == nil)
        #expect(date("yesterday") == nil)
        #expect(date("") == nil)
        // What the server writes, it reads back.
        let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: 64)
        defer { scratch.deallocate() }
        for seconds: Int64 in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            var writer = ByteWriter(base: scratch, capacity: 64)
            HTTPDate.write(seconds, into: &writer)
            #expect(date(String(decoding: UnsafeBufferPointer(start: scratch, count: writer.count), as: UTF8.self)) == seconds)
        }
    }
}
