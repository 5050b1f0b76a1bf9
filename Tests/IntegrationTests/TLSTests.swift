import Foundation
import Testing

@Suite struct TLSTests {
    func tlsServer(_ extra: String = "") throws -> (TestServer, String, Int) {
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        let server = try TestServer(config: "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)\(extra)}\n", site: richSite).start()
        let port = try #require(server.tlsPort)
        return (server, cert, port)
    }

    @Test func servesFilesOverTLSWithKeepAlive() throws {
        let (server, cert, port) = try tlsServer()
        defer { server.stop() }
        let url = "https://localhost:\(port)"
        let resolve = "localhost:\(port):127.0.0.1"
        #expect(try curl(["--cacert", cert, "--resolve", resolve, url + "/style.css"]) == "body{}\n")
        // Two requests on one connection: curl reuses it (one handshake).
        let output = try run("curl", ["-sv", "--cacert", cert, "--resolve", resolve, url + "/style.css", url + "/index.html"])
        #expect(output.error.contains("Re-using existing connection") || output.error.contains("Reusing existing connection"))
        #expect(output.error.contains("ALPN: server accepted h2"))
        // The same over HTTP/1.1: one connection, kept alive.
        let http11 = try run("curl", ["-sv", "--http1.1", "--cacert", cert, "--resolve", resolve, url + "/style.css", url + "/index.html"])
        #expect(http11.error.contains("Re-using existing connection") || http11.error.contains("Reusing existing connection"))
        #expect(http11.error.contains("ALPN: server accepted http/1.1"))
        // A file larger than a TLS record and than the socket buffers, byte for byte.
        let big = server.site.appendingPathComponent("big.bin")
        var bytes = [UInt8](repeating: 0, count: 3_000_000)
        for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 7 &+ index >> 9) }
        try Data(bytes).write(to: big)
        let download = server.directory.appendingPathComponent("download.bin")
        #expect(try curl(["--cacert", cert, "--resolve", resolve, "-o", download.path, "-w", "%{http_code}", url + "/big.bin"]) == "200")
        #expect(try Data(contentsOf: download) == Data(bytes))
        // Ranges and conditionals work the same over TLS.
        #expect(try curl(["--cacert", cert, "--resolve", resolve, "-r", "0-3", url + "/style.css"]) == "body")
        // The plain socket still speaks plain HTTP.
        #expect(try status(server.url + "/style.css") == 200)
    }

    /// Clients that read slower than the server writes, over HTTP/1.1 and HTTP/2: the socket fills in
    /// the middle of the TLS records one write makes, the rest waits in the session for EPOLLOUT, and
    /// each body arrives whole and in order, with a second response on the same connection after it.
    @Test func slowReadersGetEveryByteOverTLS() throws {
        // With notsent_lowat the socket takes little beyond what the client has room for, so most
        // gathered writes are taken in part.
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        let server = try TestServer(config: "notsent_lowat: 16k\ntls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n", site: richSite).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        // 64 whole chunks of 64 KiB (the server reads a file through TLS 64 KiB at a time): the body's
        // last write is four records gathered, as full as the others.
        var bytes = [UInt8](repeating: 0, count: 64 * 65_536)
        for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 13 &+ index >> 11) }
        try Data(bytes).write(to: server.site.appendingPathComponent("big.bin"))
        let url = "https://localhost:\(port)"
        let resolve = "localhost:\(port):127.0.0.1"
        for version in ["--http1.1", "--http2"] {
            let download = server.directory.appendingPathComponent("slow\(version).bin")
            let result = try run("curl", ["-s", version, "--limit-rate", "3M", "--max-time", "20", "--cacert", cert, "--resolve", resolve,
                                          "-o", download.path, "-w", "%{http_code} %{http_version}\n", url + "/big.bin",
                                          "-o", "/dev/null", url + "/style.css"])
            #expect(result.output == "200 \(version == "--http2" ? "2" : "1.1")\n200 \(version == "--http2" ? "2" : "1.1")\n", "\(version): \(result.output) \(result.error)")
            #expect(try Data(contentsOf: download) == Data(bytes), "\(version)")
        }
    }

    @Test func protocolsAndALPN() throws {
        let (server, _, port) = try tlsServer()
        defer { server.stop() }
        func sClient(_ arguments: [String]) throws -> (Int32, String) {
            let result = try run("/bin/sh", ["-c", "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port) -servername localhost "
                + arguments.joined(separator: " ") + " 2>&1"])
            return (result.status, result.output)
        }
        let tls13 = try sClient(["-tls1_3"])
        #expect(tls13.1.contains("TLSv1.3"))
        let tls12 = try sClient(["-tls1_2"])
        #expect(tls12.1.contains("TLSv1.2") && tls12.1.contains("ECDHE"))
        // TLS 1.1 is refused by the server (alert 70), not merely left unoffered by the client: the
        // client's security level is lowered so that it really offers 1.1.
        let tls11 = try sClient(["-tls1_1", "-cipher", "'DEFAULT@SECLEVEL=0'"])
        #expect(tls11.1.contains("alert protocol version"))
        // ALPN: h2 first whatever the client's order, http/1.1 for clients without it; a client offering
        // neither is refused with no_application_protocol, not served something else.
        #expect(try sClient(["-alpn", "h2"]).1.contains("ALPN protocol: h2"))
        #expect(try sClient(["-alpn", "http/1.1,h2"]).1.contains("ALPN protocol: h2"))
        #expect(try sClient(["-alpn", "http/1.1"]).1.contains("ALPN protocol: http/1.1"))
        let spdy = try sClient(["-alpn", "spdy/3"])
        #expect(spdy.1.contains("no application protocol") || spdy.1.contains("alert number 120"))
    }

    @Test func minimumVersionOneThreeRefusesTLS12() throws {
        let (server, _, port) = try tlsServer(", min_version: '1.3'")
        defer { server.stop() }
        let tls12 = try run("/bin/sh", ["-c", "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port) -tls1_2 2>&1"]).output
        #expect(tls12.contains("alert protocol version"))
        let tls13 = try run("/bin/sh", ["-c", "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port) -tls1_3 2>&1"]).output
        #expect(tls13.contains("TLSv1.3"))
    }

    /// Plain HTTP sent to the HTTPS port gets a 400, in plain HTTP, that says the port speaks HTTPS (as
    /// nginx does), not a bare reset; and the TLS port still speaks TLS to the next client (issue 14).
    @Test func plainHTTPOnTheTLSPortIsTold() throws {
        let (server, cert, port) = try tlsServer()
        defer { server.stop() }
        let reply = try fetch("http://127.0.0.1:\(port)/style.css")
        #expect(reply.status == 400)
        #expect(reply.body.contains("This port speaks HTTPS"))
        #expect(reply.headers["connection"] == "close" && reply.headers["strict-transport-security"] == nil)
        #expect(server.accessLogLineCount() >= 1)
        #expect(try curl(["--cacert", cert, "--resolve", "localhost:\(port):127.0.0.1", "https://localhost:\(port)/style.css"]) == "body{}\n")
    }

    @Test func aSilentHandshakeTimesOutAndGarbageIsClosed() throws {
        let (server, _, port) = try tlsServer(", handshake_timeout: 500ms")
        defer { server.stop() }
        // Plain HTTP on the TLS port is told so (400) and closed; other bytes that are no TLS record fail
        // the handshake and are closed unanswered.
        let (plain, _) = try outcome(port: port, Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8), timeout: 5)
        #expect(plain.closed && plain.statuses == [400])
        let (garbage, _) = try outcome(port: port, [0x00, 0x01, 0x02, 0x03, 0x0d, 0x0a, 0x0d, 0x0a], timeout: 5)
        #expect(garbage.closed && garbage.statuses.isEmpty)
        // A client that sends a partial ClientHello and stops is closed at the handshake timeout.
        let start = Date()
        let (partial, _) = try outcome(port: port, [0x16, 0x03, 0x01, 0x00, 0x80, 0x01], timeout: 5)
        #expect(partial.closed)
        #expect(Date().timeIntervalSince(start) < 4)
    }

    @Test func badCertificatesAreClearErrors() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (cert, key) = try makeTestCertificate(in: directory)
        let other = directory.appendingPathComponent("other")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        let (_, otherKey) = try makeTestCertificate(in: other)
        let encrypted = directory.appendingPathComponent("enc")
        try FileManager.default.createDirectory(at: encrypted, withIntermediateDirectories: true)
        let (_, encryptedKey) = try makeTestCertificate(in: encrypted, encrypted: true)
        let site = directory.path
        // An empty configuration, so the repository's config/webserver.yaml is not read.
        let empty = directory.appendingPathComponent("empty.yaml")
        try "{}\n".write(to: empty, atomically: true, encoding: .utf8)
        func check(_ flags: [String]) throws -> String {
            let serve = try run("/bin/sh", ["-c", "timeout 10 '\(webserverBinary)' serve --config '\(empty.path)' --root '\(site)' --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 "
                + flags.map { "'\($0)'" }.joined(separator: " ") + " 2>&1; echo \"exit=$?\""])
            return serve.output
        }
        let mismatch = try check(["--cert", cert, "--key", otherKey])
        #expect(mismatch.contains("does not match the certificate") && mismatch.contains("exit=78"))
        let missing = try check(["--cert", cert, "--key", directory.appendingPathComponent("nope.pem").path])
        #expect(missing.contains("does not exist") && missing.contains("exit=78"))
        let protected = try check(["--cert", cert, "--key", encryptedKey])
        #expect(protected.contains("passphrase") && protected.contains("exit=78"))
        let noKey = try check(["--cert", cert])
        #expect(noKey.contains("need a certificate and a key") && noKey.contains("exit=78"))
        // Words, not OpenSSL's "DECODER routines::unsupported": the files traded places, or a directory.
        let swapped = try check(["--cert", key, "--key", cert])
        #expect(swapped.contains("holds a certificate, not a private key (cert and key have traded places)") && swapped.contains("exit=78"))
        let folder = try check(["--cert", cert, "--key", directory.path])
        #expect(folder.contains("is a directory; it should be a PEM file") && folder.contains("exit=78"))
        // From a file, the issue points at the line that names the pair.
        let file = directory.appendingPathComponent("tls.yaml")
        try "root: \(site)\ntls:\n  listen: [127.0.0.1:0]\n  cert: \(cert)\n  key: \(cert)\n".write(to: file, atomically: true, encoding: .utf8)
        let fromFile = try run(webserverBinary, ["check", "--config", file.path])
        #expect(fromFile.error.contains("\(file.path):4: tls.cert: the key \(cert) holds a certificate, not a private key"), "\(fromFile.error)")
        #expect(!key.isEmpty)
    }
}

