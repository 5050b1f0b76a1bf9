import Foundation
import Glibc
import Testing

/// Several sites on one server: routing by Host and SNI, 421 across certificates, the default site and
/// `unmatched_host`, and each rule a site can have, through the real binary with curl and raw sockets.
@Suite struct SitesTests {
    /// Two sites besides the default one, each with its own root and certificate, on one TLS socket.
    func twoSites(_ extra: String = "", siteExtra: String = "") throws -> (TestServer, certs: URL, Int) {
        let certs = try temporaryDirectory()
        let (defaultCert, defaultKey) = try makeTestCertificate(in: certs)
        let (aCert, aKey) = try makeNamedCertificate("a.test", type: "ec", in: certs)
        let (bCert, bKey) = try makeNamedCertificate("b.test", type: "ec", in: certs)
        let config = """
            tls: {listen: ['127.0.0.1:0'], cert: \(defaultCert), key: \(defaultKey)}
            \(extra)
            sites:
              - names: [a.test, www.a.test]
                root: a
                cert: \(aCert)
                key: \(aKey)
            \(siteExtra)
              - names: [b.test, "*.b.test"]
                root: b
                cert: \(bCert)
                key: \(bKey)
              - names: [c.test]
                root: a
            """
        let server = try TestServer(config: config) { site in
            try TestServer.defaultSite(site)
            for (name, text) in [("a", "site A\n"), ("b", "site B\n")] {
                let root = site.deletingLastPathComponent().appendingPathComponent(name)
                try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
                try text.write(to: root.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
            }
        }.start()
        return (server, certs, try #require(server.tlsPort))
    }

    func resolve(_ port: Int, _ names: [String]) -> [String] { names.flatMap { ["--resolve", "\($0):\(port):127.0.0.1"] } }

    @Test func twoSitesOnOneTLSPortWithTheirOwnRootsAndCertificates() throws {
        let (server, certs, port) = try twoSites()
        defer { server.stop() }
        let names = ["a.test", "www.a.test", "b.test", "x.b.test", "c.test", "other.test"]
        let options = resolve(port, names)
        let aCA = ["--cacert", certs.appendingPathComponent("a.test-ec.pem").path]
        let bCA = ["--cacert", certs.appendingPathComponent("b.test-ec.pem").path]
        // Each name gets its site's files under its site's certificate, which curl verifies.
        for http in ["--http1.1", "--http2"] {
            #expect(try curl(options + aCA + [http, "https://a.test:\(port)/"]) == "site A\n")
            #expect(try curl(options + aCA + [http, "https://www.a.test:\(port)/"]) == "site A\n")
            #expect(try curl(options + bCA + [http, "https://b.test:\(port)/"]) == "site B\n")
            #expect(try curl(options + bCA + [http, "https://x.b.test:\(port)/"]) == "site B\n")  // the wildcard
            // A Host another certificate belongs to: 421 (RFC 9110 section 15.5.20), never B's files.
            let misdirected = try fetch("https://a.test:\(port)/", options + aCA + [http, "-H", "Host: b.test"])
            #expect(misdirected.status == 421, "\(http)")
            #expect(!misdirected.body.contains("site B"))
            // Sites that present the same (default) certificate: the default site and c.test.
            #expect(try curl(options + ["-k", http, "https://other.test:\(port)/"]).contains("hello"))
            #expect(try curl(options + ["-k", http, "-H", "Host: c.test", "https://other.test:\(port)/"]) == "site A\n")
        }
        // SNI picks the certificate; a name no site claims gets the default one (localhost).
        let presented = try run("openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "x.b.test"])
        #expect(presented.output.contains("CN = b.test") || presented.output.contains("CN=b.test"))
        let fallback = try run("openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "nope.test"])
        #expect(fallback.output.contains("CN = localhost") || fallback.output.contains("CN=localhost"))
        // Plain HTTP routes by Host alone: case and port do not matter; an unknown name reaches the default.
        #expect(try curl(["-H", "Host: B.Test:80", server.url + "/"]) == "site B\n")
        #expect(try curl(["-H", "Host: nobody.test", server.url + "/"]).contains("hello"))
        // `check` says which site a name reaches.
        let check = try run(webserverBinary, ["check", "--config", server.configFile.path, "--host", "x.b.test", "--host", "nope.test"])
        #expect(check.output.contains("x.b.test: sites[1]"))
        #expect(check.output.contains("by the name *.b.test"))
        #expect(check.output.contains("nope.test: no site claims it: the default site"))
    }

    /// The local-development path: one development certificate for every site's name (`webserver cert
    /// dev NAME...`) as the top-level certificate, and sites without certificates of their own.
    @Test func oneDevelopmentCertificateServesEveryLocalSite() throws {
        let certs = try temporaryDirectory()
        let made = try run(webserverBinary, ["cert", "dev", "--dir", certs.path, "app.localhost", "api.localhost"])
        #expect(made.status == 0, "\(made.error)")
        readableByTheServer(certs.appendingPathComponent("dev-key.pem").path)
        let config = """
            tls: {listen: ['127.0.0.1:0'], cert: \(certs.path)/dev.pem, key: \(certs.path)/dev-key.pem}
            sites:
              - {names: [app.localhost], root: app}
              - {names: [api.localhost], root: api}
            """
        let server = try TestServer(config: config) { site in
            try TestServer.defaultSite(site)
            for name in ["app", "api"] {
                let root = site.deletingLastPathComponent().appendingPathComponent(name)
                try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
                try "\(name)\n".write(to: root.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
            }
        }.start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        let trust = ["--cacert", certs.appendingPathComponent("dev-ca.pem").path]
        let options = trust + resolve(port, ["app.localhost", "api.localhost"])
        #expect(try curl(options + ["https://app.localhost:\(port)/"]) == "app\n")
        #expect(try curl(options + ["https://api.localhost:\(port)/"]) == "api\n")
        // One certificate for both: a connection made for one may carry the other's requests.
        #expect(try curl(options + ["-H", "Host: api.localhost", "https://app.localhost:\(port)/"]) == "api\n")
    }

    @Test func withoutADefaultSiteUnmatchedNamesGetTheConfiguredAnswer() throws {
        let certs = try temporaryDirectory()
        let (aCert, aKey) = try makeNamedCertificate("a.test", type: "ec", in: certs)
        for answer in ["421", "close"] {
            // No top-level root (the test server's base sets one: a site-only file is written whole).
            let server = try TestServer(config: "") { try TestServer.defaultSite($0) }
            try """
                listen: ["127.0.0.1:0"]
                pid_file: webserver.pid
                admin: {listen: "127.0.0.1:0"}
                unmatched_host: \(answer)
                tls: {listen: ['127.0.0.1:0']}
                sites: [{names: [a.test], root: site, cert: \(aCert), key: \(aKey)}]
                """.write(to: server.configFile, atomically: true, encoding: .utf8)
            _ = try server.start()
            defer { server.stop() }
            #expect(try curl(["-H", "Host: a.test", server.url + "/"]).contains("hello"))
            if answer == "421" {
                #expect(try status(server.url + "/", ["-H", "Host: b.test"]) == 421)
            } else {
                let (reply, closed) = try exchangeNotingClose(port: server.port, Array("GET / HTTP/1.1\r\nHost: b.test\r\n\r\n".utf8), timeout: 3)
                #expect(reply.isEmpty && closed, "closed without an answer")
            }
            // Over TLS, a name no site claims cannot even finish the handshake (no tls.cert).
            let port = try #require(server.tlsPort)
            let refused = try run("curl", ["-sk", "--resolve", "b.test:\(port):127.0.0.1", "https://b.test:\(port)/"])
            #expect(refused.status == 35, "curl: TLS handshake refused")
            #expect(try curl(["--cacert", aCert, "--resolve", "a.test:\(port):127.0.0.1", "https://a.test:\(port)/"]).contains("hello"))
        }
    }

    @Test func tryFilesServesTheFallbackExceptUnderExcludedPrefixes() throws {
        let server = try TestServer(config: "try_files: {files: [$uri, $uri.html, $uri/, /index.html], except: [/assets/, /api/]}\n") { site in
            try "<!doctype html><p>app shell</p>\n".write(to: site.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
            try "<p>about</p>\n".write(to: site.appendingPathComponent("about.html"), atomically: true, encoding: .utf8)
            try FileManager.default.createDirectory(at: site.appendingPathComponent("assets"), withIntermediateDirectories: true)
            try "x\n".write(to: site.appendingPathComponent("assets/app.js"), atomically: true, encoding: .utf8)
            try FileManager.default.createDirectory(at: site.appendingPathComponent("guide"), withIntermediateDirectories: true)
            try "<p>guide</p>\n".write(to: site.appendingPathComponent("guide/index.html"), atomically: true, encoding: .utf8)
        }.start()
        defer { server.stop() }
        let shell = try fetch(server.url + "/users/42/settings")
        #expect(shell.status == 200 && shell.body == "<!doctype html><p>app shell</p>\n")
        // The fallback's own validators: a revalidation is a 304.
        let etag = try #require(shell.headers["etag"])
        #expect(try status(server.url + "/users/7", ["-H", "If-None-Match: \(etag)"]) == 304)
        #expect(try curl([server.url + "/about"]) == "<p>about</p>\n")  // $uri.html
        #expect(try curl([server.url + "/guide/"]) == "<p>guide</p>\n")
        #expect(try status(server.url + "/guide") == 301)  // a directory without its slash, as without try_files
        #expect(try curl([server.url + "/assets/app.js"]) == "x\n")
        #expect(try status(server.url + "/assets/missing.js") == 404)  // a missing asset stays missing
        #expect(try status(server.url + "/api/users") == 404)
        #expect(try status(server.url + "/api") == 404)
        #expect(try status(server.url + "/.env") == 403)  // the dotfile rule comes first
    }

    @Test func redirectsCanonicalHostsAndHTTPSBehindAProxy() throws {
        let config = """
            tls: {listen: ['127.0.0.1:0'], cert: CERT, key: KEY}
            sites:
              - names: [a.test, www.a.test]
                root: site
                canonical_host: apex
                redirects:
                  - {from: /old, to: /new, status: 308}
                  - {from: /blog/*, to: "https://blog.a.test/posts/*", status: 302}
                  - {from: /tmp/*, to: "/temporary/*?from=tmp", status: 307}
                  - {from: /gone/*, to: /, query: drop}
              - names: [b.test, www.b.test]
                root: site
                canonical_host: www
                redirect_http: true
            """
        let certs = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certs)
        let server = try TestServer(config: config.replacingOccurrences(of: "CERT", with: cert).replacingOccurrences(of: "KEY", with: key)).start()
        defer { server.stop() }
        let tlsPort = try #require(server.tlsPort)
        func answer(_ host: String, _ path: String, _ extra: [String] = []) throws -> (Int, String) {
            let response = try fetch(server.url + path, ["-H", "Host: \(host)"] + extra)
            return (response.status, response.headers["location"] ?? "")
        }
        #expect(try answer("a.test", "/old?x=1") == (308, "/new?x=1"))
        #expect(try answer("a.test", "/blog/2026/hello?ref=feed") == (302, "https://blog.a.test/posts/2026/hello?ref=feed"))
        #expect(try answer("a.test", "/tmp/file?y=2") == (307, "/temporary/file?from=tmp&y=2"))
        #expect(try answer("a.test", "/gone/page?z=3") == (301, "/"))
        #expect(try answer("a.test", "/oldest").0 == 404)  // an exact rule is exact
        #expect(try answer("www.a.test:8080", "/path?q=1") == (301, "http://a.test:8080/path?q=1"))
        #expect(try answer("www.a.test", "/form", ["-X", "POST"]) == (308, "http://a.test/form"))
        // b.test: plain HTTP goes to HTTPS (the TLS socket's port), then apex to www.
        #expect(try answer("b.test", "/x") == (301, "https://b.test:\(tlsPort)/x"))
        // Behind a TLS-terminating proxy (127.0.0.1 is in proxy.trusted by default) there is no loop.
        #expect(try answer("www.b.test", "/", ["-H", "X-Forwarded-Proto: https"]).0 == 200)
        #expect(try answer("www.b.test", "/", ["-H", "Forwarded: for=192.0.2.1;proto=https"]).0 == 200)
        #expect(try answer("www.b.test", "/x", ["-H", "X-Forwarded-Proto: http"]).0 == 301)
        let overTLS = try fetch("https://localhost:\(tlsPort)/x", ["-k", "-H", "Host: b.test"])
        #expect(overTLS.status == 301 && overTLS.headers["location"] == "https://www.b.test/x")
    }

    @Test func basicAuthenticationFromAnHtpasswdFile() throws {
        let server = try TestServer(config: "auth: {prefix: /staff/, realm: \"Staging\", users: htpasswd}\n") { site in
            try TestServer.defaultSite(site)
            try FileManager.default.createDirectory(at: site.appendingPathComponent("staff"), withIntermediateDirectories: true)
            try "internal\n".write(to: site.appendingPathComponent("staff/notes.txt"), atomically: true, encoding: .utf8)
            let file = site.deletingLastPathComponent().appendingPathComponent("htpasswd").path
            #expect(shell("htpasswd -cbB -C 5 \(file) alice 'correct horse' 2>/dev/null", directory: site) == 0)
            #expect(shell("printf 'bob:%s\\n' \"$(openssl passwd -6 battery)\" >> \(file)", directory: site) == 0)
            chmod(file, 0o644)
        }.start()
        defer { server.stop() }
        let url = server.url + "/staff/notes.txt"
        let challenge = try fetch(url)
        #expect(challenge.status == 401)
        #expect(challenge.headers["www-authenticate"] == "Basic realm=\"Staging\", charset=\"UTF-8\"")
        #expect(try curl(["-u", "alice:correct horse", url]) == "internal\n")  // bcrypt
        #expect(try curl(["-u", "bob:battery", url]) == "internal\n")  // SHA-512-crypt
        #expect(try status(url, ["-u", "alice:wrong"]) == 401)
        #expect(try status(url, ["-u", "carol:x"]) == 401)
        #expect(try status(server.url + "/%73taff/notes.txt") == 401)  // the normalized path is what is guarded
        #expect(try status(server.url + "/staff") == 401)
        #expect(try status(server.url + "/") == 200)  // outside the prefix
        // A user added to the file works without a reload.
        let file = server.directory.appendingPathComponent("htpasswd").path
        #expect(shell("htpasswd -bB -C 5 \(file) carol x 2>/dev/null && chmod 644 \(file)", directory: server.directory) == 0)
        #expect(waitUntil(seconds: 5) { (try? status(url, ["-u", "carol:x"])) == 200 })
    }

    @Test func accessByAddressAndARateLimitPerClient() throws {
        let config = """
            access:
              - {prefix: /admin/, allow: [10.0.0.0/8]}
              - {prefix: /private/, deny: [127.0.0.0/8]}
            sites:
              - names: [limited.test]
                root: site
                rate_limit: {requests_per_second: 1, burst: 3}
            """
        let server = try TestServer(config: config) { site in
            try TestServer.defaultSite(site)
            for directory in ["admin", "private", "public"] {
                try FileManager.default.createDirectory(at: site.appendingPathComponent(directory), withIntermediateDirectories: true)
                try "\(directory)\n".write(to: site.appendingPathComponent("\(directory)/index.html"), atomically: true, encoding: .utf8)
            }
        }.start()
        defer { server.stop() }
        #expect(try status(server.url + "/admin/") == 403)
        #expect(try status(server.url + "/%61dmin/") == 403)
        #expect(try status(server.url + "/public/../admin/", ["--path-as-is"]) == 403)
        #expect(try status(server.url + "/private/") == 403)
        #expect(try status(server.url + "/public/") == 200)
        // Behind a trusted proxy, the address the proxy names is the client's.
        #expect(try status(server.url + "/admin/", ["-H", "X-Forwarded-For: 10.1.2.3"]) == 200)
        #expect(try status(server.url + "/private/", ["-H", "X-Forwarded-For: 192.0.2.9"]) == 200)
        // Three at once (the burst), then 429 with how long to wait; another address is not held back.
        let limited = ["-H", "Host: limited.test"]
        for _ in 0..<3 { #expect(try status(server.url + "/", limited) == 200) }
        let refused = try fetch(server.url + "/", limited)
        #expect(refused.status == 429)
        #expect(refused.headers["retry-after"] == "1")
        #expect(try status(server.url + "/", limited + ["-H", "X-Forwarded-For: 10.9.9.9"]) == 200)
    }

    @Test func theListenerLimitsOpenConnectionsPerAddress() throws {
        // Loopback is in proxy.trusted by default, and a trusted proxy is never limited as one client.
        let server = try TestServer(config: "limits: {connections_per_ip: 3}\nworkers: {min: 1, max: 1}\nproxy: {trusted: []}\n").start()
        defer { server.stop() }
        let request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        var held: [RawConnection] = []
        for _ in 0..<3 {
            let connection = try RawConnection(port: server.port)
            connection.send(request)
            #expect(try statusCodes(String(decoding: connection.readResponse(), as: UTF8.self)) == [200])
            held.append(connection)
        }
        // The fourth from 127.0.0.1 is closed at accept; one from 127.0.0.2 is served meanwhile.
        let fourth = try RawConnection(port: server.port)
        fourth.send(request)
        let (bytes, closed) = fourth.readAll()
        #expect(bytes.isEmpty && closed)
        fourth.close()
        let other = try RawConnection(port: server.port, source: "127.0.0.2")
        other.send(request)
        #expect(try statusCodes(String(decoding: other.readResponse(), as: UTF8.self)) == [200])
        other.close()
        #expect(waitUntil(seconds: 5) { (server.metrics()?[#"webserver_connections_refused_total{reason="per_ip"}"#] ?? 0) == 1 })
        // Once one closes (the worker tells the listener), 127.0.0.1 may open another.
        held.removeLast().close()
        #expect(waitUntil(seconds: 5) {
            guard let again = try? RawConnection(port: server.port) else { return false }
            defer { again.close() }
            again.send(request)
            return (try? again.readResponse()).map { !$0.isEmpty } ?? false
        })
        // A worker that dies with the address's connections cannot report them: the listener starts its
        // counts again rather than refuse the client for connections that are gone.
        while held.count < 3 {
            // (The close just before reaches the listener with the worker's next release notice.)
            #expect(waitUntil(seconds: 5) {
                guard let connection = try? RawConnection(port: server.port) else { return false }
                connection.send(request)
                guard (try? connection.readResponse()) != nil else {
                    connection.close()
                    return false
                }
                held.append(connection)
                return true
            })
        }
        let worker = try #require(server.pids(of: "worker").first)
        kill(worker, SIGKILL)
        for connection in held { connection.close() }
        #expect(waitUntil(seconds: 10) {
            guard let again = try? RawConnection(port: server.port) else { return false }
            defer { again.close() }
            again.send(request)
            return (try? again.readResponse()).map { statusCodes(String(decoding: $0, as: UTF8.self)) == [200] } ?? false
        })
    }

