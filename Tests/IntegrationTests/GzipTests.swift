import Foundation
import Glibc
import Testing

/// Headers that differ between two identical requests (Date) left out, for comparing GET with HEAD.
func comparable(_ headers: [String: String]) -> [String: String] { headers.filter { $0.key != "date" } }

@Suite(.serialized) struct GzipTests {
    /// `curl --compressed` gives back the file byte for byte at every size: below the minimum length
    /// (sent as it is), at it, whole-compressed and cached (1 MiB), and streamed in chunks (100 MiB).
    @Test func compressedDownloadsAreByteIdenticalAtEverySize() throws {
        let sizes = [0, 1, 255, 256, 1_048_576, 100 * 1_048_576]
        let server = try TestServer(site: { site in
            for size in sizes where size < 2_000_000 {
                try Data(sourceLikeText(bytes: size, seed: UInt64(size))).write(to: site.appendingPathComponent("t\(size).txt"))
            }
            // 100 MiB: a 1 MiB block written with a different first line each time.
            let block = sourceLikeText(bytes: 1_048_576 - 18, seed: 77)
            #expect(FileManager.default.createFile(atPath: site.appendingPathComponent("t\(100 * 1_048_576).txt").path, contents: nil))
            let handle = try FileHandle(forWritingTo: site.appendingPathComponent("t\(100 * 1_048_576).txt"))
            for index in 0..<100 {
                handle.write(Data(String(format: "block %09d\n\n\n", index).utf8) + Data(block))
            }
            try handle.close()
        }).start()
        defer { server.stop() }
        for size in sizes {
            let file = server.site.appendingPathComponent("t\(size).txt")
            #expect((try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int) == size)
            let output = server.directory.appendingPathComponent("out\(size)")
            let headers = try curl(["--compressed", "-H", "Accept-Encoding: gzip", "-D", "-", "-o", output.path, server.url + "/t\(size).txt"]).lowercased()
            #expect(try Data(contentsOf: output) == Data(contentsOf: file), "\(size) bytes")
            #expect(headers.contains("content-encoding: gzip") == (size >= 256), "\(size) bytes")
            #expect(headers.contains("vary: accept-encoding") == (size >= 256), "\(size) bytes")
            if size == 1_048_576 { #expect(headers.contains("content-length:") && !headers.contains("transfer-encoding")) }
            if size == 100 * 1_048_576 { #expect(headers.contains("transfer-encoding: chunked") && !headers.contains("content-length")) }
        }
        // The compressed bytes really are gzip, and much smaller.
        let raw = server.directory.appendingPathComponent("raw.gz")
        _ = try curl(["-H", "Accept-Encoding: gzip", "-o", raw.path, server.url + "/t1048576.txt"])
        let gzipped = try Data(contentsOf: raw)
        #expect(gzipped.prefix(2) == Data([0x1f, 0x8b]) && gzipped.count < 1_048_576 / 2)
    }

    /// RFC 9110 section 12.5.3 against the real server: which encoding each Accept-Encoding gets, Vary on
    /// every response that could have been compressed, 406 only when identity is refused and no other
    /// form is acceptable.
    @Test func acceptEncodingDecidesTheEncoding() throws {
        let server = try TestServer(site: gzipSite).start()
        defer { server.stop() }
        // (path, Accept-Encoding lines, status, Content-Encoding, Vary)
        let rows: [(String, [String], Int, String?, Bool)] = [
            ("/app.js", [], 200, nil, true),
            ("/app.js", ["Accept-Encoding: gzip"], 200, "gzip", true),
            ("/app.js", ["Accept-Encoding: gzip, deflate, br, zstd"], 200, "br", true),  // the smallest first
            ("/app.js", ["Accept-Encoding: gzip, zstd"], 200, "zstd", true),
            ("/app.js", ["Accept-Encoding: zstd;q=0.5, gzip"], 200, "gzip", true),
            ("/app.js", ["Accept-Encoding: br;q=0.9, zstd"], 200, "zstd", true),
            ("/app.js", ["Accept-Encoding: x-gzip"], 200, "gzip", true),
            ("/app.js", ["Accept-Encoding: br"], 200, "br", true),
            ("/app.js", ["Accept-Encoding: deflate"], 200, nil, true),
            ("/app.js", ["Accept-Encoding:"], 200, nil, true),
            ("/app.js", ["Accept-Encoding: gzip;q=0"], 200, nil, true),
            ("/app.js", ["Accept-Encoding: gzip;q=0.5, identity"], 200, nil, true),
            ("/app.js", ["Accept-Encoding: gzip, identity;q=0.5"], 200, "gzip", true),
            ("/app.js", ["Accept-Encoding: *"], 200, "br", true),
            ("/app.js", ["Accept-Encoding: *;q=0"], 406, nil, false),
            ("/app.js", ["Accept-Encoding: identity;q=0"], 406, nil, false),
            ("/app.js", ["Accept-Encoding: identity;q=0", "Accept-Encoding: gzip"], 200, "gzip", true),
            ("/app.js", ["Accept-Encoding: *;q=0, identity"], 200, nil, true),
            ("/page.html", ["Accept-Encoding: gzip"], 200, "gzip", true),
            // Below min_length: never compressed, so no Vary; refusing identity leaves nothing.
            ("/small.txt", ["Accept-Encoding: gzip"], 200, nil, false),
            ("/small.txt", ["Accept-Encoding: gzip, identity;q=0"], 406, nil, false),
            // Already compressed formats are never compressed again.
            ("/photo.png", ["Accept-Encoding: gzip"], 200, nil, false),
            ("/photo.png", ["Accept-Encoding: identity;q=0"], 406, nil, false),
            // A sidecar makes any file's response vary.
            ("/style.css", ["Accept-Encoding: gzip"], 200, "gzip", true),
            ("/style.css", [], 200, nil, true),
            // Errors are not negotiated.
            ("/missing.js", ["Accept-Encoding: identity;q=0"], 404, nil, false),
        ]
        for (path, lines, expectedStatus, encoding, vary) in rows {
            let (status, headers, _) = try rawFetch(server.port, path, lines)
            #expect(status == expectedStatus, "\(path) \(lines)")
            #expect(headers["content-encoding"] == encoding, "\(path) \(lines)")
            #expect((headers["vary"] == "Accept-Encoding") == vary, "\(path) \(lines)")
        }
        let (_, _, body) = try rawFetch(server.port, "/app.js", ["Accept-Encoding: identity;q=0"])
        #expect(String(decoding: body, as: UTF8.self).contains("406 Not Acceptable"))
    }

    /// Each encoding has its own ETag, and a conditional request compares with the one it would get.
    @Test func eachEncodingRevalidatesWithItsOwnETag() throws {
        let server = try TestServer(site: gzipSite).start()
        defer { server.stop() }
        for path in ["/app.js", "/style.css"] {
            let (_, plain, _) = try rawFetch(server.port, path)
            let (_, gzipped, _) = try rawFetch(server.port, path, ["Accept-Encoding: gzip"])
            let plainTag = try #require(plain["etag"])
            let gzipTag = try #require(gzipped["etag"])
            #expect(plainTag != gzipTag && plainTag.hasPrefix("\"") && gzipTag.hasPrefix("\""), "\(path)")
            // (encoding asked, If-None-Match, status, ETag of the answer)
            let rows: [([String], String, Int, String)] = [
                (["Accept-Encoding: gzip"], gzipTag, 304, gzipTag),
                ([], gzipTag, 200, plainTag),
                (["Accept-Encoding: gzip"], plainTag, 200, gzipTag),
                ([], plainTag, 304, plainTag),
                (["Accept-Encoding: gzip"], "W/" + gzipTag, 304, gzipTag),  // weak comparison
                (["Accept-Encoding: gzip"], "\"other\", " + gzipTag, 304, gzipTag),
            ]
            for (lines, tag, expected, answerTag) in rows {
                let (status, headers, body) = try rawFetch(server.port, path, lines + ["If-None-Match: \(tag)"])
                #expect(status == expected, "\(path) \(lines) \(tag)")
                #expect(headers["etag"] == answerTag, "\(path) \(lines) \(tag)")
                if status == 304 {
                    #expect(body.isEmpty && headers["vary"] == "Accept-Encoding" && headers["content-encoding"] == nil)
                }
            }
            // If-Match is strong, per encoding too; If-Modified-Since works for both.
            #expect(try rawFetch(server.port, path, ["Accept-Encoding: gzip", "If-Match: \(gzipTag)"]).0 == 200)
            #expect(try rawFetch(server.port, path, ["If-Match: \(gzipTag)"]).0 == 412)
            let modified = try #require(gzipped["last-modified"])
            #expect(try rawFetch(server.port, path, ["Accept-Encoding: gzip", "If-Modified-Since: \(modified)"]).0 == 304)
            #expect(try rawFetch(server.port, path, ["If-Modified-Since: \(modified)"]).0 == 304)
        }
    }

    /// A Range over a compressible file: over the sidecar's bytes when there is one, else over the file's
    /// own bytes, never over bytes compressed here.
    @Test func rangesUseTheSidecarOrTheFileItself() throws {
        let server = try TestServer(site: gzipSite).start()
        defer { server.stop() }
        let sidecar = try Data(contentsOf: server.site.appendingPathComponent("style.css.gz"))
        let (status, headers, body) = try rawFetch(server.port, "/style.css", ["Accept-Encoding: gzip", "Range: bytes=10-109"])
        #expect(status == 206 && headers["content-encoding"] == "gzip")
        #expect(headers["content-range"] == "bytes 10-109/\(sidecar.count)")
        #expect(Data(body) == sidecar[10..<110])
        // The whole sidecar, then its bytes as they are.
        let whole = try rawFetch(server.port, "/style.css", ["Accept-Encoding: gzip"])
        #expect(Data(whole.2) == sidecar && whole.1["content-length"] == String(sidecar.count))
        // Two ranges: multipart over the sidecar, Content-Encoding in the head, not in the parts.
        let multi = try rawFetch(server.port, "/style.css", ["Accept-Encoding: gzip", "Range: bytes=0-1,500-501"])
        #expect(multi.0 == 206 && multi.1["content-encoding"] == "gzip")
        #expect(multi.1["content-type"]?.hasPrefix("multipart/byteranges") == true)
        #expect(String(decoding: multi.2, as: UTF8.self).contains("Content-Range: bytes 0-1/\(sidecar.count)"))

        let file = try Data(contentsOf: server.site.appendingPathComponent("app.js"))
        let plain = try rawFetch(server.port, "/app.js", ["Accept-Encoding: gzip", "Range: bytes=10-109"])
        #expect(plain.0 == 206 && plain.1["content-encoding"] == nil)
        #expect(plain.1["content-range"] == "bytes 10-109/\(file.count)")
        #expect(Data(plain.2) == file[10..<110])
        // A client that refuses identity gets the whole gzip body rather than a range of it.
        let refused = try rawFetch(server.port, "/app.js", ["Accept-Encoding: gzip, identity;q=0", "Range: bytes=10-109"])
        #expect(refused.0 == 200 && refused.1["content-encoding"] == "gzip")

        // A sidecar older than its file is ignored: the file is compressed here instead.
        let stale = try rawFetch(server.port, "/stale.js", ["Accept-Encoding: gzip"])
        let staleSidecar = try Data(contentsOf: server.site.appendingPathComponent("stale.js.gz"))
        #expect(stale.1["content-encoding"] == "gzip" && stale.1["etag"]?.hasSuffix("-gz6\"") == true)
        #expect(Data(stale.2) != staleSidecar)
        let ranged = try rawFetch(server.port, "/stale.js", ["Accept-Encoding: gzip", "Range: bytes=0-9"])
        #expect(ranged.0 == 206 && ranged.1["content-encoding"] == nil)
    }

    @Test func headGivesTheSameHeadersAsGet() throws {
        let big = 3 * 1_048_576
        let server = try TestServer(site: { site in
            try gzipSite(site)
            try Data(sourceLikeText(bytes: big, seed: 5)).write(to: site.appendingPathComponent("big.txt"))
        }).start()
        defer { server.stop() }
        for path in ["/app.js", "/style.css", "/big.txt", "/photo.png", "/small.txt"] {
            for lines in [[], ["Accept-Encoding: gzip"]] {
                let get = try rawFetch(server.port, path, lines)
                let head = try rawFetch(server.port, path, method: "HEAD", lines)
                #expect(comparable(head.1) == comparable(get.1), "\(path) \(lines)")
                #expect(head.2.isEmpty, "\(path) \(lines)")
            }
        }
        // The streamed form's headers (3 MiB is above cache_file_max).
        let head = try rawFetch(server.port, "/big.txt", method: "HEAD", ["Accept-Encoding: gzip"])
        #expect(head.1["transfer-encoding"] == "chunked" && head.1["content-length"] == nil)
        // HTTP/1.0 cannot take chunks: a file too large to compress whole goes as it is.
        let old = try exchange(port: server.port, "GET /big.txt HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n", timeout: 10)
        #expect(old.contains("Content-Length: \(big)\r\n") && !old.contains("Content-Encoding"))
    }

    /// A body compressed as it is sent has no length when its response starts: its access log line
    /// waits for the end and then says how many bytes the body came to (the gzip bytes the client got,
    /// without chunked framing), over HTTP/1.1 and HTTP/2, in both formats; a client that goes away
    /// in the middle gets a line with what was made until then.
    @Test func streamedBodiesAreLoggedWithTheBytesSent() throws {
        let big = 3 * 1_048_576
        for format in ["combined", "json"] {
            let directory = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let (cert, key) = try makeTestCertificate(in: directory)
            let server = try TestServer(
                config: "access_log_format: \(format)\ntls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n",
                site: { site in try Data(sourceLikeText(bytes: big, seed: 9)).write(to: site.appendingPathComponent("big.txt")) }
            ).start()
            defer { server.stop() }
            let tlsPort = try #require(server.tlsPort)
            let plain = server.directory.appendingPathComponent("plain.gz")
            let secure = server.directory.appendingPathComponent("secure.gz")
            _ = try curl(["-H", "Accept-Encoding: gzip", "-o", plain.path, "\(server.url)/big.txt"])
            _ = try curl(["-k", "--http2", "-H", "Accept-Encoding: gzip", "-o", secure.path, "https://127.0.0.1:\(tlsPort)/big.txt"])
            let plainBytes = try Data(contentsOf: plain).count
            let secureBytes = try Data(contentsOf: secure).count
            #expect(plainBytes > 1000 && plainBytes < big / 2 && secureBytes == plainBytes)
            // A client that reads the head and a little, then goes.
            let client = try RawConnection(port: server.port)
            client.setTimeout(5)
            client.send("GET /big.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
            var scratch = [UInt8](repeating: 0, count: 4096)
            _ = recv(client.fd, &scratch, scratch.count, 0)
            client.close()
            let lines = accessLines(server, count: 3)
            #expect(lines.count == 3, "\(lines)")
            if format == "combined" {
                #expect(lines.contains { $0.contains("\"GET /big.txt HTTP/1.1\" 200 \(plainBytes) ") }, "\(lines)")
                #expect(lines.contains { $0.contains("\"GET /big.txt HTTP/2.0\" 200 \(secureBytes) ") }, "\(lines)")
                #expect(!lines.contains { $0.contains(" 200 - ") }, "\(lines)")
            } else {
                #expect(lines.contains { $0.contains("\"request\":\"GET /big.txt HTTP/1.1\",\"status\":200,\"bytes\":\(plainBytes),") }, "\(lines)")
                #expect(lines.contains { $0.contains("\"request\":\"GET /big.txt HTTP/2.0\",\"status\":200,\"bytes\":\(secureBytes),") }, "\(lines)")
                #expect(!lines.contains { $0.contains("\"bytes\":null") }, "\(lines)")
            }
            // The one that went away: fewer bytes than the whole body, and some.
            let partial = lines.filter { !$0.contains(" \(plainBytes) ") && !$0.contains(":\(plainBytes),") }
            #expect(partial.count == 1, "\(lines)")
        }
    }

    /// The compressed cache is keyed by file version: a changed file is compressed afresh, and served
    /// as soon as the open-file cache sees the change.
    @Test func aChangedFileIsCompressedAfresh() throws {
        let server = try TestServer(config: "file_cache: {valid: 100ms}\n", site: gzipSite).start()
        defer { server.stop() }
        let file = server.site.appendingPathComponent("app.js")
        let first = server.directory.appendingPathComponent("first")
        _ = try curl(["--compressed", "-o", first.path, server.url + "/app.js"])
        #expect(try Data(contentsOf: first) == Data(contentsOf: file))
        for round in 0..<3 {
            // Same size, new bytes: only the modification time and content tell.
            let changed = sourceLikeText(bytes: 100 * 1024, seed: UInt64(100 + round))
            usleep(20_000)
            try Data(changed).write(to: file)
            let output = server.directory.appendingPathComponent("round\(round)")
            #expect(waitUntil(seconds: 2) {
                _ = try? curl(["--compressed", "-o", output.path, server.url + "/app.js"])
                return (try? Data(contentsOf: output)) == Data(changed)
            }, "round \(round)")
        }
        // A sidecar that appears later is picked up, and one that goes away is dropped.
        let css = server.site.appendingPathComponent("page.html")
        _ = try run("gzip", ["-k", "-f", "-9", css.path])
        let sidecar = try Data(contentsOf: server.site.appendingPathComponent("page.html.gz"))
        #expect(waitUntil(seconds: 2) { (try? rawFetch(server.port, "/page.html", ["Accept-Encoding: gzip"]).2) == Array(sidecar) })
        unlink(server.site.appendingPathComponent("page.html.gz").path)
        #expect(waitUntil(seconds: 2) {
            (try? rawFetch(server.port, "/page.html", ["Accept-Encoding: gzip"]).1["etag"]?.hasSuffix("-gz6\"")) == true
        })
    }

    /// Many files compressed one after another: the worker's memory stays near `gzip.cache`, where
    /// without the bound it grows by every body (the control run with a large budget shows it would).
    @Test func compressedBodiesStayWithinTheCacheBudget() throws {
        func growth(budget: String) throws -> Int {
            // One level per coding: the budget is about the bodies kept, not the helper thread's
            // encoder memory while it works on a best level.
            let server = try TestServer(
                config: "workers: {min: 1, max: 1}\ngzip: {cache: \(budget)}\ncompression: {brotli: {best: 4}, zstd: {best: 6}}\n", site: { site in
                for index in 0..<240 {
                    // Hex text: about half its size compressed, so 240 files hold about 9 MB of gzip.
                    var bytes = [UInt8](repeating: 0, count: 80_000)
                    var state = UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15
                    for offset in bytes.indices {
                        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                        bytes[offset] = Array("0123456789abcdef".utf8)[Int(state >> 60)]
                    }
                    try Data(bytes).write(to: site.appendingPathComponent("f\(index).txt"))
                }
            }).start()
            defer { server.stop() }
            let worker = try #require(server.pids(of: "worker").first, "no worker process below \(server.pid); its log:\n\(server.log())")
            func resident() -> Int {
                let status = (try? String(contentsOfFile: "/proc/\(worker)/status", encoding: .utf8)) ?? ""
                let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
                return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
            }
            // Warm up: the deflate state, buffers and a few bodies.
            for index in 0..<10 { _ = try curl(["--compressed", "-o", "/dev/null", server.url + "/f\(index).txt"]) }
            let before = resident()
            // Forty requests per curl process: quick, and each body is compressed once.
            for start in stride(from: 10, to: 240, by: 40) {
                let urls = (start..<min(start + 40, 240)).flatMap { ["-o", "/dev/null", server.url + "/f\($0).txt"] }
                _ = try curl(["--compressed"] + urls)
            }
            #expect(server.pids(of: "worker") == [worker])
            return resident() - before
        }
        let bounded = try growth(budget: "1m")
        let unbounded = try growth(budget: "256m")
        #expect(bounded < 4_000, "worker grew by \(bounded) KiB with a 1 MiB budget")
        #expect(unbounded > 6_000, "control: \(unbounded) KiB with a 256 MiB budget")
    }

    @Test func compressionWorksTheSameOverTLS() throws {
        let certificates = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: certificates) }
        let (cert, key) = try makeTestCertificate(in: certificates)
        let server = try TestServer(config: "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n", site: { site in
            try gzipSite(site)
            try Data(sourceLikeText(bytes: 3 * 1_048_576, seed: 8)).write(to: site.appendingPathComponent("big.txt"))
        }).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        let base = ["--cacert", cert, "--resolve", "localhost:\(port):127.0.0.1"]
        for name in ["app.js", "style.css", "big.txt"] {
            let output = server.directory.appendingPathComponent("tls-\(name)")
            let headers = try curl(base + ["--compressed", "-H", "Accept-Encoding: gzip", "-D", "-", "-o", output.path, "https://localhost:\(port)/\(name)"])
            #expect(headers.lowercased().contains("content-encoding: gzip"), "\(name)")
            #expect(try Data(contentsOf: output) == Data(contentsOf: server.site.appendingPathComponent(name)), "\(name)")
        }
    }
}
