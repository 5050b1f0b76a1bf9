import CCrypt
import Foundation
import Testing

@testable import Server

/// Sites: routing by name, the config that makes them, and the pure parts of their rules.
@Suite struct SiteTableTests {
    static func site(_ names: [String]) -> SiteSettings {
        var site = SiteSettings()
        site.names = names
        return site
    }

    /// Sites 1 to 4 after the default (0).
    static let table = SiteTable([
        SiteSettings(), site(["example.com", "www.example.com"]), site(["*.example.com"]), site(["*.docs.example.com", "docs.example.com"]),
        site(["127.0.0.1", "[::1]"]),
    ])

    static func route(_ host: String) -> Int {
        let bytes = Array(host.utf8)
        return bytes.withUnsafeBytes { table.site($0, ByteSpan(start: 0, end: bytes.count)) }
    }

    // One row a case: Host as sent → the site it reaches (-1: no site claims it).
    @Test(arguments: [
        ("example.com", 1), ("EXAMPLE.com", 1), ("example.com:8443", 1), ("example.com.", 1), ("www.example.com", 1),
        ("a.example.com", 2), ("a.b.example.com", 2), ("docs.example.com", 3), ("x.docs.example.com", 3),
        ("X.Docs.Example.COM:443", 3), ("other.com", -1), ("example.org", -1), ("com", -1), ("xexample.com", -1),
        ("127.0.0.1:80", 4), ("[::1]:8443", 4), ("[::1]", 4), ("[::2]", -1), ("", -1), (".example.com", -1),
    ])
    func routing(host: String, site: Int) {
        #expect(SiteTableTests.route(host) == site, "\(host)")
    }

    @Test func eachOfAThousandSitesIsFound() {
        var sites = [SiteSettings()]
        for index in 0..<1000 { sites.append(SiteTableTests.site(["site\(index).test", "*.site\(index).test"])) }
        let table = SiteTable(sites)
        for index in stride(from: 0, to: 1000, by: 37) {
            for host in ["site\(index).test", "www.site\(index).test:443"] {
                let bytes = Array(host.utf8)
                #expect(bytes.withUnsafeBytes { table.site($0, ByteSpan(start: 0, end: bytes.count)) } == index + 1)
            }
        }
        let missing = Array("nosuch.test".utf8)
        #expect(missing.withUnsafeBytes { table.site($0, ByteSpan(start: 0, end: missing.count)) } == -1)
    }

    @Test func serverNamesAreLookedUpLikeHosts() {
        #expect("www.example.com".withCString { SiteTableTests.table.site(serverName: $0) } == 1)
        #expect("a.example.com".withCString { SiteTableTests.table.site(serverName: $0) } == 2)
        #expect("nope.test".withCString { SiteTableTests.table.site(serverName: $0) } == -1)
    }
}