@Suite struct DevCertificateTests {
    @Test func certDevMakesALocalCAAndALeaf() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let made = try run(webserverBinary, ["cert", "dev", "--dir", directory.path, "app.localhost", "site.test", "127.0.0.2",
                                             "192.168.1.5", "laptop.local", "fd00::5"])
        #expect(made.status == 0)
        #expect(made.output.contains("SHA-256 fingerprint") && made.output.contains("curl --cacert"))
        #expect(made.output.contains("NODE_EXTRA_CA_CERTS") && made.output.contains("REQUESTS_CA_BUNDLE") && made.output.contains("SSL_CERT_FILE"))
        let ca = directory.appendingPathComponent("dev-ca.pem").path
        let leaf = directory.appendingPathComponent("dev.pem").path
        for key in ["dev-ca-key.pem", "dev-key.pem"] {
            let attributes = try FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent(key).path)
            #expect((attributes[.posixPermissions] as? Int) == 0o600, "\(key)")
        }
        #expect(try run("openssl", ["verify", "-CAfile", ca, leaf]).output.contains("OK"))
        let caText = try run("openssl", ["x509", "-in", ca, "-noout", "-text"]).output
        #expect(caText.contains("Name Constraints: critical") && caText.contains("DNS:localhost") && caText.contains("DNS:test"))
        #expect(caText.contains("IP:127.0.0.0/255.0.0.0") && caText.contains("IP:192.168.0.0/255.255.0.0") && caText.contains("DNS:local"))
        #expect(caText.contains("CA:TRUE") && caText.contains("prime256v1"))
        let leafText = try run("openssl", ["x509", "-in", leaf, "-noout", "-text"]).output
        for name in ["DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1", "DNS:app.localhost", "DNS:site.test", "IP Address:127.0.0.2",
                     "IP Address:192.168.1.5", "DNS:laptop.local", "IP Address:FD00:0:0:0:0:0:0:5"] {
            #expect(leafText.contains(name), "\(name)")
        }
        #expect(leafText.contains("TLS Web Server Authentication") && leafText.contains("CA:FALSE"))
        // A second run keeps the CA and makes a new leaf it signs.
        let caBefore = try Data(contentsOf: URL(fileURLWithPath: ca))
        #expect(try run(webserverBinary, ["cert", "dev", "--dir", directory.path]).output.contains("already there, reused"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: ca)) == caBefore)
        #expect(try run("openssl", ["verify", "-CAfile", ca, leaf]).output.contains("OK"))
        // A name the CA cannot sign is refused.
        for name in ["example.com", "8.8.8.8", "172.32.0.1", "2001:db8::1"] {
            let outside = try run(webserverBinary, ["cert", "dev", "--dir", directory.path, name])
            #expect(outside.status == 1 && outside.error.contains("'\(name)' is not a local or private name"), "\(name): \(outside.error)")
        }
    }

    /// A CA made with the narrower constraints of before (loopback names only) cannot sign a LAN
    /// address: the command says so and how to make a new CA, and leaves the certificate there alone.
    @Test func aCAThatCannotSignALANAddressIsNamedAndNothingIsWritten() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = directory.appendingPathComponent("dev-ca.pem").path
        let made = try run("openssl", [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
            "-keyout", directory.appendingPathComponent("dev-ca-key.pem").path, "-out", ca, "-subj", "/CN=Old development CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            "-addext", "nameConstraints=critical,permitted;DNS:localhost,permitted;IP:127.0.0.0/255.0.0.0,permitted;IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF",
        ])
        #expect(made.status == 0, "\(made.error)")
        #expect(try run(webserverBinary, ["cert", "dev", "--dir", directory.path]).status == 0)  // localhost: fine
        let leaf = try Data(contentsOf: directory.appendingPathComponent("dev.pem"))
        let refused = try run(webserverBinary, ["cert", "dev", "--dir", directory.path, "192.168.1.5"])
        #expect(refused.status == 1)
        #expect(refused.error.contains("the development CA in \(ca) cannot sign 192.168.1.5") && refused.error.contains("Make a new one"), "\(refused.error)")
        #expect(try Data(contentsOf: directory.appendingPathComponent("dev.pem")) == leaf)
    }

    /// `--uninstall` of a CA no store has, or with no CA at all, says so in one line and succeeds.
    @Test func uninstallingWhatIsNotInstalledSaysSoInOneLine() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let home = directory.appendingPathComponent("home")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let environment = ["HOME": home.path, "SUDO_USER": ""]
        let none = try run(webserverBinary, ["cert", "dev", "--dir", directory.path, "--uninstall"], environment: environment)
        #expect(none.status == 0 && none.output == "No development CA in \(directory.path) (\(directory.path)/dev-ca.pem); nothing to uninstall.\n", "\(none.output)")
        #expect(try run(webserverBinary, ["cert", "dev", "--dir", directory.path]).status == 0)
        let notInstalled = try run(webserverBinary, ["cert", "dev", "--dir", directory.path, "--uninstall", "--trust-store", "nss"], environment: environment)
        #expect(notInstalled.status == 0 && notInstalled.output.split(separator: "\n").count == 1, "\(notInstalled.output)")
        #expect(notInstalled.output.contains("is not installed in any trust store; nothing to remove."))
    }

    @Test func serveMakesTheDevelopmentCertificateOnFirstRun() throws {
        let certificates = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: certificates) }
        let cert = certificates.appendingPathComponent("dev.pem").path
        let key = certificates.appendingPathComponent("dev-key.pem").path
        // check does not make it, and does not fail for its absence.
        let config = "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key), dev_certificate: true}\n"
        let server = try TestServer(config: config, site: richSite)
        #expect(try run(webserverBinary, ["check", "--config", server.configFile.path]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: cert))
        try server.start()
        defer { server.stop() }
        #expect(server.log().contains("made a development certificate"))
        let port = try #require(server.tlsPort)
        let ca = certificates.appendingPathComponent("dev-ca.pem").path
        #expect(try curl(["--cacert", ca, "https://localhost:\(port)/style.css", "--resolve", "localhost:\(port):127.0.0.1"]) == "body{}\n")
        #expect(try curl(["--cacert", ca, "https://127.0.0.1:\(port)/style.css"]) == "body{}\n")
    }
}

