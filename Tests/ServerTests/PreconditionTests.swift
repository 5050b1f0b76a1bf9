import Testing

@testable import Server

/// The representation every row is evaluated against: this ETag and Last-Modified.
let currentTag = "\"5f-400-1\""
/// Sun, 06 Nov 1994 08:49:37 GMT.
let lastModified: Int64 = 784_111_777

/// Parses a GET (or the method given) with `fields`, then hands the head and its bytes to `body`.
func withRequest<R>(_ fields: [String], method: String = "GET", _ body: (RequestHead, UnsafeRawBufferPointer) -> R) -> R {
    let text = "\(method) /file HTTP/1.1\r\nHost: example.test\r\n" + fields.map { $0 + "\r\n" }.joined() + "\r\n"
    let bytes = Array(text.utf8)
    return bytes.withUnsafeBytes { raw in
        var head = RequestHead()
        guard case .complete = RequestParser.parse(raw, limits: ParserLimits(), into: &head) else {
            Issue.record("the request did not parse: \(text.debugDescription)")
            return body(head, raw)
        }
        return body(head, raw)
    }
}

func withValidators<R>(_ body: (Validators) -> R) -> R {
    let tag = Array(currentTag.utf8)
    return tag.withUnsafeBytes { body(Validators(etag: $0, lastModified: lastModified)) }
}

/// One row of a table: the RFC section, the request's fields (and method), what it should come to and,
/// for ranges, which bytes.
struct ConditionalCase<Outcome: Equatable & Sendable>: CustomTestStringConvertible, Sendable {
    let section: String
    let fields: [String]
    let method: String
    let outcome: Outcome
    let ranges: [ClosedRange<Int64>]
    init(_ section: String, _ fields: [String], method: String = "GET", _ outcome: Outcome, _ ranges: [ClosedRange<Int64>] = []) {
        self.section = section
        self.fields = fields
        self.method = method
        self.outcome = outcome
        self.ranges = ranges
    }
    var testDescription: String { "\(section): \(method) \(fields.joined(separator: " | "))" }
}

typealias PreconditionCase = ConditionalCase<Preconditions.Outcome>
typealias RangeCase = ConditionalCase<RangeSelection.Outcome>

/// RFC 9110 section 13.2.2's order, one row a case: no sockets, no files.
@Suite struct PreconditionTests {
    static let cases: [PreconditionCase] = [
        PreconditionCase("RFC 9110 13.2.2 no preconditions", [], .proceed),
        PreconditionCase("RFC 9110 13.1.1 If-Match the current tag", ["If-Match: \(currentTag)"], .proceed),
        PreconditionCase("RFC 9110 13.1.1 If-Match *", ["If-Match: *"], .proceed),
        PreconditionCase("RFC 9110 13.1.1 If-Match in a list", ["If-Match: \"old\", \(currentTag)"], .proceed),
        PreconditionCase("RFC 9110 13.1.1 If-Match another tag", ["If-Match: \"old\""], .preconditionFailed),
        PreconditionCase("RFC 9110 13.1.1 If-Match is strong: W/ never matches", ["If-Match: W/\(currentTag)"], .preconditionFailed),
        PreconditionCase("RFC 9110 13.1.1 If-Match malformed", ["If-Match: 5f-400-1"], .preconditionFailed),
        PreconditionCase("RFC 9110 13.1.1 If-Match split over two lines", ["If-Match: \"old\"", "If-Match: \(currentTag)"], .proceed),
        PreconditionCase("RFC 9110 13.1.4 If-Unmodified-Since at Last-Modified", ["If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT"], .proceed),
        PreconditionCase("RFC 9110 13.1.4 If-Unmodified-Since before it", ["If-Unmodified-Since: Sun, 06 Nov 1994 08:49:36 GMT"], .preconditionFailed),
        PreconditionCase("RFC 9110 13.1.4 If-Unmodified-Since an invalid date is ignored", ["If-Unmodified-Since: yesterday"], .proceed),
        PreconditionCase("RFC 9110 13.2.2 step 1 If-Match wins over If-Unmodified-Since",
                         ["If-Match: \(currentTag)", "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:36 GMT"], .proceed),
        PreconditionCase("RFC 9110 13.1.2 If-None-Match the current tag", ["If-None-Match: \(currentTag)"], .notModified),
        PreconditionCase("RFC 9110 13.1.2 If-None-Match is weak: W/ matches", ["If-None-Match: W/\(currentTag)"], .notModified),
        PreconditionCase("RFC 9110 13.1.2 If-None-Match *", ["If-None-Match: *"], .notModified),
        PreconditionCase("RFC 9110 13.1.2 If-None-Match another tag", ["If-None-Match: \"old\""], .proceed),
        PreconditionCase("RFC 9110 13.1.2 If-None-Match split over two lines", ["If-None-Match: \"a\"", "If-None-Match: \"b\", \(currentTag)"], .notModified),
        PreconditionCase("RFC 9110 13.1.3 If-Modified-Since at Last-Modified", ["If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT"], .notModified),
        PreconditionCase("RFC 9110 13.1.3 If-Modified-Since later", ["If-Modified-Since: Sun, 06 Nov 1994 08:49:38 GMT"], .notModified),
        PreconditionCase("RFC 9110 13.1.3 If-Modified-Since earlier", ["If-Modified-Since: Sun, 06 Nov 1994 08:49:36 GMT"], .proceed),
        PreconditionCase("RFC 9110 5.6.7 If-Modified-Since in RFC 850 form", ["If-Modified-Since: Sunday, 06-Nov-94 08:49:37 GMT"], .notModified),
        PreconditionCase("RFC 9110 5.6.7 If-Modified-Since in asctime form", ["If-Modified-Since: Sun Nov  6 08:49:37 1994"], .notModified),
        PreconditionCase("RFC 9110 13.1.3 If-Modified-Since an invalid date is ignored", ["If-Modified-Since: soon"], .proceed),
        PreconditionCase("RFC 9110 13.2.2 step 3 If-None-Match wins over If-Modified-Since",
                         ["If-None-Match: \"old\"", "If-Modified-Since: Sun, 06 Nov 1994 08:49:38 GMT"], .proceed),
        PreconditionCase("RFC 9110 13.2.2 412 before 304",
                         ["If-Match: \"old\"", "If-None-Match: \(currentTag)"], .preconditionFailed),
    ]

