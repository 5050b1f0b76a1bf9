import Foundation
import Glibc
import Testing

/// Decodes `body` in `coding` (br, zstd or gzip) with Python's brotli and zstandard packages (PyPI), as
/// an independent decoder, and returns the bytes.
func decode(_ body: [UInt8], _ coding: String, in directory: URL) throws -> [UInt8] {
    let input = directory.appendingPathComponent("body-\(UUID().uuidString)")
    let output = directory.appendingPathComponent("decoded-\(UUID().uuidString)")
    try Data(body).write(to: input)
    defer {
        try? FileManager.default.removeItem(at: input)
        try? FileManager.default.removeItem(at: output)
    }
    let script = """
        import sys, gzip, brotli, zstandard
        data = open(sys.argv[2], 'rb').read()
        coding = sys.argv[1]
        if coding == 'br': out = brotli.decompress(data)
        elif coding == 'zstd':
            frame = zstandard.get_frame_parameters(data)
            assert frame.window_size <= 8 * 1024 * 1024, frame.window_size  # RFC 9659
            out = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        else: out = gzip.decompress(data)
        open(sys.argv[3], 'wb').write(out)
        """
    let result = try run("python3", ["-c", script, coding, input.path, output.path])
    guard result.status == 0 else { throw TestFailure("python3 could not decode \(coding): \(result.error)") }
    return Array(try Data(contentsOf: output))
}

/// brotli and zstd beside gzip: negotiated by weight with ties to the smaller body, each with its own
/// ETag and 304, precompressed sidecars, over HTTP/1.1 and HTTP/2, every body decoded by another
/// implementation and compared with the file.
@Suite struct BrotliZstdTests {
    static func site(_ site: URL) throws {
        try gzipSite(site)
        // style.css already has a .gz; give it .br and .zst too, made by other implementations.
        let css = site.appendingPathComponent("style.css").path
        let made = try run("python3", ["-c", """
            import sys, brotli, zstandard
            data = open(sys.argv[1], 'rb').read()
            open(sys.argv[1] + '.br', 'wb').write(brotli.compress(data, quality=11))
            open(sys.argv[1] + '.zst', 'wb').write(zstandard.ZstdCompressor(level=19).compress(data))
            """, css])
        if made.status != 0 { throw TestFailure("sidecars: \(made.error)") }
    }