@Suite struct HTTPSRedirectTests {
    @Test func plainRequestsAreSentToHTTPSAndHSTSIsNeverForLocalhost() throws {
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        let config = "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key), redirect_http: true, hsts: \"max-age=63072000; includeSubDomains\"}\n"
        let server = try TestServer(config: config, site: richSite).start()
        defer { server.stop() }
        let tlsPort = try #require(server.tlsPort)
        // GET: 301 to the same host on the TLS port, the target kept as sent.
        let get = try fetch(server.url + "/docs/?q=1", ["-H", "Host: example.test:\(server.port)"])
        #expect(get.status == 301 && get.headers["location"] == "https://example.test:\(tlsPort)/docs/?q=1")
        // Other methods: 308, so the method and body are kept.
        let post = try fetch(server.url + "/form", ["-X", "POST", "-d", "a=1", "-H", "Host: example.test"])
        #expect(post.status == 308 && post.headers["location"] == "https://example.test:\(tlsPort)/form")
        // IPv6 literal hosts keep their brackets.
        #expect(try fetch(server.url + "/", ["-H", "Host: [::1]:\(server.port)"]).headers["location"] == "https://[::1]:\(tlsPort)/")
        // ACME HTTP-01 challenges are answered over HTTP.
        try FileManager.default.createDirectory(at: server.site.appendingPathComponent(".well-known/acme-challenge"), withIntermediateDirectories: true)
        try "token\n".write(to: server.site.appendingPathComponent(".well-known/acme-challenge/abc"), atomically: true, encoding: .utf8)
        #expect(try curl([server.url + "/.well-known/acme-challenge/abc"]) == "token\n")
        // HSTS on TLS responses for a real name, never for localhost or 127.0.0.1.
        let named = try fetch("https://example.test:\(tlsPort)/style.css", ["-k", "--resolve", "example.test:\(tlsPort):127.0.0.1"])
        #expect(named.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains")
        let local = try fetch("https://localhost:\(tlsPort)/style.css", ["-k", "--resolve", "localhost:\(tlsPort):127.0.0.1"])
        #expect(local.status == 200 && local.headers["strict-transport-security"] == nil)
        #expect(try fetch("https://127.0.0.1:\(tlsPort)/style.css", ["-k"]).headers["strict-transport-security"] == nil)
        // Never on plain HTTP.
        #expect(try fetch(server.url + "/.well-known/acme-challenge/abc", ["-H", "Host: example.test"]).headers["strict-transport-security"] == nil)
    }