    @Test(arguments: cases)
    func rule(_ row: PreconditionCase) {
        let outcome = withValidators { validators in
            withRequest(row.fields) { head, bytes in Preconditions.evaluate(head, bytes, validators) }
        }
        #expect(outcome == row.outcome)
    }
}

/// Which bytes of a 1000-byte representation a request gets (RFC 9110 section 14), one row a case.
@Suite struct RangeSelectionTests {
    static let cases: [RangeCase] = [
        RangeCase("RFC 9110 14.2 no Range", [], .whole),
        RangeCase("RFC 9110 14.1.2 one range", ["Range: bytes=0-99"], .ranges(1), [0...99]),
        RangeCase("RFC 9110 14.1.2 open-ended", ["Range: bytes=900-"], .ranges(1), [900...999]),
        RangeCase("RFC 9110 14.1.2 suffix", ["Range: bytes=-100"], .ranges(1), [900...999]),
        RangeCase("RFC 9110 14.1.2 past the end is cut", ["Range: bytes=950-2000"], .ranges(1), [950...999]),
        RangeCase("RFC 9110 14.1.1 the unit is case-insensitive", ["Range: Bytes=0-0"], .ranges(1), [0...0]),
        RangeCase("RFC 9110 14.1.2 several, sorted", ["Range: bytes=500-599, 0-99"], .ranges(2), [0...99, 500...599]),
        RangeCase("RFC 9110 15.3.7.2 overlapping ranges merged", ["Range: bytes=0-99, 50-149"], .ranges(1), [0...149]),
        RangeCase("RFC 9110 15.3.7.2 nearby ranges merged", ["Range: bytes=0-99, 120-199"], .ranges(1), [0...199]),
        RangeCase("RFC 9110 14.1.2 none satisfiable: 416", ["Range: bytes=1000-1099"], .unsatisfiable),
        RangeCase("RFC 9110 14.1.2 a suffix of zero: 416", ["Range: bytes=-0"], .unsatisfiable),
        RangeCase("RFC 9110 14.1.2 last before first: ignored", ["Range: bytes=99-0"], .whole),
        RangeCase("RFC 9110 14.1.1 another unit: ignored", ["Range: items=0-9"], .whole),
        RangeCase("RFC 9110 14.2 malformed: ignored", ["Range: bytes=a-b"], .whole),
        RangeCase("RFC 9110 14.2 more ranges than the limit: ignored", ["Range: bytes=0-1,3-4,6-7,9-10,12-13"], .whole),
        RangeCase("RFC 9110 14.2 only for GET", ["Range: bytes=0-99"], method: "HEAD", .whole),
        RangeCase("RFC 9110 14.2 sent twice: ignored", ["Range: bytes=0-9", "Range: bytes=10-19"], .whole),
        RangeCase("RFC 9110 13.1.5 If-Range with the current tag", ["Range: bytes=0-9", "If-Range: \(currentTag)"], .ranges(1), [0...9]),
        RangeCase("RFC 9110 13.1.5 If-Range with another tag", ["Range: bytes=0-9", "If-Range: \"old\""], .whole),
        RangeCase("RFC 9110 13.1.5 If-Range is strong: W/ never applies", ["Range: bytes=0-9", "If-Range: W/\(currentTag)"], .whole),
        RangeCase("RFC 9110 13.1.5 If-Range with Last-Modified", ["Range: bytes=0-9", "If-Range: Sun, 06 Nov 1994 08:49:37 GMT"], .ranges(1), [0...9]),
        RangeCase("RFC 9110 13.1.5 If-Range with another date", ["Range: bytes=0-9", "If-Range: Sun, 06 Nov 1994 08:49:38 GMT"], .whole),
    ]

    @Test(arguments: cases)
    func rule(_ row: RangeCase) {
        let output = UnsafeMutablePointer<(Int64, Int64)>.allocate(capacity: 4)
        defer { output.deallocate() }
        let outcome = withValidators { validators in
            withRequest(row.fields, method: row.method) { head, bytes in
                RangeSelection.select(head, bytes, validators, length: 1000, limit: 4, into: output)
            }
        }
        #expect(outcome == row.outcome)
        if case .ranges(let count) = outcome {
            #expect((0..<count).map { output[$0].0...output[$0].1 } == row.ranges)
        }
    }
}
