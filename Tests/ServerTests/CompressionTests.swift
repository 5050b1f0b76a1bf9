import CZlib
import Foundation
import Glibc
import Testing

@testable import Server

/// The preference a request head's Accept-Encoding lines give.
func preference(_ lines: [String]) -> EncodingPreference? {
    let text = "GET / HTTP/1.1\r\nHost: a\r\n" + lines.map { "Accept-Encoding:\($0.isEmpty ? "" : " ")\($0)\r\n" }.joined() + "\r\n"
    var bytes = Array(text.utf8)
    return bytes.withUnsafeMutableBytes { buffer in
        guard case .complete(let head) = RequestParser.parse(UnsafeRawBufferPointer(buffer), limits: ParserLimits()) else { return nil }
        return EncodingPreference.of(UnsafeRawBufferPointer(buffer), head)
    }
}

/// Inflates a gzip member with zlib (windowBits 31), so tests do not trust our own framing.
func gunzip(_ data: [UInt8]) -> [UInt8]? {
    var stream = z_stream()
    guard czlib_inflateInit2(&stream, 31) == Z_OK else { return nil }
    defer { inflateEnd(&stream) }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    var input = data
    let status: Int32 = input.withUnsafeMutableBufferPointer { inputBuffer in
        stream.next_in = inputBuffer.baseAddress
        stream.avail_in = uInt(inputBuffer.count)
        while true {
            let result = chunk.withUnsafeMutableBufferPointer { out -> Int32 in
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(out.count)
                return inflate(&stream, Z_NO_FLUSH)
            }
            output += chunk[0..<(chunk.count - Int(stream.avail_out))]
            if result != Z_OK { return result }
        }
    }
    return status == Z_STREAM_END && stream.avail_in == 0 ? output : nil
}

@Suite struct CompressionTests {
    /// RFC 9110 section 12.5.3, row by row: (field lines, gzip weight, identity weight, gzip chosen).
    @Test func acceptEncodingTable() throws {
        let rows: [([String], Int, Int, Bool)] = [
            ([], 0, 1000, false),  // no field: identity, as nginx does
            ([""], 0, 1000, false),  // empty: identity only
            (["gzip"], 1000, 1000, true),
            (["GZIP"], 1000, 1000, true),
            (["x-gzip"], 1000, 1000, true),
            (["gzip, deflate, br, zstd"], 1000, 1000, true),
            (["br, zstd"], 0, 1000, false),
            (["gzip;q=0"], 0, 1000, false),
            (["gzip; q=0.000"], 0, 1000, false),
            (["gzip;Q=0.5"], 500, 1000, false),  // identity is preferred at 1
            (["gzip;q=1.0, identity;q=0.5"], 1000, 500, true),
            (["gzip;q=0.5, identity;q=0.5"], 500, 500, true),  // a tie goes to the smaller body
            (["identity;q=0"], 0, 0, false),  // nothing acceptable: 406
            (["*"], 1000, 1000, true),
            (["*;q=0"], 0, 0, false),
            (["*;q=0, identity"], 0, 1000, false),
            (["*;q=0.3, gzip;q=0"], 0, 300, false),
            (["gzip;q=2"], 0, 1000, false),  // not a qvalue: refused
            (["gzip;q=abc"], 0, 1000, false),
            (["gzip;level=9;q=0.8"], 800, 1000, false),
            (["gzip;q=0", "gzip"], 1000, 1000, true),  // split over lines: one list
            (["identity;q=0", "gzip"], 1000, 0, true),
            (["  ,gzip , "], 1000, 1000, true),
        ]
        for (lines, gzip, identity, chosen) in rows {
            let found = try #require(preference(lines), "\(lines)")
            #expect(found.gzip == gzip && found.identity == identity, "\(lines)")
            #expect(found.prefersGzip == chosen, "\(lines)")
        }
    }

