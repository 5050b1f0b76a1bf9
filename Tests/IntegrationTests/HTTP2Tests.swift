import Foundation
import Glibc
import Testing

/// HTTP/2 through the real process tree: curl and nghttp as clients (ALPN and prior knowledge), and
/// raw frames (Tests/IntegrationTests/Fixtures/h2_probe.py, on the `h2` package's frame and HPACK
/// coders) for what a well-behaved client never sends.
@Suite struct HTTP2Tests {
    /// A server with TLS (and the HTTP/2 settings in `http2`), its certificate and its TLS port.
    func h2Server(_ extra: String = "", http2: String = "", site: (URL) throws -> Void = richSite) throws -> (TestServer, String, Int) {
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        var config = "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n" + extra
        if !http2.isEmpty { config += "http2: {\(http2)}\n" }
        let server = try TestServer(config: config, site: site).start()
        return (server, cert, try #require(server.tlsPort))
    }

    /// What h2_probe.py says of `scenario`, as JSON.
    func probe(_ port: Int, _ scenario: String, _ extra: [String] = []) throws -> [String: Any] {
        let script = packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures/h2_probe.py").path
        let result = try run("python3", [script, String(port), scenario] + extra)
        guard let data = result.output.data(using: .utf8), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TestFailure("h2_probe.py \(scenario) printed no JSON: \(result.output) \(result.error)")
        }
        return object
    }

    func stream(_ result: [String: Any], _ id: Int) -> [String: Any] {
        ((result["streams"] as? [String: Any])?[String(id)] as? [String: Any]) ?? [:]
    }