    /// A response the server writes on its own (408 from the timer) or for bytes that never parsed
    /// (400) carries only its own connection's facts: no Host was read, so no HSTS, even right after
    /// another client's request for a real name got it. (The worker once kept the last request's facts
    /// in its fields, and these responses read them.)
    @Test func responsesWithoutARequestCarryTheirOwnConnectionsFacts() throws {
        let certificates = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: certificates)
        let config = """
            workers: {min: 1, max: 1}
            timeouts: {header: 2s}
            tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key), hsts: "max-age=63072000"}

            """
        let server = try TestServer(config: config, site: richSite).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        // B: half a head, on the one worker; its 408 comes from the timer two seconds on.
        let slow = try TLSExchange(port: port, "GET /style.css HTTP/1.1\\r\\nHost: loc", timeout: 8)
        // A, meanwhile: a whole request for a real name, which gets HSTS.
        let named = try fetch("https://example.test:\(port)/style.css", ["-k", "--resolve", "example.test:\(port):127.0.0.1"])
        #expect(named.headers["strict-transport-security"] == "max-age=63072000")
        // C, after it: bytes that are no request get 400, without HSTS.
        let garbage = try TLSExchange(port: port, "NOT A REQUEST\\r\\n\\r\\n", timeout: 5).finish()
        #expect(garbage.hasPrefix("HTTP/1.1 400 "))
        #expect(!garbage.lowercased().contains("strict-transport-security"))
        let timedOut = try slow.finish()
        #expect(timedOut.hasPrefix("HTTP/1.1 408 "))
        #expect(!timedOut.lowercased().contains("strict-transport-security"))
    }
}