@Suite struct SiteConfigTests {
    @Test func sitesInheritTheTopLevelAndOverrideTheirOwn() throws {
        let config = try loadConfig("""
            root: site
            index: home.html
            autoindex: true
            headers: [{match: "*.css", set: {Cache-Control: "max-age=60"}}]
            rate_limit: {requests_per_second: 10, burst: 20}
            sites:
              - names: [Example.com, "*.example.com", "www.example.com."]
                root: site
                autoindex: false
                redirects:
                  - {from: /old, to: /new, status: 308}
                  - {from: /blog/*, to: "https://blog.example.com/*", status: 302, query: drop}
                canonical_host: apex
                try_files: {files: [$uri, $uri.html, $uri/, /index.html], except: [/api/, /assets/]}
                access: {prefix: /admin/, allow: [10.0.0.0/8], deny: [10.0.0.1]}
              - names: [other.test]
                rate_limit: off
            """)
        #expect(config.sites.count == 2)
        let first = config.sites[0]
        #expect(first.names == ["example.com", "*.example.com", "www.example.com"])
        #expect(first.index == "home.html")
        #expect(first.autoindex == false)
        #expect(first.headers.count == 1)
        #expect(first.rules.rateLimit == RateLimit(perSecond: 10, burst: 20))
        #expect(first.rules.redirects == [
            Redirect(from: "/old", to: "/new", status: 308), Redirect(from: "/blog/*", to: "https://blog.example.com/*", status: 302, keepQuery: false),
        ])
        #expect(first.rules.canonicalHost == .apex)
        #expect(first.rules.tryFiles == TryFiles(candidates: ["$uri", "$uri.html", "$uri/", "/index.html"], except: ["/api/", "/assets/"]))
        #expect(first.rules.access == [AccessRule(prefix: "/admin/", allow: ["10.0.0.0/8"], deny: ["10.0.0.1"])])
        #expect(first.certificates == nil)
        #expect(config.sites[1].rules.rateLimit == nil)
        #expect(config.sites[1].root == config.root)
        #expect(config.hasDefaultSite)
    }

    @Test func siteErrorsNameTheSiteTheKeyAndTheLine() {
        let found = issues("""
            root: site
            sites:
              - names: [a.test, "bad name", "http://x.test"]
                redirects: [{from: old, to: /new}, {from: /x, to: /y, status: 304}]
                try_files: [$uri, $foo]
                access: {allow: [10.0.0.300/8]}
                gzip: {cache: 1m}
              - names: [A.TEST]
              - root: site
            unmatched_host: 418
            """)
        let lines = found.map { "\($0.line) \($0.key): \($0.message)" }
        func has(_ line: Int, _ key: String, _ words: String) -> Bool {
            lines.contains { $0.hasPrefix("\(line) \(key):") && $0.contains(words) }
        }
        #expect(has(3, "sites[0].names", "'bad name' is not a host name"), "\(lines)")
        #expect(has(3, "sites[0].names", "'http://x.test' is not a host name"), "\(lines)")
        #expect(has(4, "sites[0].redirects[0].from", "'old' is not /exact/path"), "\(lines)")
        #expect(has(4, "sites[0].redirects[1].status", "304 is not one of 301, 302, 303, 307 or 308"), "\(lines)")
        #expect(has(5, "sites[0].try_files", "'$foo' is not $uri"), "\(lines)")
        #expect(has(6, "sites[0].access.allow", "'10.0.0.300/8' is not a network"), "\(lines)")
        #expect(has(7, "sites[0].gzip.cache", "set gzip.cache at the top level"), "\(lines)")
        #expect(has(8, "sites[1].names", "'a.test' is claimed by sites[0] too"), "\(lines)")
        #expect(has(9, "sites[2].names", "a site needs the names"), "\(lines)")
        #expect(has(10, "unmatched_host", "'418' is not one of 404, 421 or close"), "\(lines)")
    }

    @Test func aSiteWithoutTheTopLevelRootServesOnlyItsNames() throws {
        let config = try loadConfig("""
            unmatched_host: close
            sites:
              - names: [a.test]
                root: site
            """)
        #expect(!config.hasDefaultSite)
        #expect(config.unmatchedHost == .close)
        #expect(config.explain(host: "b.test").contains("the connection is closed without an answer"))
        #expect(config.explain(host: "A.test:8080").contains("sites[0]"))
        #expect(config.explain(host: "A.test:8080").contains("by the name a.test"))
    }

    /// The README's example: every key is right; what is left are the files a real host has and this
    /// machine does not (certificates, roots, the htpasswd file, the log directory), and the user.
    @Test func theShippedMultiSiteExampleHasOnlyMissingFiles() {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent("config/multi-site.yaml").path
        var found: [ConfigIssue] = []
        do { _ = try ConfigLoader.load(path: path) } catch { found = error.issues }
        let unexpected = found.filter { issue in
            // (A certificate whose directory is missing is not set, so "TLS sockets need a certificate" follows.)
            !["does not exist", "cannot read the htpasswd file", "no such user", "TLS sockets need a certificate"].contains { issue.message.contains($0) }
        }
        #expect(unexpected.isEmpty, "\(unexpected)")
    }

    @Test func aMissingSiteRootIsAnIssue() {
        let found = issues("""
            root: site
            sites: [{names: [a.test], root: nowhere}]
            """)
        #expect(found.contains { $0.key == "sites[0].root" && $0.message.contains("does not exist") }, "\(found)")
    }

    @Test func htpasswdFilesMustHoldHashesNotPlainText() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-htpasswd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let good = directory.appendingPathComponent("good").path
        let plain = directory.appendingPathComponent("plain").path
        try "# staff\nalice:$6$salt$IxDD3jeSOb5eB1CX5LBsqZFVkJdido3OUILO5Ifz5iwMuTS4XMS130MTSuDDl3aCI6WouIL9AjRbLCelDCy.g.\n\n".write(toFile: good, atomically: true, encoding: .utf8)
        try "alice:$6$salt$x\nbob:secret\n".write(toFile: plain, atomically: true, encoding: .utf8)
        if case .success(let entries) = PasswordFile.read(good) { #expect(entries.map(\.0) == ["alice"]) } else { Issue.record("good file refused") }
        guard case .failure(let problem) = PasswordFile.read(plain) else {
            Issue.record("plain text accepted")
            return
        }
        #expect(problem.description.contains("\(plain):1"))
    }
}

@Suite struct SiteRuleTests {
    static func covers(_ path: String, directory: Bool, _ prefix: String) -> Bool {
        let bytes = Array(path.utf8)
        return bytes.withUnsafeBufferPointer { RequestPath.isUnder($0.baseAddress!, bytes.count, directory: directory, Array(prefix.utf8)) }
    }

