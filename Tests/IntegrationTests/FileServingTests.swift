import Foundation
import Glibc
import Testing

/// GET and HEAD semantics against a real server, with curl.
@Suite(.serialized) struct FileServingTests {
    @Test func getServesTheFileWithItsHeaders() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let response = try fetch(server.url + "/")
        #expect(response.status == 200)
        #expect(response.body == "<!doctype html><p>home</p>\n")
        #expect(response.headers["content-type"] == "text/html; charset=utf-8")
        #expect(response.headers["content-length"] == "27")
        #expect(response.headers["etag"]?.hasPrefix("\"") == true)
        let info = try FileManager.default.attributesOfItem(atPath: server.site.appendingPathComponent("index.html").path)
        let modified = try #require(info[.modificationDate] as? Date)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        #expect(response.headers["last-modified"] == formatter.string(from: modified))
        let date = try #require(response.headers["date"].flatMap { formatter.date(from: $0) })
        #expect(abs(date.timeIntervalSinceNow) < 5)
        // HEAD: the same headers, no body.
        let head = try fetch(server.url + "/", ["-I"])
        #expect(head.status == 200)
        #expect(head.body.isEmpty)
        #expect(head.headers["content-length"] == "27")
        #expect(head.headers["etag"] == response.headers["etag"])
    }

    @Test func mediaTypes() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let expected = [
            "/app.mjs": "text/javascript; charset=utf-8", "/module.wasm": "application/wasm", "/photo.webp": "image/webp",
            "/photo.avif": "image/avif", "/font.woff2": "font/woff2", "/style.css": "text/css; charset=utf-8",
        ]
        for (path, type) in expected {
            #expect(try fetch(server.url + path).headers["content-type"] == type, "\(path)")
        }
        let zero = try fetch(server.url + "/zero.txt")
        #expect(zero.status == 200 && zero.headers["content-length"] == "0" && zero.body.isEmpty)
        #expect(try fetch(server.url + "/a%20b.txt").body == "space\n")
    }

    @Test func directoriesRedirectAndServeTheirIndex() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let redirect = try fetch(server.url + "/docs?x=1")
        #expect(redirect.status == 301)
        #expect(redirect.headers["location"] == "/docs/?x=1")
        let index = try fetch(server.url + "/docs/")
        #expect(index.status == 200 && index.body == "<p>docs</p>\n")
        #expect(index.headers["content-type"] == "text/html; charset=utf-8")
        #expect(try status(server.url + "/empty/") == 404)  // no index, and listings are off
        // The Location comes from the normalized path, re-encoded: never a protocol-relative URL
        // to another site, never a raw CR LF.
        try FileManager.default.createDirectory(at: server.site.appendingPathComponent("evil.example"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: server.site.appendingPathComponent("a\r\nb c"), withIntermediateDirectories: true)
        #expect(try fetch(server.url + "//evil.example", ["--path-as-is"]).headers["location"] == "/evil.example/")
        let injected = try fetch(server.url + "/a%0D%0Ab%20c")
        #expect(injected.status == 301)
        #expect(injected.headers["location"] == "/a%0D%0Ab%20c/")
        #expect(try status(server.url + "/missing.html") == 404)
        #expect(try status(server.url + "/index.html/x") == 404)
    }

    @Test func nothingEscapesTheRoot() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        #expect(try status(server.url + "/../../etc/hostname", ["--path-as-is"]) == 400)
        #expect(try status(server.url + "/%2e%2e/%2e%2e/etc/hostname") == 400)
        #expect(try status(server.url + "/docs/..%2F..%2Fetc/hostname") == 400)
        #expect(try status(server.url + "/index.html%00.txt") == 400)
        #expect(try status(server.url + "/escape") == 403)  // a symlink out of the root
        #expect(try fetch(server.url + "/inside-link.html").body == "<!doctype html><p>home</p>\n")
        #expect(try status(server.url + "/fifo", ["--max-time", "5"]) == 403)
        #expect(try status(server.url + "/.env") == 403)
        #expect(try status(server.url + "/.git/config") == 403)
        #expect(try status(server.url + "/docs/../.git/config", ["--path-as-is"]) == 403)
        #expect(try fetch(server.url + "/.well-known/security.txt").status == 200)
    }

    /// A file its mode makes unreadable is 403. Started as root with no `user`, the server still never
    /// serves as root: every process below the supervisor, and the supervisor once its sockets are
    /// bound, runs as nobody, so a mode-000 file stays unreadable (issue 14).
    @Test func unreadableFilesAre403AndNothingServesAsRoot() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        #expect(try status(server.url + "/secret.txt") == 403)
        #expect(try status(server.url + "/index.html") == 200)
        if getuid() == 0 {
            func uid(_ pid: Int32) -> String? {
                let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
                let line = status?.components(separatedBy: "\n").first { $0.hasPrefix("Uid:") } ?? ""
                return line.split(separator: "\t").dropFirst().first.map(String.init)
            }
            for pid in [server.pid] + descendants(of: server.pid) { #expect(uid(pid) == "65534", "\(commandLine(of: pid))") }
            #expect(server.log().contains("running as user nobody (no 'user' is set"))
        }
    }

    @Test func ipv6AndSeveralListeners() throws {
        let server = try TestServer(flags: ["--listen", "127.0.0.1:0", "--listen", "[::1]:0"], site: richSite).start()
        defer { server.stop() }
        let pattern = try Regex(#"listening on http://\[::1\]:(\d+)"#)
        let match = try #require(server.log().firstMatch(of: pattern))
        let port = try #require(match.output[1].substring)
        #expect(try fetch("http://[::1]:\(port)/style.css").body == "body{}\n")
        #expect(try fetch(server.url + "/style.css").body == "body{}\n")
        // The access log shows the IPv6 client.
        #expect(waitUntil(seconds: 5) { ((try? String(contentsOf: server.accessLog, encoding: .utf8)) ?? "").contains("::1 - - [") })
    }

    @Test func theOpenFileCacheFollowsChangesWithinItsValidity() throws {
        let server = try TestServer(config: "file_cache: {entries: 16, valid: 200ms, inline_max: 4}\n", site: richSite).start()
        defer { server.stop() }
        let small = server.site.appendingPathComponent("changing.txt")
        try "one".write(to: small, atomically: false, encoding: .utf8)
        #expect(try curl([server.url + "/changing.txt"]) == "one")
        let etag = try fetch(server.url + "/changing.txt").headers["etag"]
        // Same size, new content and mtime: seen once the entry is re-checked.
        usleep(20_000)
        try "two".write(to: small, atomically: false, encoding: .utf8)
        #expect(waitUntil(seconds: 2) { (try? curl([server.url + "/changing.txt"])) == "two" })
        #expect(try fetch(server.url + "/changing.txt").headers["etag"] != etag)
        // Replaced by rename (as deploy tools do), larger than inline_max so it is sent with sendfile.
        let replacement = server.site.appendingPathComponent("replacement.tmp")
        try "three and more".write(to: replacement, atomically: false, encoding: .utf8)
        rename(replacement.path, small.path)
        #expect(waitUntil(seconds: 2) { (try? curl([server.url + "/changing.txt"])) == "three and more" })
        unlink(small.path)
        #expect(waitUntil(seconds: 2) { (try? status(server.url + "/changing.txt")) == 404 })
        // More files than entries: every one is still served right.
        for index in 0..<40 {
            try "file \(index)".write(to: server.site.appendingPathComponent("f\(index).txt"), atomically: false, encoding: .utf8)
        }
        for index in 0..<40 {
            #expect(try curl([server.url + "/f\(index).txt"]) == "file \(index)")
        }
    }

    /// Paths whose hashes pick the same set of the open-file cache all stay open, up to its four slots,
    /// and one more evicts the least recently used of them. (With one slot per hash, two busy paths
    /// that shared it reopened their files on every request.)
    @Test func pathsThatShareACacheSetStayOpen() throws {
        // The cache's hash of a path: FNV-1a over the path beneath the root, then the directory flag (0).
        func hash(_ path: String) -> UInt64 {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in path.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            return hash &* 0x100_0000_01b3
        }
        // Five names in one slot of eight, so in one set whatever the layout.
        var names: [String] = []
        var candidate = 0
        while names.count < 5 {
            let name = "shared\(candidate).txt"
            if hash(name) % 8 == hash("shared0.txt") % 8 { names.append(name) }
            candidate += 1
        }
        func body(_ name: String) -> String { String(repeating: name, count: 20) }
        let server = try TestServer(config: "file_cache: {entries: 8, inline_max: 4}\n", site: { site in
            try TestServer.defaultSite(site)
            for name in names { try body(name).write(to: site.appendingPathComponent(name), atomically: false, encoding: .utf8) }
        }).start()
        defer { server.stop() }
        let worker = try #require(server.pids(of: "worker").first)
        // The files the worker holds open (larger than inline_max, a cached file keeps its descriptor).
        func held() -> Set<String> {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(worker)/fd")) ?? []
            return Set(fds.compactMap { fd in
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(worker)/fd/\(fd)"))
                    .map { ($0 as NSString).lastPathComponent }
            }.filter { names.contains($0) })
        }
        for round in 0..<2 {
            for name in names.prefix(4) { #expect(try curl([server.url + "/" + name]) == body(name), "round \(round)") }
        }
        var open = Set<String>()
        #expect(waitUntil(seconds: 2) { open = held(); return open == Set(names.prefix(4)) }, "held open: \(open)")
        // The first is used again, so the second is the least recently used when the fifth comes.
        #expect(try curl([server.url + "/" + names[0]]) == body(names[0]))
        #expect(try curl([server.url + "/" + names[4]]) == body(names[4]))
        #expect(waitUntil(seconds: 2) { open = held(); return open == [names[0], names[2], names[3], names[4]] }, "held open: \(open)")
    }

    /// `valid` is a bound, not an average: the first request once `valid` has passed since a change
    /// gets the new file, every time (the worker's clock is read at each wake-up, not only at its
    /// 250 ms tick, which let a stale copy through for up to `valid` + 250 ms).
    @Test func theFirstRequestAfterValidSeesTheChange() throws {
        let server = try TestServer(config: "file_cache: {valid: 300ms}\n", site: richSite).start()
        defer { server.stop() }
        let file = server.site.appendingPathComponent("round.txt")
        for round in 0..<8 {
            try "round \(round)".write(to: file, atomically: false, encoding: .utf8)
            usleep(400_000)
            #expect(try curl([server.url + "/round.txt"]) == "round \(round)")
        }
    }

    @Test func methods() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let post = try fetch(server.url + "/", ["-X", "POST", "-d", "x=1"])
        #expect(post.status == 405)
        #expect(post.headers["allow"] == "GET, HEAD, OPTIONS")
        #expect(post.headers["connection"] == nil)  // the body is skipped, so the connection goes on
        #expect(try fetch(server.url + "/", ["-X", "DELETE"]).status == 405)
        let options = try fetch(server.url + "/", ["-X", "OPTIONS"])
        #expect(options.status == 204 && options.headers["allow"] == "GET, HEAD, OPTIONS")
        #expect(try fetch(server.url + "/", ["-X", "BREW"]).status == 501)
    }

    @Test func largeFilesArriveWhole() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let output = server.directory.appendingPathComponent("download.bin")
        let code = try curl(["-o", output.path, "-w", "%{http_code}", server.url + "/big.bin"])
        #expect(code == "200")
        let original = try Data(contentsOf: server.site.appendingPathComponent("big.bin"))
        #expect(try Data(contentsOf: output) == original)
        // A client that reads slowly still gets every byte (the send path waits for EPOLLOUT).
        let slow = try curl(["--limit-rate", "2M", "-o", output.path, "-w", "%{http_code} %{size_download}", server.url + "/big.bin"])
        #expect(slow == "200 \(original.count)")
    }
}

