import Foundation
import Testing

/// What the configuration decides about a site: symlinks, encoded slashes, listings, error pages and
/// per-path headers, each against the real server.
@Suite struct SitePolicyTests {
    static func site(_ site: URL) throws {
        try richSite(site)
        let files: [(String, String)] = [
            ("assets/app.js", "let a = 1;\n"),
            ("assets/big.css", String(repeating: "a{}\n", count: 10_000)),
            ("errors/404.html", "<p>custom not found</p>\n"),
            ("list/b.txt", "b\n"),
            ("list/a&<b>.txt", "x\n"),
            ("list/sub dir/c.txt", "c\n"),
            ("list/.hidden", "h\n"),
            ("a/b.txt", "slash\n"),
            ("owned/file.txt", "owned\n"),
        ]
        for (name, content) in files {
            let url = site.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try content.write(to: url, atomically: true, encoding: .utf8)
        }
        symlink("owned/file.txt", site.appendingPathComponent("same-owner.txt").path)
        symlink("owned/file.txt", site.appendingPathComponent("other-owner.txt").path)
        if getuid() == 0 {
            // The link belongs to nobody, the file it points to to root.
            lchown(site.appendingPathComponent("other-owner.txt").path, 65534, 65534)
        }
    }

    @Test func symlinkPolicies() throws {
        let follow = try TestServer(site: SitePolicyTests.site).start()
        defer { follow.stop() }
        #expect(try status(follow.url + "/same-owner.txt") == 200)
        #expect(try status(follow.url + "/other-owner.txt") == 200)
        #expect(try status(follow.url + "/escape") == 403)  // never out of the root, whatever the policy

        let never = try TestServer(config: "symlinks: never\n", site: SitePolicyTests.site).start()
        defer { never.stop() }
        #expect(try status(never.url + "/same-owner.txt") == 403)
        #expect(try status(never.url + "/owned/file.txt") == 200)

        let owner = try TestServer(config: "symlinks: owner-match\n", site: SitePolicyTests.site).start()
        defer { owner.stop() }
        #expect(try curl([owner.url + "/same-owner.txt"]) == "owned\n")
        if getuid() == 0 {
            #expect(try status(owner.url + "/other-owner.txt") == 403)
        }
        #expect(try status(owner.url + "/escape") == 403)
    }

    @Test func encodedSlashByPolicy() throws {
        let decode = try TestServer(site: SitePolicyTests.site).start()
        defer { decode.stop() }
        #expect(try curl([decode.url + "/a%2Fb.txt"]) == "slash\n")
        #expect(try status(decode.url + "/a%00b.txt") == 400)  // NUL: always 400
        let reject = try TestServer(config: "encoded_slash: reject\n", site: SitePolicyTests.site).start()
        defer { reject.stop() }
        #expect(try status(reject.url + "/a%2Fb.txt") == 404)
        #expect(try status(reject.url + "/a/b.txt") == 200)
    }

    @Test func directoryListings() throws {
        let off = try TestServer(site: SitePolicyTests.site).start()
        defer { off.stop() }
        #expect(try status(off.url + "/list/") == 404)  // off by default

        let on = try TestServer(config: "autoindex: true\n", site: SitePolicyTests.site).start()
        defer { on.stop() }
        let listing = try fetch(on.url + "/list/")
        #expect(listing.status == 200 && listing.headers["content-type"] == "text/html; charset=utf-8")
        // Sorted, dotfiles left out, names escaped in text and percent-encoded in links.
        #expect(listing.body.contains("<a href=\"a%26%3Cb%3E.txt\">a&amp;&lt;b&gt;.txt</a>"))
        #expect(listing.body.contains("<a href=\"sub%20dir/\">sub dir/</a>"))
        #expect(!listing.body.contains(".hidden"))
        #expect(!listing.body.contains("<b>"))
        let a = try #require(listing.body.range(of: "a&amp;"))
        let b = try #require(listing.body.range(of: ">b.txt<"))
        #expect(a.lowerBound < b.lowerBound)
        // A directory with an index still serves the index; links in a listing work.
        #expect(try fetch(on.url + "/docs/").body == "<p>docs</p>\n")
        #expect(try curl([on.url + "/list/sub%20dir/c.txt"]) == "c\n")
    }

    @Test func customErrorPages() throws {
        let server = try TestServer(config: "error_pages: {404: /errors/404.html, 403: /errors/missing.html}\n", site: SitePolicyTests.site).start()
        defer { server.stop() }
        let missing = try fetch(server.url + "/nothing-here")
        #expect(missing.status == 404 && missing.body == "<p>custom not found</p>\n")
        #expect(missing.headers["content-type"] == "text/html; charset=utf-8")
        #expect(missing.headers["etag"] == nil)
        #expect(try fetch(server.url + "/nothing-here", ["-I"]).headers["content-length"] == "24")
        // A page that does not exist falls back to the built-in body.
        let forbidden = try fetch(server.url + "/.env")
        #expect(forbidden.status == 403 && forbidden.body.contains("403 Forbidden"))
    }

    @Test func headersPerPath() throws {
        let config = """
            headers:
              - match: "/assets/*"
                set: {Cache-Control: "public, max-age=31536000, immutable", X-Asset: "yes"}
              - match: "*.css"
                set: {Cache-Control: "no-cache"}
              - match: "/index.html"
                set: {Content-Security-Policy: "default-src 'self'"}

            """
        let server = try TestServer(config: config, site: SitePolicyTests.site).start()
        defer { server.stop() }
        let script = try fetch(server.url + "/assets/app.js")
        #expect(script.headers["cache-control"] == "public, max-age=31536000, immutable")
        #expect(script.headers["x-asset"] == "yes")
        // The later rule replaces the earlier one's header of the same name; both rules' others stay.
        let style = try fetch(server.url + "/assets/big.css")
        #expect(style.headers["cache-control"] == "no-cache" && style.headers["x-asset"] == "yes")
        // On 304 and 206 too (RFC 9110 section 15.4.5: a 304 carries the 200's Cache-Control).
        let etag = try #require(script.headers["etag"])
        let notModified = try fetch(server.url + "/assets/app.js", ["-H", "If-None-Match: \(etag)"])
        #expect(notModified.status == 304 && notModified.headers["cache-control"] == "public, max-age=31536000, immutable")
        let partial = try fetch(server.url + "/assets/big.css", ["-r", "0-3"])
        #expect(partial.status == 206 && partial.headers["cache-control"] == "no-cache")
        // The root's index is the file /index.html.
        #expect(try fetch(server.url + "/").headers["content-security-policy"] == "default-src 'self'")
        #expect(try fetch(server.url + "/style.css").headers["x-asset"] == nil)
    }
}
