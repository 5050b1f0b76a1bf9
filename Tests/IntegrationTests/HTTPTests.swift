import Foundation
import Testing

struct SmugglingCase: CustomTestStringConvertible, Sendable {
    let section: String
    let request: String
    let statuses: [Int]
    let closed: Bool
    init(_ section: String, _ request: String, _ statuses: [Int], closed: Bool) {
        self.section = section
        self.request = request
        self.statuses = statuses
        self.closed = closed
    }
    var testDescription: String { "\(section): \(request.debugDescription.prefix(50))" }
}

/// Request smuggling and malformed input against the real server: the exact statuses and whether the
/// connection is closed. A GET for /style.css follows most rows, so a server that misreads where a
/// request ends answers a different number of requests.
@Suite struct HTTPConformanceTests {
    static let next = "GET /style.css HTTP/1.1\r\nHost: a\r\n\r\n"
    static let cases: [SmugglingCase] = [
        SmugglingCase("RFC 9112 6.3 Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG" + next, [400], closed: true),
        SmugglingCase("RFC 9112 6.3 Transfer-Encoding then Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG" + next, [400], closed: true),
        SmugglingCase("RFC 9110 8.6 two Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy" + next, [400], closed: true),
        SmugglingCase("RFC 9112 6.3 last coding not chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 6.1 unsupported coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + next, [501], closed: true),
        SmugglingCase("RFC 9112 6.1 Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 5.2 obs-fold hiding a field", "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 5.1 space before the colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 2.2 bare LF", "GET / HTTP/1.1\nHost: a\n\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 2.2 bare CR", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 3.2 no Host", "GET / HTTP/1.1\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 3.2 two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9110 5.5 NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 7.1 a chunked body, then the next request", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nwiki\r\n0\r\nTrailer: x\r\n\r\n" + next, [405, 200], closed: false),
        SmugglingCase("RFC 9112 6.2 a Content-Length body, then the next request", "GET /style.css HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + next, [200, 200], closed: false),
        SmugglingCase("RFC 9112 6.2 a body that looks like a request is not one", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \(next.utf8.count)\r\n\r\n" + next + next, [405, 200], closed: false),
        SmugglingCase("RFC 9112 7.1 bad chunk size: invalid, 400", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 7.1 chunk data longer than its size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 7.1.1 chunk extension beyond the limit", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;" + String(repeating: "x", count: 5000) + "\r\na\r\n0\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 7.1 a GET's chunked body with a bad size is not answered 200", "GET /style.css HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 7.1 a chunk size past 64 bits", "GET /style.css HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nx\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 7.1 a chunk without its CRLF", "GET /style.css HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy0\r\n\r\n" + next, [400], closed: true),
        SmugglingCase("RFC 9112 7.1 a whole chunked body on a GET, then the next request", "GET /style.css HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n" + next, [200, 200], closed: false),
        SmugglingCase("RFC 9110 2.5 HTTP/1.2 is answered as 1.1", "GET /style.css HTTP/1.2\r\nHost: a\r\n\r\n" + next, [200, 200], closed: false),
        SmugglingCase("RFC 9110 15.5.14 body over limits.body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\nxxxx", [413], closed: true),
        SmugglingCase("RFC 9110 10.1.1 unknown expectation", "POST / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx", [417], closed: true),
        SmugglingCase("RFC 9112 3 request line too long", "GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: a\r\n\r\n", [414], closed: true),
        SmugglingCase("RFC 6585 5 one field too long", "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "a", count: 9000) + "\r\n\r\n", [431], closed: true),
        SmugglingCase("RFC 6585 5 too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X: y\r\n", count: 101) + "\r\n", [431], closed: true),
        SmugglingCase("RFC 9110 15.6.6 HTTP/2.0 in a request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", [505], closed: true),
        SmugglingCase("RFC 9110 15.6.2 unknown method", "BREW / HTTP/1.1\r\nHost: a\r\n\r\n", [501], closed: true),
        SmugglingCase("RFC 9110 9.3.8 TRACE is off", "TRACE / HTTP/1.1\r\nHost: a\r\n\r\n" + next, [405, 200], closed: false),
        SmugglingCase("RFC 9112 3.2.4 OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n" + next, [204, 200], closed: false),
        SmugglingCase("RFC 9112 3.2.4 asterisk-form is for OPTIONS only", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", [400], closed: false),
        SmugglingCase("RFC 9112 3.2.2 absolute-form", "GET http://a/style.css HTTP/1.1\r\nHost: a\r\n\r\n" + next, [200, 200], closed: false),
        SmugglingCase("RFC 9110 14.2 a Range number past 64 bits is ignored (found by the fuzzer)", "GET /style.css HTTP/1.1\r\nHost: a\r\nRange: bytes=" + String(repeating: "9", count: 40) + "-1\r\n\r\n" + next, [200, 200], closed: false),
        SmugglingCase("RFC 9112 9.3 Connection: close", "GET /style.css HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + next, [200], closed: true),
    ]

    /// Every row against one server (each on its own connection); a failure names the row's rule.
    @Test func corpus() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        for row in HTTPConformanceTests.cases {
            let (got, text) = try outcome(port: server.port, Array(row.request.utf8))
            #expect(got == Outcome(statuses: row.statuses, closed: row.closed), "\(row.testDescription) → \(text.prefix(200))")
        }
    }

    @Test func expectContinueIsAnsweredBeforeTheBody() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let fd = try openConnection(server.port)
        defer { close(fd) }
        func write(_ text: String) { _ = text.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } }
        func read() -> String {
            var buffer = [UInt8](repeating: 0, count: 65536)
            let count = recv(fd, &buffer, buffer.count, 0)
            return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : ""
        }
        write("PUT /style.css HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
        // 100 Continue, then the final answer, both before a byte of the body was sent.
        var reply = ""
        while statusCodes(reply).count < 2, case let chunk = read(), !chunk.isEmpty { reply += chunk }
        #expect(reply.hasPrefix("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 405 "))
        // The body is then skipped and the connection goes on.
        write("0123456789GET /style.css HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(statusCodes(read()) == [200])
        // With curl, which waits for the 100.
        let file = server.directory.appendingPathComponent("upload.bin")
        try Data(repeating: 65, count: 100_000).write(to: file)
        let output = try curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect: 100-continue",
                               "-X", "POST", "--data-binary", "@\(file.path)", server.url + "/style.css"])
        #expect(output == "405")
    }

    @Test func aRefusedBodyDoesNotResetTheResponse() throws {
        // 413 while the client is still sending: the server half-closes and reads on (lingering close),
        // so the client reads the whole 413 instead of a connection reset.
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let body = String(repeating: "x", count: 200_000)
        let (got, text) = try outcome(port: server.port, Array(("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\n\r\n" + body).utf8), timeout: 5)
        #expect(got == Outcome(statuses: [413], closed: true))
        #expect(text.contains("413 Content Too Large</h1>"))
    }

    @Test func aStalledBodyTimesOut() throws {
        let server = try TestServer(config: "timeouts: {body: 300ms}\n", site: richSite).start()
        defer { server.stop() }
        let (got, _) = try outcome(port: server.port, Array("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc".utf8), timeout: 5)
        #expect(got == Outcome(statuses: [405], closed: true))
    }
}

/// Conditional requests and ranges (RFC 9110 sections 13 and 14) against the real server, with curl.
@Suite struct ValidatorAndRangeTests {
    static func site(_ site: URL) throws {
        try richSite(site)
        var bytes = [UInt8](repeating: 0, count: 100_000)
        for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 31 &+ index >> 8) }
        try Data(bytes).write(to: site.appendingPathComponent("data.bin"))  // above inline_max: sendfile
        try Data(bytes[0..<1000]).write(to: site.appendingPathComponent("small.bin"))  // in memory
        // Sparse, past 4 GiB.
        #expect(FileManager.default.createFile(atPath: site.appendingPathComponent("huge.bin").path, contents: nil))
        truncate(site.appendingPathComponent("huge.bin").path, 5 << 30)
    }