    // Normalized paths (as RequestPath writes them: relative, "." for the root) under a prefix.
    @Test func prefixesCoverTheNormalizedPath() {
        #expect(SiteRuleTests.covers(".", directory: true, "/"))
        #expect(SiteRuleTests.covers("admin", directory: true, "/admin/"))
        #expect(SiteRuleTests.covers("admin", directory: false, "/admin/"))  // the directory without its slash
        #expect(SiteRuleTests.covers("admin/users", directory: false, "/admin/"))
        #expect(!SiteRuleTests.covers("administrator", directory: false, "/admin/"))
        #expect(SiteRuleTests.covers("administrator", directory: false, "/admin"))
        #expect(!SiteRuleTests.covers(".", directory: true, "/admin/"))
        #expect(!SiteRuleTests.covers("adm", directory: false, "/admin/"))
    }

    /// `try_files`' `except` prefixes use the same test, on the path as asked for.
    @Test func tryFilesExceptions() {
        #expect(SiteRuleTests.covers("api/users", directory: false, "/api/"))
        #expect(SiteRuleTests.covers("api", directory: false, "/api/"))
        #expect(!SiteRuleTests.covers("apis", directory: false, "/api/"))
        #expect(!SiteRuleTests.covers("app/route", directory: false, "/api/") && !SiteRuleTests.covers("app/route", directory: false, "/assets/"))
    }

    @Test func aTokenBucketPerAddress() {
        var limiter = RateLimiter(RateLimit(perSecond: 2, burst: 3))
        let client = SocketAddress(parsing: "192.0.2.7:1000")!
        let other = SocketAddress(parsing: "192.0.2.8:1000")!
        #expect(limiter.admit(client, now: 0) == nil)
        #expect(limiter.admit(client, now: 0) == nil)
        #expect(limiter.admit(client, now: 0) == nil)
        #expect(limiter.admit(client, now: 0) == 1)  // empty: a token comes back in 500 ms
        #expect(limiter.admit(other, now: 0) == nil)  // another address has its own bucket
        #expect(limiter.admit(client, now: 499) == 1)
        #expect(limiter.admit(client, now: 500) == nil)
        #expect(limiter.admit(client, now: 10_000) == nil)  // refilled to the burst, no more
        #expect(limiter.admit(client, now: 10_000) == nil)
        #expect(limiter.admit(client, now: 10_000) == nil)
        #expect(limiter.admit(client, now: 10_000) != nil)
    }

    @Test func base64AndTheBasicScheme() {
        #expect(BasicAuth.base64Decode(Array("YWxpY2U6c2VjcmV0".utf8)) == Array("alice:secret".utf8))
        #expect(BasicAuth.base64Decode(Array("YQ==".utf8)) == Array("a".utf8))
        #expect(BasicAuth.base64Decode(Array("YWI=".utf8)) == Array("ab".utf8))
        #expect(BasicAuth.base64Decode(Array("YW!=".utf8)) == nil)
        #expect(BasicAuth.base64Decode(Array("YWJ".utf8)) == nil)
        let header = Array("bAsIc YWxpY2U6c2VjcmV0".utf8)
        let token = header.withUnsafeBytes { BasicAuth.token($0, ByteSpan(start: 0, end: header.count)) }
        #expect(token == ByteSpan(start: 6, end: header.count))
        let bearer = Array("Bearer abc".utf8)
        #expect(bearer.withUnsafeBytes { BasicAuth.token($0, ByteSpan(start: 0, end: bearer.count)) } == nil)
    }

    /// Real hashes of each kind, made here by libcrypt: the right password passes, a wrong one does
    /// not, and a repeated credential is answered from memory without hashing again.
    @Test(arguments: ["$2b$05$", "$6$", "$y$"])
    func passwordsAreVerifiedWithLibcrypt(prefix: String) throws {
        var setting = [CChar](repeating: 0, count: 384)
        var data = crypt_data()
        guard crypt_gensalt_rn(prefix, 0, nil, 0, &setting, 384) != nil, let hashed = crypt_r("s3cret", setting, &data)
        else {
            Issue.record("libcrypt cannot make a \(prefix) hash here")
            return
        }
        let hash = String(cString: hashed)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-auth-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("htpasswd").path
        try "carol:\(hash)\n".write(toFile: path, atomically: true, encoding: .utf8)
        let file = PasswordFile(path: path)
        file.refresh(now: 0, validity: 1000)
        let auth = BasicAuth()
        func allows(_ credentials: String) -> Bool {
            let head = "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic \(Data(credentials.utf8).base64EncodedString())\r\n\r\n"
            let bytes = Array(head.utf8)
            return bytes.withUnsafeBytes { auth.allows($0, headLength: bytes.count, file: file) }
        }
        #expect(allows("carol:s3cret"))
        #expect(!allows("carol:wrong"))
        #expect(!allows("mallory:s3cret"))
        #expect(auth.verifications == 2)  // mallory has no hash to check
        #expect(allows("carol:s3cret"))
        #expect(!allows("carol:wrong"))
        #expect(auth.verifications == 2)
    }
}