@Suite struct SNITests {
    @Test func eachNameGetsItsCertificateAndUnknownNamesTheDefault() throws {
        let directory = try temporaryDirectory()
        let fallback = try makeNamedCertificate("default.test", type: "ec", in: directory)
        let aEC = try makeNamedCertificate("a.test", type: "ec", in: directory)
        let aRSA = try makeNamedCertificate("a.test", type: "rsa", in: directory)
        let b = try makeNamedCertificate("b.test", type: "ec", in: directory)
        let config = """
            tls:
              listen: ['127.0.0.1:0']
              cert: \(fallback.cert)
              key: \(fallback.key)
              sites:
                - cert: [\(aEC.cert), \(aRSA.cert)]
                  key: [\(aEC.key), \(aRSA.key)]
                - cert: \(b.cert)
                  key: \(b.key)

            """
        let server = try TestServer(config: config, site: richSite).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        func subject(_ arguments: String) throws -> String {
            let output = try run("/bin/sh", ["-c", "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port) \(arguments) 2>/dev/null | openssl x509 -noout -subject -text 2>/dev/null"]).output
            return output
        }
        #expect(try subject("-servername a.test").contains("CN = a.test"))
        #expect(try subject("-servername www.b.test").contains("CN = b.test"))  // wildcard SAN
        #expect(try subject("-servername other.example").contains("CN = default.test"))
        #expect(try subject("").contains("CN = default.test"))  // no SNI at all
        // One name, two key types: the client's signature algorithms choose.
        let ecdsa = try subject("-servername a.test -sigalgs ecdsa_secp256r1_sha256")
        #expect(ecdsa.contains("CN = a.test") && ecdsa.contains("id-ecPublicKey"))
        let rsa = try subject("-servername a.test -sigalgs rsa_pss_rsae_sha256:rsa_pkcs1_sha256")
        #expect(rsa.contains("CN = a.test") && rsa.contains("rsaEncryption"))
        // Requests are served whichever certificate was chosen.
        #expect(try curl(["-k", "--resolve", "a.test:\(port):127.0.0.1", "https://a.test:\(port)/style.css"]) == "body{}\n")
    }
}

@Suite struct ResumptionTests {
    /// A session from one worker resumes on another, before and after a key rotation.
    @Test func aTicketFromOneWorkerResumesOnAnother() throws {
        let directory = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: directory)
        let config = """
            workers: {min: 2, max: 2}
            tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key), ticket_key_rotation: 3s}

            """
        let server = try TestServer(config: config, site: richSite).start()
        defer { server.stop() }
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 2 })
        let port = try #require(server.tlsPort)
        let workers = server.pids(of: "worker")
        #expect(workers.count == 2)
        let session = directory.appendingPathComponent("session.pem").path

        /// Runs s_client held open for a moment; returns its output and the worker that held the connection.
        func connect(_ sessionArgument: String) throws -> (String, Int32?) {
            let output = directory.appendingPathComponent("out-\(UUID().uuidString)").path
            let client = Process()
            client.executableURL = URL(fileURLWithPath: "/bin/sh")
            client.arguments = ["-c", "(sleep 1.2) | openssl s_client -connect 127.0.0.1:\(port) -servername localhost -tls1_3 \(sessionArgument) > \(output) 2>&1"]
            try client.run()
            var holder: Int32?
            waitUntil(seconds: 1) {
                holder = workers.first { clientSockets(of: $0) > 0 }
                return holder != nil
            }
            client.waitUntilExit()
            return ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "", holder)
        }
        let (first, issuer) = try connect("-sess_out \(session)")
        #expect(first.contains("New, TLSv1.3"))
        let firstWorker = try #require(issuer)
        // Connect until a resumption lands on the other worker (dispatch is by load, so it soon does).
        // Each resumption saves the ticket it was given (the same worker's, while it stays there), so
        // the session never outlives the 3 s key rotation however slowly a loaded machine connects.
        var resumedElsewhere = false
        for _ in 0..<8 {
            let (output, holder) = try connect("-sess_in \(session) -sess_out \(session)")
            #expect(output.contains("Reused, TLSv1.3"), "\(output.suffix(400))")
            if let holder, holder != firstWorker {
                resumedElsewhere = true
                break
            }
        }
        #expect(resumedElsewhere)
        // A ticket made just after a rotation resumes after the next one (the previous key still
        // decrypts) and not after the one after (a full handshake).
        let rotated = "TLS session ticket keys rotated"
        let seen = server.log().components(separatedBy: rotated).count - 1
        #expect(server.waitForLog(rotated, seconds: 10, count: seen + 1))
        let fresh = directory.appendingPathComponent("fresh.pem").path
        #expect(try connect("-sess_out \(fresh)").0.contains("New, TLSv1.3"))
        #expect(server.waitForLog(rotated, seconds: 10, count: seen + 2))
        #expect(try connect("-sess_in \(fresh)").0.contains("Reused, TLSv1.3"))
        #expect(server.waitForLog(rotated, seconds: 10, count: seen + 3))
        #expect(try connect("-sess_in \(fresh)").0.contains("New, TLSv1.3"))
    }
}