    /// br and zstd beside gzip: each weighed as the client says; the coding sent is the heaviest that
    /// can be had, a tie going to the earlier in the configured order (br, zstd, gzip by default: the
    /// smallest body), and only when it weighs at least as much as identity.
    @Test func brAndZstdAreWeighedAndTiesGoToTheConfiguredOrder() throws {
        let all: (ContentCoding) -> Bool = { _ in true }
        let order: [ContentCoding] = [.br, .zstd, .gzip]
        // (lines, br, zstd, gzip, chosen with every coding available)
        let rows: [([String], Int, Int, Int, ContentCoding?)] = [
            (["gzip, deflate, br, zstd"], 1000, 1000, 1000, .br),
            (["br"], 1000, 0, 0, .br),
            (["BR;q=0.8, gzip"], 800, 0, 1000, .gzip),
            (["zstd, br;q=0.9"], 900, 1000, 0, .zstd),
            (["gzip, zstd"], 0, 1000, 1000, .zstd),
            (["*"], 1000, 1000, 1000, .br),
            (["*;q=0.5, gzip"], 500, 500, 1000, .gzip),
            (["br;q=0.4, identity;q=0.5"], 400, 0, 0, nil),  // identity weighs more
            (["br;q=0.5, identity;q=0.5"], 500, 0, 0, .br),  // a tie goes to the smaller body
            (["zstd;q=0"], 0, 0, 0, nil),
        ]
        for (lines, br, zstd, gzip, chosen) in rows {
            let found = try #require(preference(lines), "\(lines)")
            #expect(found.br == br && found.zstd == zstd && found.gzip == gzip, "\(lines): \(found)")
            #expect(found.choose(order, available: all) == chosen, "\(lines)")
        }
        // What cannot be had is passed over; another order breaks ties its way.
        let every = try #require(preference(["gzip, br, zstd"]))
        #expect(every.choose(order) { $0 != .br } == .zstd)
        #expect(every.choose([.gzip, .zstd, .br], available: all) == .gzip)
        #expect(every.choose([.zstd], available: all) == .zstd)
        #expect(every.choose(order) { _ in false } == nil)
    }

    @Test func mediaTypePolicy() {
        let settings = ServerConfig.GzipSettings()
        for type in ["text/html; charset=utf-8", "text/css", "text/javascript; charset=utf-8", "application/json",
                     "application/manifest+json", "application/ld+json", "application/rss+xml", "image/svg+xml",
                     "application/wasm", "font/ttf"] {
            #expect(settings.compresses(type), "\(type)")
        }
        for type in ["image/png", "image/jpeg", "font/woff2", "application/zip", "application/gzip", "video/mp4",
                     "application/octet-stream", "application/pdf"] {
            #expect(!settings.compresses(type), "\(type)")
        }
        var everything = settings
        everything.types = ["*/*"]
        #expect(everything.compresses("application/octet-stream"))
        #expect(!everything.compresses("image/png"))  // `never` still wins
    }