@Suite struct DeployTests {
    /// `root` through a symlink, swapped by a deploy (`current -> releases/42`): the new release is
    /// served within `file_cache.valid` with no reload, and deleting the old release changes nothing.
    /// A root deleted and made again is served again the same way (issue 14).
    @Test func aSwappedRootSymlinkIsServedWithoutAReload() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        chmod(directory.path, 0o755)
        func release(_ name: String) throws {
            let folder = directory.appendingPathComponent("releases/\(name)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try "release \(name)\n".write(to: folder.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        }
        try release("41")
        try release("42")
        let current = directory.appendingPathComponent("current").path
        symlink("releases/41", current)
        let server = try TestServer(flags: ["--root", current]).start()
        defer { server.stop() }
        #expect(try curl([server.url + "/"]) == "release 41\n")

        // The deploy: a new link renamed over the old one.
        symlink("releases/42", current + ".new")
        rename(current + ".new", current)
        #expect(waitUntil(seconds: 3) { (try? curl([server.url + "/"])) == "release 42\n" })
        try FileManager.default.removeItem(at: directory.appendingPathComponent("releases/41"))
        #expect(try curl([server.url + "/"]) == "release 42\n")

        // A root deleted and made again (a deploy that replaces the directory).
        let live = directory.appendingPathComponent("releases/42")
        try FileManager.default.removeItem(at: live)
        try release("42")
        try "again\n".write(to: live.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        #expect(waitUntil(seconds: 3) { (try? curl([server.url + "/"])) == "again\n" })
    }
}