@Suite struct CertificateReloadTests {
    @Test func aCertificateReplacedOnDiskIsServedWithoutARestart() throws {
        let directory = try temporaryDirectory()
        let live = directory.appendingPathComponent("live")
        try FileManager.default.createDirectory(at: live, withIntermediateDirectories: true)
        let first = try makeNamedCertificate("first.test", type: "ec", in: directory)
        let second = try makeNamedCertificate("second.test", type: "ec", in: directory)
        let other = try makeNamedCertificate("other.test", type: "ec", in: directory)
        let cert = live.appendingPathComponent("cert.pem").path
        let key = live.appendingPathComponent("key.pem").path
        try FileManager.default.copyItem(atPath: first.cert, toPath: cert)
        try FileManager.default.copyItem(atPath: first.key, toPath: key)
        readableByTheServer(key)
        let server = try TestServer(config: "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n", site: richSite).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        func subject() throws -> String {
            try run("/bin/sh", ["-c", "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port) 2>/dev/null | openssl x509 -noout -subject"]).output
        }
        #expect(try subject().contains("CN = first.test"))

        // A download in flight over the old certificate (8 MiB at 4 MB/s) finishes whole.
        let big = server.site.appendingPathComponent("big.bin")
        #expect(FileManager.default.createFile(atPath: big.path, contents: nil))
        truncate(big.path, 8 << 20)
        let inFlight = Process()
        let inFlightOutput = directory.appendingPathComponent("in-flight.txt").path
        inFlight.executableURL = URL(fileURLWithPath: "/bin/sh")
        let inFlightBody = directory.appendingPathComponent("in-flight.bin").path
        inFlight.arguments = ["-c", "curl -sk --limit-rate 4M -o \(inFlightBody) -w '%{http_code} %{size_download}' https://127.0.0.1:\(port)/big.bin > \(inFlightOutput)"]
        try inFlight.run()
        // Its handshake is done and its body flowing before the certificate changes.
        #expect(waitUntil(seconds: 5) { ((try? FileManager.default.attributesOfItem(atPath: inFlightBody)[.size] as? Int) ?? 0) > 0 })

        // Replaced as certbot and Kubernetes do: new files renamed over the old ones.
        func replace(with pair: (cert: String, key: String)) throws {
            try FileManager.default.copyItem(atPath: pair.cert, toPath: cert + ".new")
            try FileManager.default.copyItem(atPath: pair.key, toPath: key + ".new")
            readableByTheServer(key + ".new")
            rename(key + ".new", key)
            rename(cert + ".new", cert)
        }
        #expect(try server.reload { try replace(with: second) })
        #expect(server.log().contains("certificate files changed on disk: reloading"))
        #expect(waitUntil(seconds: 10) { (try? subject())?.contains("CN = second.test") == true })
        inFlight.waitUntilExit()
        #expect((try? String(contentsOfFile: inFlightOutput, encoding: .utf8)) == "200 \(8 << 20)")

        // A key that does not match its certificate is refused; the previous certificate keeps serving.
        #expect(try server.reload(expecting: false) {
            try FileManager.default.copyItem(atPath: other.key, toPath: key + ".new")
            readableByTheServer(key + ".new")
            rename(key + ".new", key)
        })
        #expect(server.log().contains("does not match the certificate"))
        #expect(server.log().contains("reload failed: still serving with the previous configuration"))
        #expect(try subject().contains("CN = second.test"))
    }
}