    @Test func preconditionsInTheOrderOfSection13_2_2() throws {
        let server = try TestServer(site: ValidatorAndRangeTests.site).start()
        defer { server.stop() }
        let url = server.url + "/style.css"
        let plain = try fetch(url)
        let etag = try #require(plain.headers["etag"])
        let modified = try #require(plain.headers["last-modified"])
        #expect(plain.headers["accept-ranges"] == "bytes")

        // If-None-Match: weak comparison, lists, "*"; 304 carries the validators and no body.
        let notModified = try fetch(url, ["-H", "If-None-Match: \(etag)"])
        #expect(notModified.status == 304 && notModified.body.isEmpty)
        #expect(notModified.headers["etag"] == etag && notModified.headers["last-modified"] == modified)
        #expect(notModified.headers["content-length"] == nil)
        #expect(try fetch(url, ["-H", "If-None-Match: W/\(etag)"]).status == 304)
        #expect(try fetch(url, ["-H", "If-None-Match: \"other\", \(etag)"]).status == 304)
        #expect(try fetch(url, ["-H", "If-None-Match: \"other\"", "-H", "If-None-Match: \(etag)"]).status == 304)
        #expect(try fetch(url, ["-H", "If-None-Match: *"]).status == 304)
        #expect(try fetch(url, ["-H", "If-None-Match: \"other\""]).status == 200)
        #expect(try fetch(url, ["-I", "-H", "If-None-Match: \(etag)"]).status == 304)
        // If-Modified-Since only without If-None-Match.
        #expect(try fetch(url, ["-H", "If-Modified-Since: \(modified)"]).status == 304)
        #expect(try fetch(url, ["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"]).status == 200)
        #expect(try fetch(url, ["-H", "If-None-Match: \"other\"", "-H", "If-Modified-Since: \(modified)"]).status == 200)
        #expect(try fetch(url, ["-H", "If-Modified-Since: not a date"]).status == 200)
        // If-Match: strong comparison; fails with 412.
        #expect(try fetch(url, ["-H", "If-Match: \(etag)"]).status == 200)
        #expect(try fetch(url, ["-H", "If-Match: *"]).status == 200)
        #expect(try fetch(url, ["-H", "If-Match: \"other\""]).status == 412)
        #expect(try fetch(url, ["-H", "If-Match: W/\(etag)"]).status == 412)
        // If-Unmodified-Since only without If-Match; If-Match is checked before If-None-Match.
        #expect(try fetch(url, ["-H", "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT"]).status == 412)
        #expect(try fetch(url, ["-H", "If-Unmodified-Since: \(modified)"]).status == 200)
        #expect(try fetch(url, ["-H", "If-Match: \(etag)", "-H", "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT"]).status == 200)
        #expect(try fetch(url, ["-H", "If-Match: \"other\"", "-H", "If-None-Match: \(etag)"]).status == 412)
    }