    @Test func reloadAddsChangesAndRemovesSitesUnderLoad() throws {
        let (server, _, _) = try twoSites()
        defer { server.stop() }
        let c = server.directory.appendingPathComponent("c")
        try FileManager.default.createDirectory(at: c, withIntermediateDirectories: true)
        try "site C!\n".write(to: c.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        let original = try String(contentsOf: server.configFile, encoding: .utf8)
        let keepAlive = try LoadRun(port: server.port, clients: 3, seconds: 4, mode: "keepalive", path: "/", expectedLength: 7, host: "a.test")
        let fresh = try LoadRun(port: server.port, clients: 2, seconds: 4, mode: "new", path: "/", expectedLength: 7, host: "b.test")
        #expect(server.waitForTraffic(responses: 100))
        // Added: d.test; changed: c.test gets its own root.
        let added = original.replacingOccurrences(of: "  - names: [c.test]\n    root: a", with: "  - names: [c.test]\n    root: c\n  - names: [d.test]\n    root: b")
        #expect(try server.reload { try added.write(to: server.configFile, atomically: true, encoding: .utf8); kill(server.pid, SIGHUP) })
        #expect(waitUntil(seconds: 5) { (try? curl(["-H", "Host: c.test", server.url + "/"])) == "site C!\n" })
        #expect(try curl(["-H", "Host: d.test", server.url + "/"]) == "site B\n")
        // Removed: d.test reaches the default site again.
        #expect(try server.reload { try original.write(to: server.configFile, atomically: true, encoding: .utf8); kill(server.pid, SIGHUP) })
        #expect(waitUntil(seconds: 5) { (try? curl(["-H", "Host: d.test", server.url + "/"]))?.contains("hello") == true })
        let steady = try keepAlive.finish()
        let churn = try fresh.finish()
        #expect(steady.failed == 0 && steady.ok > 0, "\(steady.errors.prefix(3))")
        #expect(churn.failed == 0 && churn.ok > 0, "\(churn.errors.prefix(3))")
    }
}