@Suite struct KeyPermissionTests {
    /// Workers read keys after the server became `user`: a key that user cannot read is a config error.
    @Test(.enabled(if: getuid() == 0, "needs root to name another user"))
    func aKeyTheServersUserCannotReadIsRefused() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        chmod(directory.path, 0o755)
        let (cert, key) = try makeTestCertificate(in: directory)
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("site"), withIntermediateDirectories: true)
        let file = directory.appendingPathComponent("webserver.yaml")
        try "user: nobody\nroot: site\ntls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n".write(to: file, atomically: true, encoding: .utf8)
        chown(key, 0, 0)
        chmod(key, 0o600)
        let refused = try run(webserverBinary, ["check", "--config", file.path])
        #expect(refused.status == 1 && refused.error.contains("is not readable by 'nobody'"))
        // With no `user` the server started as root runs as nobody all the same, and says why.
        let noUser = directory.appendingPathComponent("no-user.yaml")
        try "root: site\ntls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n".write(to: noUser, atomically: true, encoding: .utf8)
        let defaulted = try run(webserverBinary, ["check", "--config", noUser.path])
        #expect(defaulted.status == 1 && defaulted.error.contains("no 'user' is set, and a server started as root runs as nobody"))
        chmod(key, 0o644)
        #expect(try run(webserverBinary, ["check", "--config", file.path]).status == 0)
    }
}

@Suite struct OCSPTests {
    /// A response made with `openssl ocsp` for the development certificate is stapled when asked for,
    /// and a file that is not an OCSP response is a clear error.
    @Test func theOperatorsResponseIsStapled() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        #expect(try run(webserverBinary, ["cert", "dev", "--dir", directory.path]).status == 0)
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        let serial = try run("openssl", ["x509", "-in", path("dev.pem"), "-noout", "-serial"]).output
            .trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
        try "V\t351231235959Z\t\t\(serial)\tunknown\t/CN=localhost\n".write(toFile: path("index.txt"), atomically: true, encoding: .utf8)
        #expect(try run("openssl", ["ocsp", "-issuer", path("dev-ca.pem"), "-cert", path("dev.pem"), "-reqout", path("req.der"), "-no_nonce"]).status == 0)
        #expect(try run("openssl", ["ocsp", "-index", path("index.txt"), "-rsigner", path("dev-ca.pem"), "-rkey", path("dev-ca-key.pem"),
                                     "-CA", path("dev-ca.pem"), "-reqin", path("req.der"), "-respout", path("resp.der"), "-ndays", "1"]).status == 0)
        let config = "tls: {listen: ['127.0.0.1:0'], cert: \(path("dev.pem")), key: \(path("dev-key.pem")), ocsp: \(path("resp.der"))}\n"
        let server = try TestServer(config: config, site: richSite).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        let stapled = try run("/bin/sh", ["-c", "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port) -status -CAfile \(path("dev-ca.pem")) 2>/dev/null"]).output
        #expect(stapled.contains("OCSP Response Status: successful") && stapled.contains("Cert Status: good"))
        // Not a response: refused with the file's name.
        let bad = try TestServer(config: "tls: {listen: ['127.0.0.1:0'], cert: \(path("dev.pem")), key: \(path("dev-key.pem")), ocsp: \(path("dev.pem"))}\n", site: richSite)
        let check = try run(webserverBinary, ["check", "--config", bad.configFile.path])
        #expect(check.status == 1 && check.error.contains("is not a DER OCSP response"))
    }
}

@Suite(.serialized) struct CertificateLifecycleTests {
    @Test func aCertificateNearItsEndIsAWarningWithTheDate() throws {
        let directory = try temporaryDirectory()
        let (cert, key) = try makeTestCertificate(in: directory, days: 1)
        let server = try TestServer(config: "tls: {listen: ['127.0.0.1:0'], cert: \(cert), key: \(key)}\n", site: richSite).start()
        defer { server.stop() }
        let log = server.log()
        #expect(log.contains("the certificate \(cert) expires on") && log.contains(" UTC (in "))
    }