    @Test func rangesOfSection14() throws {
        let server = try TestServer(site: ValidatorAndRangeTests.site).start()
        defer { server.stop() }
        let original = try Data(contentsOf: server.site.appendingPathComponent("data.bin"))
        let small = try Data(contentsOf: server.site.appendingPathComponent("small.bin"))
        for (name, content) in [("data.bin", original), ("small.bin", small)] {
            let url = server.url + "/" + name
            let length = content.count
            let output = server.directory.appendingPathComponent("part")
            func range(_ spec: String, _ extra: [String] = []) throws -> (String, Data) {
                let code = try curl(["-o", output.path, "-w", "%{http_code}", "-H", "Range: \(spec)"] + extra + [url])
                return (code, try Data(contentsOf: output))
            }
            #expect(try range("bytes=0-99") == ("206", content[0..<100]))
            #expect(try range("bytes=-10") == ("206", content[(length - 10)...]))
            #expect(try range("bytes=\(length - 5)-") == ("206", content[(length - 5)...]))
            #expect(try range("bytes=10-\(length * 2)") == ("206", content[10...]))
            #expect(try range("bytes=5-1") == ("200", content))  // invalid: ignored
            let unsatisfiable = try fetch(url, ["-H", "Range: bytes=\(length)-"])
            #expect(unsatisfiable.status == 416 && unsatisfiable.headers["content-range"] == "bytes */\(length)")
            let single = try fetch(url, ["-r", "0-9"])
            #expect(single.headers["content-range"] == "bytes 0-9/\(length)" && single.headers["content-length"] == "10")
            // If-Range: the range only while the validator is current.
            let etag = try #require(single.headers["etag"])
            #expect(try range("bytes=0-9", ["-H", "If-Range: \(etag)"]).0 == "206")
            #expect(try range("bytes=0-9", ["-H", "If-Range: \"stale\""]) == ("200", content))
            #expect(try range("bytes=0-9", ["-H", "If-Range: W/\(etag)"]).0 == "200")
            #expect(try range("bytes=0-9", ["-H", "If-Range: \(single.headers["last-modified"] ?? "")"]).0 == "206")
            // HEAD ignores Range.
            #expect(try fetch(url, ["-I", "-r", "0-9"]).status == 200)

            // Several ranges: multipart/byteranges, sorted and coalesced, each part with its Content-Range.
            let (code, body) = try range("bytes=500-599,0-9,5-19")
            #expect(code == "206")
            let multipart = try fetch(url, ["-r", "500-599,0-9,5-19"])
            let type = try #require(multipart.headers["content-type"])
            #expect(type.hasPrefix("multipart/byteranges; boundary="))
            let boundary = String(type.dropFirst("multipart/byteranges; boundary=".count))
            #expect(multipart.headers["content-length"] == String(body.count))
            let parts = body.split(separator: Data("--\(boundary)".utf8))
            // A CRLF before the first delimiter, two parts (0-19 and 500-599), and the closing "--".
            #expect(parts.count == 4)
            let expected: [(String, Range<Int>)] = [("bytes 0-19/\(length)", 0..<20), ("bytes 500-599/\(length)", 500..<600)]
            for (part, (contentRange, bytes)) in zip(parts.dropFirst().prefix(2), expected) {
                let separator = try #require(part.range(of: Data("\r\n\r\n".utf8)))
                let headers = String(decoding: part[..<separator.lowerBound], as: UTF8.self)
                #expect(headers.contains("Content-Range: \(contentRange)"))
                #expect(headers.contains("Content-Type: application/octet-stream"))
                #expect(part[separator.upperBound...].dropLast(2) == content[bytes])
            }
            // More ranges than limits.ranges (16): the whole file.
            let many = (0..<17).map { "\($0 * 1000)-\($0 * 1000 + 1)" }.joined(separator: ",")
            #expect(try range("bytes=" + many).0 == "200")
        }
    }