    @Test func everyCodingDecodesToTheFileWithItsOwnValidators() throws {
        // One level each (no second pass), so the ETags stay put while the test compares them.
        let server = try TestServer(config: "compression: {brotli: {best: 4}, zstd: {best: 6}}\n", site: BrotliZstdTests.site).start()
        defer { server.stop() }
        let file = Array(try Data(contentsOf: server.site.appendingPathComponent("app.js")))
        var etags: [String: String] = [:]
        var lengths: [String: Int] = [:]
        for coding in ["br", "zstd", "gzip"] {
            let (status, headers, body) = try rawFetch(server.port, "/app.js", ["Accept-Encoding: \(coding)"])
            #expect(status == 200 && headers["content-encoding"] == coding && headers["vary"] == "Accept-Encoding", "\(coding): \(headers)")
            #expect(headers["content-length"] == String(body.count))
            #expect(try decode(body, coding, in: server.directory) == file, "\(coding)")
            let etag = try #require(headers["etag"])
            etags[coding] = etag
            lengths[coding] = body.count
            // 304 for its own ETag, 200 for another encoding's.
            let (revalidated, again, empty) = try rawFetch(server.port, "/app.js", ["Accept-Encoding: \(coding)", "If-None-Match: \(etag)"])
            #expect(revalidated == 304 && again["etag"] == etag && empty.isEmpty, "\(coding)")
            let (other, _, _) = try rawFetch(server.port, "/app.js", ["Accept-Encoding: identity", "If-None-Match: \(etag)"])
            #expect(other == 200, "\(coding)")
        }
        #expect(Set(etags.values).count == 3, "\(etags)")
        #expect(etags["br"]?.hasSuffix("-br4\"") == true && etags["zstd"]?.hasSuffix("-zst6\"") == true && etags["gzip"]?.hasSuffix("-gz6\"") == true)
        // Both are smaller than the file by far.
        for (coding, length) in lengths { #expect(length < file.count / 2, "\(coding): \(length)") }

        // Sidecars are sent as they are, each for its coding.
        let css = server.site.appendingPathComponent("style.css")
        for (coding, suffix) in [("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz")] {
            let sidecar = Array(try Data(contentsOf: URL(fileURLWithPath: css.path + suffix)))
            let (status, headers, body) = try rawFetch(server.port, "/style.css", ["Accept-Encoding: \(coding)"])
            #expect(status == 200 && headers["content-encoding"] == coding && body == sidecar, "\(coding)")
            #expect(try decode(body, coding, in: server.directory) == Array(try Data(contentsOf: css)))
            // A sidecar's bytes are the file's own: ranges of them are served, as for .gz.
            let (partial, _, slice) = try rawFetch(server.port, "/style.css", ["Accept-Encoding: \(coding)", "Range: bytes=0-9"])
            #expect(partial == 206 && slice == Array(sidecar.prefix(10)), "\(coding)")
        }
        // A Range on a file with no sidecar gets the file's own bytes, never a form made here.
        let (ranged, rangedHeaders, firstBytes) = try rawFetch(server.port, "/app.js", ["Accept-Encoding: br, zstd", "Range: bytes=0-9"])
        #expect(ranged == 206 && rangedHeaders["content-encoding"] == nil && firstBytes == Array(file.prefix(10)))
    }

    /// The first request for a file version is answered at once, at a fast level (brotli 4, zstd 6);
    /// the worker's helper thread then makes the best level (brotli 11, zstd 19), which replaces it in
    /// the cache and is within 2% of what the reference encoders make; its ETag is its own, so a client
    /// holding the first one revalidates to the new body. A change starts again from the fast level.
    @Test func theFirstRequestIsAnsweredAtOnceAndTheBestLevelFollows() throws {
        let server = try TestServer(config: "file_cache: {valid: 100ms}\n", site: BrotliZstdTests.site).start()
        defer { server.stop() }
        let path = server.site.appendingPathComponent("app.js")
        let reference = try run("python3", ["-c", """
            import sys, brotli, zstandard
            data = open(sys.argv[1], 'rb').read()
            print(len(brotli.compress(data, quality=11)), len(zstandard.ZstdCompressor(level=19).compress(data)))
            """, path.path]).output.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(reference.count == 2)
        let file = Array(try Data(contentsOf: path))
        for (index, (coding, fast, best)) in [("br", "br4", "br11"), ("zstd", "zst6", "zst19")].enumerated() {
            let (_, first, firstBody) = try rawFetch(server.port, "/app.js", ["Accept-Encoding: \(coding)"])
            let firstTag = try #require(first["etag"])
            #expect(firstTag.hasSuffix("-\(fast)\""), "\(coding): \(firstTag)")
            #expect(try decode(firstBody, coding, in: server.directory) == file)
            var latest: (Int, [String: String], [UInt8]) = (0, [:], [])
            #expect(waitUntil(seconds: 20) {
                latest = (try? rawFetch(server.port, "/app.js", ["Accept-Encoding: \(coding)"])) ?? (0, [:], [])
                return latest.1["etag"]?.hasSuffix("-\(best)\"") == true
            }, "\(coding): still \(latest.1["etag"] ?? "-")")
            #expect(try decode(latest.2, coding, in: server.directory) == file)
            #expect(latest.2.count <= firstBody.count)
            let limit = Double(reference.count == 2 ? reference[index] : 0) * 1.02
            #expect(Double(latest.2.count) <= limit, "\(coding): \(latest.2.count) bytes against \(reference)")
            let bestTag = try #require(latest.1["etag"])
            #expect(try rawFetch(server.port, "/app.js", ["Accept-Encoding: \(coding)", "If-None-Match: \(bestTag)"]).0 == 304)
            #expect(try rawFetch(server.port, "/app.js", ["Accept-Encoding: \(coding)", "If-None-Match: \(firstTag)"]).0 == 200)
        }
        // A new version: its first answer comes from the fast level again, without waiting.
        let changed = sourceLikeText(bytes: 100 * 1024, seed: 77)
        usleep(20_000)
        try Data(changed).write(to: path)
        var fresh: (Int, [String: String], [UInt8]) = (0, [:], [])
        #expect(waitUntil(seconds: 5) {
            fresh = (try? rawFetch(server.port, "/app.js", ["Accept-Encoding: br"])) ?? (0, [:], [])
            return (try? decode(fresh.2, "br", in: server.directory)) == changed
        })
        #expect(fresh.1["etag"]?.hasSuffix("-br4\"") == true, "\(fresh.1)")
    }

    /// A file above `cache_file_max` is compressed while it is sent, in every coding, chunked over
    /// HTTP/1.1 and in DATA frames over HTTP/2; zstd's window stays within 8 MB (RFC 9659: `decode`
    /// checks the frame), here with a 12 MiB file; HTTP/1.0 gets the file as it is.
    @Test func largeFilesStreamInEveryCoding() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (cert, key) = try makeTestCertificate(in: directory)
        let size = 12 * 1_048_576
        let server = try TestServer(config: "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n", site: { site in
            try Data(sourceLikeText(bytes: size, seed: 21)).write(to: site.appendingPathComponent("big.txt"))
        }).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        let file = Array(try Data(contentsOf: server.site.appendingPathComponent("big.txt")))
        for coding in ["br", "zstd", "gzip"] {
            let (status, headers, body) = try rawFetch(server.port, "/big.txt", ["Accept-Encoding: \(coding)"])
            #expect(status == 200 && headers["content-encoding"] == coding && headers["transfer-encoding"] == "chunked", "\(coding): \(headers)")
            // Its ETag names the streaming level the bytes are made at.
            let level = ["br": "br4", "zstd": "zst3", "gzip": "gz6"][coding]!
            #expect(headers["etag"]?.hasSuffix("-\(level)\"") == true, "\(coding): \(headers["etag"] ?? "-")")
            #expect(try decode(dechunk(body), coding, in: directory) == file, "\(coding) over HTTP/1.1")
            let raw = directory.appendingPathComponent("h2-\(coding)")
            let h2 = try curl(["-k", "--http2", "-H", "Accept-Encoding: \(coding)", "-D", "-", "-o", raw.path, "https://127.0.0.1:\(port)/big.txt"]).lowercased()
            #expect(h2.hasPrefix("http/2 200") && h2.contains("content-encoding: \(coding)"), "\(h2)")
            #expect(try decode(Array(Data(contentsOf: raw)), coding, in: directory) == file, "\(coding) over HTTP/2")
        }
        let old = try exchange(port: server.port, "GET /big.txt HTTP/1.0\r\nAccept-Encoding: br, zstd\r\n\r\n", timeout: 10)
        #expect(old.contains("Content-Length: \(size)\r\n") && !old.contains("Content-Encoding"))
    }

    @Test func http2AndCurlDecodeEveryCoding() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (cert, key) = try makeTestCertificate(in: directory)
        let server = try TestServer(config: "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n", site: BrotliZstdTests.site).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        let file = try Data(contentsOf: server.site.appendingPathComponent("app.js"))
        for coding in ["br", "zstd", "gzip"] {
            // curl decodes itself with --compressed; the raw body goes through Python.
            let decoded = directory.appendingPathComponent("decoded-\(coding)")
            let raw = directory.appendingPathComponent("raw-\(coding)")
            let headers = try curl(["-k", "--http2", "--compressed", "-H", "Accept-Encoding: \(coding)", "-D", "-", "-o", decoded.path,
                                    "https://127.0.0.1:\(port)/app.js"]).lowercased()
            #expect(headers.hasPrefix("http/2 200") && headers.contains("content-encoding: \(coding)"), "\(headers)")
            #expect(try Data(contentsOf: decoded) == file, "\(coding)")
            _ = try curl(["-k", "--http2", "-H", "Accept-Encoding: \(coding)", "-o", raw.path, "https://127.0.0.1:\(port)/app.js"])
            #expect(try decode(Array(Data(contentsOf: raw)), coding, in: directory) == Array(file), "\(coding)")
        }
        // What curl offers (deflate, gzip, br, zstd) gets brotli, the smallest.
        let offered = try curl(["-k", "--http2", "--compressed", "-D", "-", "-o", "/dev/null", "https://127.0.0.1:\(port)/app.js"]).lowercased()
        #expect(offered.contains("content-encoding: br"), "\(offered)")
    }
}

/// The body of a chunked message without its framing.
func dechunk(_ framed: [UInt8]) throws -> [UInt8] {
    var body: [UInt8] = []
    var index = 0
    while index < framed.count {
        var length = 0
        while index < framed.count, framed[index] != 13 {
            guard let digit = Int(String(UnicodeScalar(framed[index])), radix: 16) else { throw TestFailure("bad chunk size") }
            length = length * 16 + digit
            index += 1
        }
        index += 2
        if length == 0 { return body }
        guard index + length + 2 <= framed.count else { throw TestFailure("short chunk") }
        body += framed[index..<(index + length)]
        index += length + 2
    }
    throw TestFailure("no last chunk")
}