    @Test func everythingHTTP11ServesWorksOverHTTP2() throws {
        let (server, cert, port) = try h2Server(
            """
            error_pages: {404: /missing.html}
            headers:
              - {match: "/docs/*", set: {Cache-Control: "public, max-age=60", X-Docs: "yes"}}
            """,
            site: { site in
                try richSite(site)
                try gzipSite(site)
                try "<p>not here</p>\n".write(to: site.appendingPathComponent("missing.html"), atomically: true, encoding: .utf8)
                var bytes = [UInt8](repeating: 0, count: 3_000_000)
                for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 7 &+ index >> 9) }
                try Data(bytes).write(to: site.appendingPathComponent("big.bin"))
                try Data(sourceLikeText(bytes: 3_000_000, seed: 5)).write(to: site.appendingPathComponent("big.js"))
            })
        defer { server.stop() }
        let url = "https://localhost:\(port)"
        let common = ["--http2", "--cacert", cert, "--resolve", "localhost:\(port):127.0.0.1"]

        // GET: h2 by ALPN; the fields in lowercase, the protocol's own (server, date) included.
        let verbose = try run("curl", ["-sv", "--max-time", "20"] + common + ["-o", "/dev/null", url + "/index.html"])
        #expect(verbose.error.contains("ALPN: server accepted h2"))
        let get = try fetch(url + "/index.html", common)
        #expect(get.status == 200 && get.body == "<!doctype html><p>home</p>\n")
        #expect(get.headers["content-type"] == "text/html; charset=utf-8" && get.headers["server"] == "webserver" && get.headers["date"] != nil)
        #expect(get.headers["connection"] == nil && get.headers["transfer-encoding"] == nil)
        // HEAD: GET's fields, no body.
        let head = try fetch(url + "/index.html", common + ["-I"])
        #expect(head.status == 200 && head.headers["content-length"] == "27" && head.body.isEmpty)
        // Validators: 304 for a matching ETag, 412 for a failed If-Match.
        let etag = try #require(get.headers["etag"])
        #expect(try status(url + "/index.html", common + ["-H", "If-None-Match: \(etag)"]) == 304)
        #expect(try status(url + "/index.html", common + ["-H", "If-Match: \"other\""]) == 412)
        // Ranges: one, and several as multipart/byteranges.
        #expect(try curl(common + ["-r", "0-3", url + "/index.html"]) == "<!do")
        let multipart = try fetch(url + "/big.bin", common + ["-r", "0-3,2000000-2000003"])
        #expect(multipart.status == 206 && multipart.headers["content-type"]?.hasPrefix("multipart/byteranges; boundary=") == true)
        #expect(multipart.body.contains("Content-Range: bytes 2000000-2000003/3000000"))
        // gzip: negotiated with Vary and its own ETag; a cached body and one compressed as it streams,
        // both decompressing to the file.
        let plainJS = try fetch(url + "/app.js", common)
        let gzipJS = try fetch(url + "/app.js", common + ["-H", "Accept-Encoding: gzip"])
        #expect(gzipJS.headers["content-encoding"] == "gzip" && gzipJS.headers["vary"] == "Accept-Encoding")
        #expect(gzipJS.headers["etag"] != nil && gzipJS.headers["etag"] != plainJS.headers["etag"])
        let downloaded = server.directory.appendingPathComponent("big.js")
        #expect(try curl(common + ["--compressed", "-o", downloaded.path, "-w", "%{http_code}", url + "/big.js"]) == "200")
        #expect(try Data(contentsOf: downloaded) == Data(contentsOf: server.site.appendingPathComponent("big.js")))
        // A file larger than the windows and the socket buffers, byte for byte.
        let big = server.directory.appendingPathComponent("big.bin")
        #expect(try curl(common + ["-o", big.path, "-w", "%{http_code} %{http_version}", url + "/big.bin"]) == "200 2")
        #expect(try Data(contentsOf: big) == Data(contentsOf: server.site.appendingPathComponent("big.bin")))
        // Per-path headers, error pages, dotfiles, traversal, permissions.
        let docs = try fetch(url + "/docs/", common)
        #expect(docs.status == 200 && docs.headers["cache-control"] == "public, max-age=60" && docs.headers["x-docs"] == "yes")
        let missing = try fetch(url + "/nothing-here", common)
        #expect(missing.status == 404 && missing.body == "<p>not here</p>\n")
        #expect(try status(url + "/.env", common) == 404 || (try status(url + "/.env", common)) == 403)
        #expect(try status(url + "/../../etc/passwd", common + ["--path-as-is"]) == 400)
        #expect(try status(url + "/secret.txt", common) == 403)
        #expect(try status(url + "/index.html", common + ["-X", "DELETE"]) == 405)

        // nghttp, nghttp2's own client: one connection, several streams at once.
        let nghttp = try run("nghttp", ["-ns", url + "/index.html", url + "/style.css", url + "/app.js"])
        #expect(nghttp.status == 0, "\(nghttp.output) \(nghttp.error)")
        // h2load: 2,000 requests on 4 connections, 10 streams each at once: all answered 200.
        let load = try run("h2load", ["-n", "2000", "-c", "4", "-m", "10", url + "/style.css"])
        #expect(load.output.contains("2000 succeeded") && load.output.contains("status codes: 2000 2xx"), "\(load.output)")

        // The access log says HTTP/2.0; the metrics count the connections and the streams.
        #expect(waitUntil(seconds: 5) { (try? String(contentsOf: server.accessLog, encoding: .utf8))?.contains("\"GET /index.html HTTP/2.0\" 200 27") == true })
        // (The figures come with the workers' heartbeats.)
        #expect(waitUntil(seconds: 5) {
            guard let metrics = server.metrics() else { return false }
            return (metrics.samples["webserver_http2_streams_total"] ?? 0) >= 2020
                && (metrics.samples["webserver_http2_connections_total"] ?? 0) >= 20
        }, "\(String(describing: server.metrics()?.samples.filter { $0.key.contains("http2") }))")
    }

    @Test func cleartextWithPriorKnowledgeAndTheSwitchesThatTurnItOff() throws {
        let server = try TestServer(config: "http2: {cleartext: true}\n").start()
        defer { server.stop() }
        #expect(try curl(["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", server.url + "/"]) == "200 2")
        // HTTP/1.1 on the same socket is unchanged, and a request that only looks like the preface
        // ("PRI" as a method) is HTTP/1.1's to answer.
        #expect(try curl(["-o", "/dev/null", "-w", "%{http_code} %{http_version}", server.url + "/"]) == "200 1.1")
        #expect(try statusCodes(exchange(port: server.port, "PRICE / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")) == [501])

        // Off by default: the preface on a plain socket is not HTTP/2.
        let plain = try TestServer().start()
        defer { plain.stop() }
        #expect(try curl(["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version}", plain.url + "/"]) != "2")
        // It is an HTTP/1.1 request line with version 2.0: HTTP/1.1's answer, 505.
        let answer = try exchange(port: plain.port, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        #expect(answer.hasPrefix("HTTP/1.1 ") && statusCodes(answer) == [505], "\(answer)")

        // `http2: false`: ALPN offers http/1.1 alone.
        let (off, cert, port) = try h2Server("http2: false\n")
        defer { off.stop() }
        #expect(try curl(["--http2", "--cacert", cert, "--resolve", "localhost:\(port):127.0.0.1", "-o", "/dev/null", "-w", "%{http_version}",
                          "https://localhost:\(port)/"]) == "1.1")
    }

    @Test func aPROXYHeaderBeforeTheTLSHandshakeNamesTheClientOfEveryStream() throws {
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        let server = try TestServer(
            config: "tls: {listen: [{address: '127.0.0.1:0', proxy_protocol: true}], cert: \(cert), key: \(key)}\n", site: richSite
        ).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        let result = try probe(port, "get", ["--proxy", "PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\\r\\n"])
        #expect(stream(result, 1)["status"] as? Int == 200, "\(result)")
        #expect(waitUntil(seconds: 5) {
            (try? String(contentsOf: server.accessLog, encoding: .utf8))?.contains("203.0.113.7 - - ") == true
        })
        #expect((try String(contentsOf: server.accessLog, encoding: .utf8)).contains("\"GET /index.html HTTP/2.0\" 200"))
    }

    @Test func messagesRFC9113ForbidsAreStreamErrorsAndTheConnectionGoesOn() throws {
        let (server, _, port) = try h2Server()
        defer { server.stop() }
        // Each: stream 1 is reset with PROTOCOL_ERROR (1) (RFC 9113 section 8.1.1), and stream 3 on the
        // same connection is answered.
        for scenario in ["uppercase", "connection_field", "missing_path", "repeated_method", "pseudo_after_regular", "te_gzip", "host_mismatch"] {
            let result = try probe(port, scenario)
            #expect(stream(result, 1)["rst"] as? Int == 1, "\(scenario): \(result)")
            #expect(stream(result, 3)["status"] as? Int == 200, "\(scenario): \(result)")
            #expect(result["goaway"] is NSNull, "\(scenario): \(result)")
        }
        // A header block split over two reads (HEADERS, a pause, CONTINUATION) is one request.
        let split = try probe(port, "split_headers")
        #expect(stream(split, 1)["status"] as? Int == 206 && stream(split, 1)["body"] as? Int == 4, "\(split)")
        // Host in place of :authority is enough; neither is a malformed request.
        #expect(stream(try probe(port, "host_only"), 1)["status"] as? Int == 200)
        #expect(stream(try probe(port, "no_host"), 1)["rst"] as? Int == 1)
        // Header lists past `limits` (bytes, or fields: 400 cookie crumbs) get 431, as over HTTP/1.1.
        for scenario in ["large_header_list", "many_cookies"] {
            let result = try probe(port, scenario)
            #expect(stream(result, 1)["status"] as? Int == 431, "\(scenario): \(result)")
            #expect(stream(result, 3)["status"] as? Int == 200, "\(scenario): \(result)")
        }
        // A body past limits.body: 413, then refused with RST_STREAM(NO_ERROR) (RFC 9113 section 8.1);
        // one within it is read to its end and dropped, with no reset.
        let body = try probe(port, "body_ignored")
        #expect(stream(body, 1)["status"] as? Int == 413 && stream(body, 1)["rst"] as? Int == 0, "\(body)")
        let discarded = try probe(port, "body_discarded", ["--timeout", "1.5"])
        #expect(stream(discarded, 1)["status"] as? Int == 405 && stream(discarded, 1)["rst"] is NSNull && discarded["goaway"] is NSNull,
                "\(discarded)")
        // Stream ids must increase: HEADERS on an id the client skipped is PROTOCOL_ERROR (section 5.1.1).
        let lower = try probe(port, "lower_stream_id")
        #expect(lower["goaway"] as? Int == 1 && stream(lower, 5)["status"] as? Int == 200, "\(lower)")
        // content-length that disagrees with the DATA is malformed (RFC 9113 section 8.1.1).
        #expect(stream(try probe(port, "content_length_mismatch"), 1)["rst"] as? Int == 1)
        // Frames on a stream the client ended and the server answered: STREAM_CLOSED (5) (section 5.1).
        for scenario in ["data_after_end_stream", "headers_after_end_stream", "data_after_client_reset", "data_after_many_streams"] {
            let result = try probe(port, scenario)
            #expect(result["goaway"] as? Int == 5 && stream(result, 1)["status"] as? Int == 200, "\(scenario): \(result)")
        }
        // Frames on a stream the client opened and reset, in the same write: STREAM_CLOSED too.
        for scenario in ["data_after_client_reset_open", "headers_after_client_reset_open"] {
            let result = try probe(port, scenario)
            #expect(result["goaway"] as? Int == 5, "\(scenario): \(result)")
        }
        // Bodies of two streams in one read, the first ending before the second's DATA: both answered.
        let bodies = try probe(port, "bodies_in_one_read", ["--timeout", "1.5"])
        #expect(stream(bodies, 1)["status"] as? Int == 405 && stream(bodies, 129)["status"] as? Int == 405
                && stream(bodies, 129)["rst"] is NSNull && bodies["goaway"] is NSNull, "\(bodies)")
        // DATA on a stream the server reset before the client ended it is ignored (section 5.1).
        let afterReset = try probe(port, "data_after_reset")
        #expect(stream(afterReset, 1)["status"] as? Int == 413 && stream(afterReset, 3)["status"] as? Int == 200 && afterReset["goaway"] is NSNull,
                "\(afterReset)")
        // Unknown frame types are ignored; DATA on an idle stream is a connection error.
        #expect(stream(try probe(port, "garbage"), 1)["status"] as? Int == 200)
        let idle = try probe(port, "data_on_idle_stream")
        #expect(idle["goaway"] as? Int == 1 && idle["closed"] as? Bool == true)
        // A stream's window past 2^31-1 is a stream error, the connection's a connection error.
        let streamWindow = try probe(port, "stream_window_overflow")
        #expect(stream(streamWindow, 1)["rst"] as? Int == 3 && stream(streamWindow, 3)["status"] as? Int == 200)
        #expect(try probe(port, "window_overflow")["goaway"] as? Int == 3)
        // Stream 101 of a client that opens no window (so none can finish) is refused (REFUSED_STREAM).
        let streams = try probe(port, "too_many_streams", ["--timeout", "2"])
        #expect(stream(streams, 201)["rst"] as? Int == 7 && stream(streams, 199)["status"] as? Int == 200)
    }

    @Test func abuseGetsGOAWAYAndALogLineAndCostsNobodyElse() throws {
        let (server, cert, port) = try h2Server(http2: "reset_burst: 100, resets_per_second: 10, max_empty_data_frames: 50")
        defer { server.stop() }
        // A normal client on its own connection, the whole time: h2load with one connection and 10
        // streams at once, 10 seconds at most (the abuse below takes a few).
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let clientOutput = server.directory.appendingPathComponent("h2load.txt")
        _ = FileManager.default.createFile(atPath: clientOutput.path, contents: nil)
        client.arguments = ["h2load", "-D", "6", "-c", "1", "-m", "10", "https://localhost:\(port)/style.css"]
        client.standardOutput = try FileHandle(forWritingTo: clientOutput)
        try client.run()
        defer { if client.isRunning { client.terminate() } }
        _ = cert
        let cases: [(String, Int, String)] = [
            ("continuation_flood", 11, "more CONTINUATION frames after a HEADERS frame than http2.max_continuations"),
            ("rapid_reset", 11, "more stream resets than http2.reset_burst and http2.resets_per_second allow"),
            ("empty_data_flood", 11, "more empty DATA frames than http2.max_empty_data_frames"),
            ("settings_flood", 11, "more control frames (SETTINGS, PING) waiting for their acknowledgement than http2.max_queued_acks"),
            ("ping_flood", 11, "more control frames (SETTINGS, PING) waiting for their acknowledgement than http2.max_queued_acks"),
        ]
        for (scenario, code, line) in cases {
            let before = server.log().components(separatedBy: line).count
            let result = try probe(port, scenario)
            #expect(result["closed"] as? Bool == true, "\(scenario): \(result)")
            // A client that floods without reading may never see the GOAWAY; the others do.
            if !scenario.hasSuffix("_flood") || scenario == "empty_data_flood" || scenario == "continuation_flood" {
                #expect(result["goaway"] as? Int == code, "\(scenario): \(result)")
            }
            #expect(waitUntil(seconds: 5) { server.log().components(separatedBy: line).count > before }, "\(scenario): no log line")
        }
        client.waitUntilExit()
        let load = (try? String(contentsOf: clientOutput, encoding: .utf8)) ?? ""
        // Every request it made was answered 200, all through the abuse.
        #expect(load.contains(" 0 failed, 0 errored, 0 timeout") && load.contains(", 0 3xx, 0 4xx, 0 5xx"), "\(load)")
        #expect(!load.contains("requests: 0 total"), "\(load)")
    }

    @Test func stalledClientsAndIdleConnectionsAreClosed() throws {
        let (server, _, port) = try h2Server("keepalive: {timeout: 1s}\ntimeouts: {send: 1s, header: 1s}\n")
        defer { server.stop() }
        // A client that opens no window: its response cannot go; the send deadline closes it.
        let start = Date()
        let stalled = try probe(port, "never_reads", ["--timeout", "8"])
        #expect(stalled["closed"] as? Bool == true && Date().timeIntervalSince(start) < 6, "\(stalled)")
        // A header block begun and never finished: the header deadline closes it.
        let headStart = Date()
        let partial = try probe(port, "partial_headers", ["--timeout", "8"])
        #expect(partial["closed"] as? Bool == true && Date().timeIntervalSince(headStart) < 6, "\(partial)")
        // Idle past keepalive.timeout: GOAWAY(NO_ERROR), then the close.
        let idle = try probe(port, "idle", ["--timeout", "8"])
        #expect(idle["goaway"] as? Int == 0 && idle["closed"] as? Bool == true, "\(idle)")
    }

    /// A client that opened its windows wide and then only reads, slowly: it sends nothing that would
    /// wake the server, so the TLS records a write made and the socket did not take (notsent_lowat and
    /// a small receive buffer make that frequent) must go at EPOLLOUT, in order. (Whether the very last
    /// write is taken in part is the kernel's choice; over HTTP/1.1, TLSTests.slowReadersGetEveryByteOverTLS
    /// fails when such records are left behind.)
    @Test func aReaderThatSendsNothingGetsTheWholeBody() throws {
        let (server, _, port) = try h2Server("notsent_lowat: 16k\n", site: { site in
            try richSite(site)
            try Data(repeating: 7, count: 1 << 20).write(to: site.appendingPathComponent("big.bin"))
        })
        defer { server.stop() }
        let result = try probe(port, "get", ["--path", "/big.bin", "--slow", "--wide-open", "--small-buffer", "--timeout", "10"])
        #expect(stream(result, 1)["status"] as? Int == 200 && stream(result, 1)["body"] as? Int == 1 << 20, "\(result)")
        #expect(stream(result, 1)["ended"] as? Bool == true, "\(result)")
    }

    @Test func aDrainSendsGOAWAYAndStreamsInFlightFinish() throws {
        let (server, _, port) = try h2Server(site: { site in
            try richSite(site)
            try Data(repeating: 42, count: 2_000_000).write(to: site.appendingPathComponent("big.bin"))
        })
        defer { server.stop() }
        // A download paced by its windows (about 2.5 s), and a reload while it runs: the old worker
        // drains; the client gets GOAWAY(NO_ERROR) naming stream 1 as the last, and the whole body.
        let script = packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures/h2_probe.py").path
        let output = server.directory.appendingPathComponent("drain.json")
        let download = Process()
        download.executableURL = URL(fileURLWithPath: "/bin/sh")
        download.arguments = ["-c", "python3 \(script) \(port) get --path /big.bin --slow --timeout 20 > \(output.path)"]
        try download.run()
        #expect(waitUntil(seconds: 5) { server.log().contains("HTTP/2") || (try? Data(contentsOf: server.accessLog))?.isEmpty == false })
        #expect(server.reload { kill(server.pid, SIGHUP) })
        download.waitUntilExit()
        let data = try Data(contentsOf: output)
        let result = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(result["goaway"] as? Int == 0 && result["last_stream"] as? Int == 1, "\(result)")
        #expect(stream(result, 1)["status"] as? Int == 200 && stream(result, 1)["body"] as? Int == 2_000_000, "\(result)")
        #expect(stream(result, 1)["ended"] as? Bool == true)
    }
}