    @Test func filesPast4GiB() throws {
        let server = try TestServer(site: ValidatorAndRangeTests.site).start()
        defer { server.stop() }
        let head = try fetch(server.url + "/huge.bin", ["-I"])
        #expect(head.headers["content-length"] == String(5 << 30))
        let part = try fetch(server.url + "/huge.bin", ["-r", "4294967296-4294967305"])
        #expect(part.status == 206 && part.headers["content-range"] == "bytes 4294967296-4294967305/\(5 << 30)")
        #expect(part.body == String(repeating: "\0", count: 10))
        let tail = try fetch(server.url + "/huge.bin", ["-r", "-3"])
        #expect(tail.headers["content-range"] == "bytes \((5 << 30) - 3)-\((5 << 30) - 1)/\(5 << 30)")
    }

    @Test func slowClientsDoNotStarveOthers() throws {
        // 200 connections trickle a request head one byte at a time; a normal client is answered meanwhile,
        // and each slow one gets its 408 once its header time is up.
        let server = try TestServer(config: "timeouts: {header: 2s}\n", site: richSite).start()
        defer { server.stop() }
        let slow = try (0..<200).map { _ in try openConnection(server.port) }
        defer { for fd in slow { close(fd) } }
        let head = Array("GET /style.css HTTP/1.1\r\nHost: slow\r\n".utf8)
        var answered = 0
        for step in 0..<10 {
            for fd in slow { _ = head[step...step].withUnsafeBytes { send(fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) } }
            if try status(server.url + "/style.css", ["--max-time", "5"]) == 200 { answered += 1 }
            usleep(100_000)
        }
        #expect(answered == 10)
        var buffer = [UInt8](repeating: 0, count: 4096)
        var timedOut = 0
        for fd in slow {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 && statusCodes(String(decoding: buffer[0..<count], as: UTF8.self)) == [408] { timedOut += 1 }
        }
        #expect(timedOut == 200)
    }
}
