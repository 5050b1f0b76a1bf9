import Testing

@testable import Server

/// One row a rule, each with the RFC section it comes from.
struct ParserCase: CustomTestStringConvertible, Sendable {
    let section: String
    let request: String
    let expected: Expected
    enum Expected: Equatable, Sendable {
        case complete
        case incomplete
        case invalid(HTTPStatus)
    }
    init(_ section: String, _ request: String, _ expected: Expected) {
        self.section = section
        self.request = request
        self.expected = expected
    }
    var testDescription: String { "\(section): \(request.debugDescription.prefix(60))" }
}

func parse(_ text: String, limits: ParserLimits = ParserLimits()) -> ParseResult {
    var bytes = Array(text.utf8)
    return bytes.withUnsafeMutableBytes { RequestParser.parse(UnsafeRawBufferPointer($0), limits: limits) }
}

@Suite struct RequestParserTests {
    static let cases: [ParserCase] = [
        ParserCase("RFC 9112 3", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", .complete),
        ParserCase("RFC 9112 3", "GET / HTTP/1.0\r\n\r\n", .complete),
        ParserCase("RFC 9112 2.2 empty lines before request", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", .complete),
        ParserCase("RFC 9112 3.2 missing Host in 1.1", "GET / HTTP/1.1\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2 two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 2.2 bare LF ends a line", "GET / HTTP/1.1\nHost: a\n\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 2.2 bare LF in a field", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 2.2 bare CR", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 5.2 obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 5.1 whitespace before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 5.1 invalid token in name", "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 5.5 control byte in value", "GET / HTTP/1.1\r\nHost: a\u{01}b\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 5.5 tab in value is fine", "GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n", .complete),
        ParserCase("RFC 9112 6.3 CL with TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 8.6 differing Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 8.6 Content-Length not digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 8.6 same Content-Length twice", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", .complete),
        ParserCase("RFC 9112 6.3 last coding not chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 6.3 chunked then gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 6.1 unsupported coding before chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .invalid(.notImplemented)),
        ParserCase("RFC 9112 6.1 chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 6.1 codings over two lines form one list", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", .invalid(.notImplemented)),
        ParserCase("RFC 9112 6.1 chunked, any case", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n", .complete),
        ParserCase("RFC 9112 6.1 empty Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 6.1 chunked with a smuggled suffix", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 6.3 TE with CL, TE first", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 8.6 Content-Length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 8.6 Content-Length with a sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 8.6 Content-Length overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 10.1.1 100-continue", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", .complete),
        ParserCase("RFC 9110 10.1.1 other expectation", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", .invalid(.expectationFailed)),
        ParserCase("RFC 9112 5 field line too long", "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "v", count: 9000) + "\r\n\r\n", .invalid(.headerFieldsTooLarge)),
        ParserCase("RFC 9112 3.2 Host with absolute-form still required", "GET http://a/ HTTP/1.1\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2.4 OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", .complete),
        ParserCase("RFC 9112 2.2 NUL in a field value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 2.2 CR without LF after the request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 5 empty field name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 5.2 obs-fold first line", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2 Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2 Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2 Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2 Host with a bad port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2 Host with a port", "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", .complete),
        ParserCase("RFC 9112 3.2 Host as an IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", .complete),
        ParserCase("RFC 9112 3.2 empty Host", "GET / HTTP/1.1\r\nHost: \r\n\r\n", .complete),
        ParserCase("RFC 9112 3.2 unclosed IP literal", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2 two Hosts, different case", "GET / HTTP/1.1\r\nhost: a\r\nHOST: a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 6.1 TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9110 9.1 unknown method", "BREW / HTTP/1.1\r\nHost: a\r\n\r\n", .invalid(.notImplemented)),
        ParserCase("RFC 9110 9.1 methods are case-sensitive", "get / HTTP/1.1\r\nHost: a\r\n\r\n", .invalid(.notImplemented)),
        ParserCase("RFC 9112 2.3 HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", .invalid(.versionNotSupported)),
        ParserCase("RFC 9110 2.5 HTTP/1.2 is processed as 1.1", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", .complete),
        ParserCase("RFC 9110 2.5 HTTP/1.9 still needs its Host, as 1.1 does", "GET / HTTP/1.9\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 2.3 HTTP/0.9 in a request line", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", .invalid(.versionNotSupported)),
        ParserCase("RFC 9112 2.3 malformed version", "GET / HTTX/1.1\r\nHost: a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3 two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2 space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3.2 non-ASCII in target", "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n", .invalid(.badRequest)),
        ParserCase("RFC 9112 3 incomplete line", "GET / HTTP/1.1\r\nHo", .incomplete),
        ParserCase("RFC 9112 3 no blank line yet", "GET / HTTP/1.1\r\nHost: a\r\n", .incomplete),
        ParserCase("RFC 9112 3 garbage rejected early", "\u{16}\u{03}\u{01}\u{02}", .invalid(.badRequest)),
    ]

    @Test(arguments: cases)
    func rule(_ row: ParserCase) {
        switch (parse(row.request), row.expected) {
        case (.complete, .complete), (.incomplete, .incomplete): break
        case (.invalid(let got), .invalid(let want)): #expect(got == want)
        case (let got, _): Issue.record("got \(got), expected \(row.expected)")
        }
    }

    @Test func fieldsAreFound() throws {
        let text = "GET /x?y HTTP/1.1\r\nHost: example\r\nUser-Agent: curl/8 \r\nReferer: http://r/\r\nConnection: close\r\n\r\nGET"
        var bytes = Array(text.utf8)
        let result = bytes.withUnsafeMutableBytes { RequestParser.parse(UnsafeRawBufferPointer($0), limits: ParserLimits()) }
        guard case .complete(let head) = result else { Issue.record("not complete: \(result)"); return }
        func string(_ span: ByteSpan) -> String { String(decoding: bytes[span.start..<span.end], as: UTF8.self) }
        #expect(head.method == .get)
        #expect(string(head.target) == "/x?y")
        #expect(string(head.userAgent) == "curl/8")
        #expect(string(head.referer) == "http://r/")
        #expect(string(head.requestLine) == "GET /x?y HTTP/1.1")
        #expect(head.keepAlive == false)
        #expect(head.headLength == text.utf8.count - 3)
    }

    @Test func keepAliveByVersion() {
        guard case .complete(let h10) = parse("GET / HTTP/1.0\r\n\r\n") else { Issue.record("1.0"); return }
        #expect(h10.keepAlive == false)
        guard case .complete(let h10k) = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") else { Issue.record("1.0 ka"); return }
        #expect(h10k.keepAlive == true)
        guard case .complete(let h11) = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n") else { Issue.record("1.1"); return }
        #expect(h11.keepAlive == false)
    }

    @Test func validatorsAndRangesAreFound() throws {
        let text = "GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
            + "If-Match: *\r\nIf-Unmodified-Since: y\r\nRange: bytes=0-1\r\nIf-Range: \"z\"\r\nIf-None-Match: \"w\"\r\n\r\n"
        var bytes = Array(text.utf8)
        let result = bytes.withUnsafeMutableBytes { RequestParser.parse(UnsafeRawBufferPointer($0), limits: ParserLimits()) }
        guard case .complete(let head) = result else { Issue.record("not complete: \(result)"); return }
        func string(_ span: ByteSpan) -> String { String(decoding: bytes[span.start..<span.end], as: UTF8.self) }
        #expect(string(head.ifModifiedSince) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(string(head.ifMatch) == "*")
        #expect(string(head.ifUnmodifiedSince) == "y")
        #expect(string(head.range) == "bytes=0-1")
        #expect(string(head.ifRange) == "\"z\"")
        #expect(head.repeatedConditionalList)
        let all = bytes.withUnsafeBytes { RequestParser.fieldValues($0, headLength: head.headLength, name: "if-none-match") }
        #expect(all.map(string) == ["\"x\"", "\"w\""])
    }

    @Test func limitsHaveTheirOwnStatus() {
        let limits = ParserLimits(requestLine: 64, headerBytes: 256, headerCount: 3)
        let longTarget = "GET /" + String(repeating: "a", count: 100) + " HTTP/1.1\r\nHost: a\r\n\r\n"
        #expect(parse(longTarget, limits: limits) == .invalid(.uriTooLong))
        // Too long even before the line ends: rejected without waiting for more bytes.
        #expect(parse("GET /" + String(repeating: "a", count: 100), limits: limits) == .invalid(.uriTooLong))
        let bigField = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "b", count: 300) + "\r\n\r\n"
        #expect(parse(bigField, limits: limits) == .invalid(.headerFieldsTooLarge))
        let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
        #expect(parse(many, limits: limits) == .invalid(.headerFieldsTooLarge))
    }

    /// Every prefix of a valid request is incomplete; the parser never decides early.
    @Test func byteByByte() {
        let text = "GET /index.html HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"
        let bytes = Array(text.utf8)
        for length in 0..<bytes.count {
            let result = Array(bytes[0..<length]).withUnsafeBytes { RequestParser.parse($0, limits: ParserLimits()) }
            #expect(result == .incomplete, "prefix of \(length) bytes")
        }
        let full = bytes.withUnsafeBytes { RequestParser.parse($0, limits: ParserLimits()) }
        guard case .complete = full else { Issue.record("full request: \(full)"); return }
    }
}

/// The word-at-a-time checks agree with the byte-at-a-time rule at every position.
@Suite struct ByteClassTests {
    @Test func wordChecksMatchByteChecks() {
        for length in [1, 7, 8, 9, 16, 23] {
            for position in 0..<length {
                for byte: UInt8 in [0, 9, 10, 13, 31, 32, 33, 126, 127, 128, 200, 255] {
                    var bytes = [UInt8](repeating: 97, count: length)
                    bytes[position] = byte
                    bytes.withUnsafeBytes { buffer in
                        #expect(RequestParser.allVisible(buffer, 0, length) == (byte > 32 && byte < 127), "visible \(byte) at \(position)/\(length)")
                        #expect(RequestParser.validFieldValue(buffer, 0, length) == (byte >= 32 && byte != 127 || byte == 9), "field \(byte) at \(position)/\(length)")
                    }
                }
            }
        }
    }
}

@Suite struct TokenTests {
    /// The bit set is exactly RFC 9110's tchar.
    @Test func tokenBytes() {
        let tchar = Set(Array("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8))
        for byte in 0...255 {
            #expect(RequestParser.isTokenByte(UInt8(byte)) == tchar.contains(UInt8(byte)), "byte \(byte)")
        }
    }
}

@Suite struct HostTests {
    @Test func theTableCoversEveryByte() {
        #expect(RequestParser.hostBytes.utf8CodeUnitCount == 256)
    }

    @Test func hostsOfEveryLength() {
        func valid(_ host: String) -> Bool {
            let bytes = Array(host.utf8)
            return bytes.withUnsafeBytes { RequestParser.validHost($0, ByteSpan(start: 0, end: bytes.count)) }
        }
        for host in ["a", "localhost", "127.0.0.1", "example.com:8080", "www.a-very-long-subdomain.example.org",
                     "EXAMPLE.com", "under_score.test", "xn--bcher-kva.example", "[::1]", "[::1]:443", "a:", ""] {
            #expect(valid(host), "\(host)")
        }
        for host in ["a b", "a/b", "user@example.com", "example.com:80x", "example.com:1:2", "[::1", "::1",
                     "exa mple.com:8080", "a\u{7f}", "longer-than-eight/x", "abcdefghijklmnopqrstuvwxy@"] {
            #expect(!valid(host), "\(host)")
        }
    }
}