    /// `--install` puts the development CA in the system store (curl then trusts the server without
    /// --cacert) under a name of its own (its fingerprint), and in the NSS database Chromium reads (here
    /// in a temporary HOME), and keeps the certificate already made; a second CA sits beside the first;
    /// `--uninstall` takes each out of both again.
    @Test(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/update-ca-certificates"), "needs root and ca-certificates"))
    func installAndUninstallTheDevelopmentCA() throws {
        let directory = try temporaryDirectory()
        let second = try temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(at: directory)
            try? FileManager.default.removeItem(at: second)
        }
        let home = directory.appendingPathComponent("home")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let environment = ["HOME": home.path, "SUDO_USER": ""]
        func certDev(_ dir: URL, _ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
            try run(webserverBinary, ["cert", "dev", "--dir", dir.path] + arguments, environment: environment)
        }
        #expect(try certDev(directory, []).status == 0)
        let leaf = try Data(contentsOf: directory.appendingPathComponent("dev.pem"))
        let installed = try certDev(directory, ["--install"])
        defer {
            _ = try? certDev(directory, ["--uninstall"])  // even when an expectation fails
            _ = try? certDev(second, ["--uninstall"])
        }
        #expect(installed.status == 0 && installed.output.contains("System trust store (curl, Python, Go, OpenSSL): added"), "\(installed.output)\(installed.error)")
        #expect(installed.output.contains("already there, kept"))
        #expect(try Data(contentsOf: directory.appendingPathComponent("dev.pem")) == leaf)  // not re-issued
        let fingerprint = try #require(installed.output.split(separator: "\n").first { $0.contains("SHA-256 fingerprint") })
        let tag = String(fingerprint.split(separator: ":", maxSplits: 1)[1].filter { $0.isHexDigit }.prefix(16)).lowercased()
        let store = "/usr/local/share/ca-certificates/webserver-dev-ca-\(tag).crt"
        #expect(FileManager.default.fileExists(atPath: store))
        let certutil = FileManager.default.isExecutableFile(atPath: "/usr/bin/certutil")
        let nssdb = "sql:" + home.appendingPathComponent(".pki/nssdb").path
        if certutil {
            #expect(installed.output.contains("NSS (Chromium, Firefox): added to \(home.path)/.pki/nssdb"))
            #expect(try run("certutil", ["-L", "-d", nssdb]).output.contains("WebServer development CA \(tag)"))
        }
        let server = try TestServer(
            config: "tls: {listen: ['127.0.0.1:0'], cert: \(directory.path)/dev.pem, key: \(directory.path)/dev-key.pem}\n", site: richSite).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        #expect(try curl(["https://127.0.0.1:\(port)/style.css"]) == "body{}\n")  // no --cacert
        // A second project's CA: its own file beside the first.
        let other = try certDev(second, ["--install"])
        #expect(other.status == 0 && other.output.contains("Development CA: \(second.path)/dev-ca.pem (created)"))
        let files = try FileManager.default.contentsOfDirectory(atPath: "/usr/local/share/ca-certificates").filter { $0.hasPrefix("webserver-dev-ca-") }
        #expect(files.count >= 2 && files.contains("webserver-dev-ca-\(tag).crt"), "\(files)")
        let removed = try certDev(directory, ["--uninstall"])
        #expect(removed.status == 0 && removed.output.contains("Removed the development CA"), "\(removed.output)\(removed.error)")
        #expect(!FileManager.default.fileExists(atPath: store))
        if certutil {
            let listed = try run("certutil", ["-L", "-d", nssdb]).output
            #expect(!listed.contains("WebServer development CA \(tag)") && listed.contains("WebServer development CA"), "\(listed)")
        }
        #expect(try status("https://127.0.0.1:\(port)/style.css") == 0)  // untrusted again
        let again = try certDev(directory, ["--uninstall"])
        #expect(again.status == 0 && again.output.split(separator: "\n").count == 1 && again.output.contains("nothing to remove"), "\(again.output)")
        #expect(try certDev(second, ["--uninstall"]).status == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "/usr/local/share/ca-certificates").filter { $0.hasPrefix("webserver-dev-ca-") }.count == files.count - 2)
    }
}

@Suite struct ChainTests {
    /// A leaf signed by an intermediate: the server sends the full chain from the certificate file, so
    /// a client that trusts only the root connects.
    @Test func fullChainsAreSent() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        func openssl(_ arguments: [String]) throws {
            let result = try run("openssl", arguments)
            guard result.status == 0 else { throw TestFailure("openssl \(arguments.first ?? ""): \(result.error)") }
        }
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try openssl(["req", "-x509"] + ec + ["-keyout", path("root-key.pem"), "-out", path("root.pem"), "-days", "30", "-subj", "/CN=Test Root",
                                               "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
        try "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign\n".write(toFile: path("ca.ext"), atomically: true, encoding: .utf8)
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n".write(toFile: path("leaf.ext"), atomically: true, encoding: .utf8)
        try openssl(["req"] + ec + ["-keyout", path("inter-key.pem"), "-out", path("inter.csr"), "-subj", "/CN=Test Intermediate"])
        try openssl(["x509", "-req", "-in", path("inter.csr"), "-CA", path("root.pem"), "-CAkey", path("root-key.pem"), "-CAcreateserial",
                     "-out", path("inter.pem"), "-days", "30", "-extfile", path("ca.ext")])
        try openssl(["req"] + ec + ["-keyout", path("leaf-key.pem"), "-out", path("leaf.csr"), "-subj", "/CN=localhost"])
        try openssl(["x509", "-req", "-in", path("leaf.csr"), "-CA", path("inter.pem"), "-CAkey", path("inter-key.pem"), "-CAcreateserial",
                     "-out", path("leaf.pem"), "-days", "30", "-extfile", path("leaf.ext")])
        let chain = try String(contentsOfFile: path("leaf.pem"), encoding: .utf8) + String(contentsOfFile: path("inter.pem"), encoding: .utf8)
        try chain.write(toFile: path("fullchain.pem"), atomically: true, encoding: .utf8)
        readableByTheServer(path("leaf-key.pem"))
        let server = try TestServer(config: "tls: {listen: ['127.0.0.1:0'], cert: \(path("fullchain.pem")), key: \(path("leaf-key.pem"))}\n", site: richSite).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        #expect(try curl(["--cacert", path("root.pem"), "https://127.0.0.1:\(port)/style.css"]) == "body{}\n")
        let shown = try run("/bin/sh", ["-c", "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port) -showcerts 2>/dev/null"]).output
        #expect(shown.components(separatedBy: "BEGIN CERTIFICATE").count - 1 == 2)
    }
}