    @Test func gzipSettingsAreReadAndCheckedWithTheirLine() throws {
        let config = try loadConfig("""
            root: site
            gzip:
              enabled: false
              level: 9
              min_length: 1k
              types: [text/*, application/*+json]
              never: [text/csv]
              precompressed: false
              cache: 8m
              cache_file_max: 256k
            """)
        #expect(config.gzip == ServerConfig.GzipSettings(
            enabled: false, level: 9, minLength: 1024, types: ["text/*", "application/*+json"], never: ["text/csv"],
            precompressed: false, cacheBytes: 8 << 20, cacheFileMax: 256 << 10, encodings: [.br, .zstd, .gzip]))
        let found = issues("root: site\ngzip:\n  level: 11\n  types: [text, 'a/b;c']\n  minimum: 3\n")
        #expect(found.map(\.key) == ["gzip.level", "gzip.types", "gzip.types", "gzip.minimum"])
        #expect(found.map(\.line) == [3, 4, 4, 5])
    }

    @Test func compressionSettingsAreReadAndCheckedWithTheirLine() throws {
        let config = try loadConfig("""
            root: site
            compression:
              encodings: [zstd, gzip]
              brotli: {level: 4, best: 10}
              zstd: {level: 3, best: 15}
            sites:
              - names: [a.example]
                root: site
                compression: {encodings: gzip}
            """)
        #expect(config.gzip.encodings == [.zstd, .gzip])
        #expect(config.gzip.brotliLevel == 4 && config.gzip.brotliBestLevel == 10)
        #expect(config.gzip.zstdLevel == 3 && config.gzip.zstdBestLevel == 15)
        #expect(config.sites.first?.gzip.encodings == [.gzip] && config.sites.first?.gzip.zstdLevel == 3)
        #expect(ServerConfig.GzipSettings().encodings == [.br, .zstd, .gzip])
        let found = issues("root: site\ncompression:\n  encodings: [br, deflate, br]\n  zstd: {level: 22}\n  brotli: {qualty: 3}\n")
        #expect(found.map(\.key) == ["compression.encodings", "compression.encodings", "compression.zstd.level", "compression.brotli.qualty"], "\(found)")
        #expect(found.map(\.line) == [3, 3, 4, 5])
    }

    /// A file compressed whole, and the same file streamed as chunks, both inflate to the file.
    @Test func wholeAndStreamedCompressionInflateToTheFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-gzip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var generator = SystemRandomNumberGenerator()
        for size in [0, 1, 300, 65_536, 65_537, 700_000] {
            let words = ["let", "const", "return", "function", "=>", "{", "}", "\n"]
            var text: [UInt8] = []
            while text.count < size { text += Array((words.randomElement(using: &generator)! + " ").utf8) }
            text = Array(text.prefix(size))
            let path = directory.appendingPathComponent("f\(size).js").path
            #expect(FileManager.default.createFile(atPath: path, contents: Data(text)))
            let fd = open(path, O_RDONLY)
            var info = stat()
            fstat(fd, &info)
            let file = try #require(CachedFile(
                fd: fd, info: info, contentType: "text/javascript", openedPath: [0], key: [0], inlineLimit: 1024, now: 0))
            let deflater = try #require(GzipDeflater(level: 6))
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
            defer { scratch.deallocate() }
            let whole = try #require(deflater.compressWhole(file, scratch: scratch))
            #expect(gunzip(Array(whole)) == text, "whole, \(size) bytes")
            let form = CachedFile(compressed: file, coding: .gzip, level: 6, body: whole)
            #expect(form.size == Int64(whole.count))
            // Every form made here has its coding and level in its ETag, level 0 (brotli's fastest)
            // included; the file's own has neither.
            let quickest = CachedFile(compressed: file, coding: .br, level: 0, body: nil)
            #expect(String(decoding: UnsafeRawBufferPointer(quickest.validators.etag), as: UTF8.self).hasSuffix("-br0\""))
            #expect(String(decoding: UnsafeRawBufferPointer(file.validators.etag), as: UTF8.self).filter { $0 == "-" }.count == 2)

            // Streamed: de-chunk, then inflate; the chunk framing must be exact.
            let stream = try #require(CompressionStream(source: file, coding: .gzip, level: 6))
            var framed: [UInt8] = []
            var consumed = 0
            while true {
                let chunk = try #require(stream.nextChunk(consumed: &consumed))
                framed += Array(chunk)
                if stream.finished { break }
            }
            #expect(consumed == size)
            var body: [UInt8] = []
            var index = 0
            var sawLast = false
            while index < framed.count {
                var length = 0
                while framed[index] != 13 {
                    length = length * 16 + Int(UInt8(ascii: "a") <= framed[index] ? framed[index] - 87 : framed[index] - 48)
                    index += 1
                }
                #expect(framed[index + 1] == 10)
                index += 2
                body += framed[index..<(index + length)]
                index += length
                #expect(framed[index] == 13 && framed[index + 1] == 10)
                index += 2
                if length == 0 {
                    sawLast = true
                    break
                }
            }
            #expect(sawLast && index == framed.count, "\(size) bytes: one last chunk, nothing after it")
            #expect(gunzip(body) == text, "streamed, \(size) bytes")
        }
    }

    @Test func theCompressedCacheKeepsWithinItsBudgetDroppingTheLeastRecentlyUsed() throws {
        let cache = CompressedCache(budget: 12_000)  // three bodies of 3,000 bytes and their headers
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-lru-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var forms: [(CompressedCache.Key, CachedFile)] = []
        for index in 0..<6 {
            let path = directory.appendingPathComponent("f\(index)").path
            #expect(FileManager.default.createFile(atPath: path, contents: Data(repeating: UInt8(index), count: 10)))
            let fd = open(path, O_RDONLY)
            var info = stat()
            fstat(fd, &info)
            let file = try #require(CachedFile(fd: fd, info: info, contentType: "text/plain", openedPath: [0], key: [0], inlineLimit: 0, now: 0))
            let body = UnsafeMutableRawBufferPointer.allocate(byteCount: 3000, alignment: 16)
            forms.append((CompressedCache.key(file, coding: .gzip), CachedFile(compressed: file, coding: .gzip, level: 6, body: body)))
        }
        for index in 0..<3 { cache.insert(forms[index].1, key: forms[index].0) }
        #expect(cache.count == 3)
        _ = cache.lookup(forms[0].0)  // 0 is now the most recently used; 1 the least
        cache.insert(forms[3].1, key: forms[3].0)
        #expect(cache.bytes <= 12_000 && cache.count == 3)
        #expect(cache.lookup(forms[1].0) == nil)
        #expect(cache.lookup(forms[0].0) === forms[0].1)
        #expect(cache.lookup(forms[3].0) === forms[3].1)
        // Another coding is another key (a level is not: a better one replaces the first).
        #expect(cache.lookup(CompressedCache.Key(device: forms[0].0.device, inode: forms[0].0.inode, size: forms[0].0.size,
                                                 modified: forms[0].0.modified, coding: .br)) == nil)
        let tiny = CompressedCache(budget: 100)
        tiny.insert(forms[5].1, key: forms[5].0)
        #expect(tiny.count == 0 && tiny.bytes == 0)  // larger than the whole budget: not kept
    }
}
