import Foundation
import Glibc
import Testing

/// Automatic HTTPS end to end against Pebble, a real ACME CA on loopback: the built server's ACME
/// process orders, answers the CA's checks through the workers, installs and renews; the tests look
/// at what a client sees (openssl s_client's issuer and serial, curl verifying Pebble's chain), at
/// /metrics and `webserver status`.
@Suite(.enabled(if: Pebble.installed, "Pebble is not installed (apt-get install pebble)")) struct AcmeTests {
    static let page = "<!doctype html><title>test</title><p>hello</p>\n"

    /// HTTP-01: a certificate obtained and served with Pebble's chain, the challenge answered ahead of
    /// the site's access rule and HTTP-to-HTTPS redirect; then kept across a restart without a new order.
    @Test func http01CertificateIsObtainedServedAndKeptAcrossARestart() throws {
        let (http, tls) = (try fixedPort(), try fixedPort())
        let pebble = try Pebble(httpPort: http, tlsPort: tls)
        let state = try temporaryDirectory().appendingPathComponent("acme").path
        let config = pebble.acme(state: state) + """
            tls:
              listen: ["127.0.0.1:\(tls)"]
            sites:
              - names: [shop.example.com, www.shop.example.com]
                root: site
                redirect_http: true
                access: {deny: [127.0.0.0/8]}

            """
        let flags = ["--listen", "127.0.0.1:\(http)"]
        let started = Date()
        let server = try TestServer(config: config, flags: flags).start()
        defer { server.stop() }
        var issued: (issuer: String, serial: String, subject: String)?
        #expect(waitUntil(seconds: 30) {
            issued = presentedCertificate(port: tls, name: "shop.example.com")
            return issued?.issuer.contains("Pebble Intermediate CA") == true
        }, "no Pebble certificate; server log:\n\(server.log())\npebble log:\n\(pebble.log())")
        print("ACME figure: from start to serving the issued certificate: \(Int(Date().timeIntervalSince(started) * 1000)) ms (HTTP-01, two names)")
        #expect(presentedCertificate(port: tls, name: "www.shop.example.com")?.serial == issued?.serial)
        // Pebble's chain verifies for the name; the site's own rules still apply to everything else.
        let root = try pebble.root()
        let secure = try fetch("https://shop.example.com:\(tls)/", ["--cacert", root, "--resolve", "shop.example.com:\(tls):127.0.0.1"])
        #expect(secure.status == 403)
        #expect(try status("http://127.0.0.1:\(http)/", ["-H", "Host: shop.example.com"]) == 403)
        // One reload took it up: the ACME process's message, not the certificate watch as well.
        usleep(1_000_000)
        let metrics = try #require(server.metrics())
        #expect(metrics[#"webserver_reloads_total{result="applied"}"#] == 1)
        #expect(metrics[#"webserver_acme_orders_total{name="shop.example.com"}"#] == 1)
        #expect(metrics[#"webserver_acme_failures{name="shop.example.com"}"#] == 0)
        #expect(metrics[#"webserver_acme_certificate_expiry_time_seconds{name="shop.example.com"}"#] > Date().timeIntervalSince1970)
        let report = try run(webserverBinary, ["status", "--config", server.configFile.path])
        #expect(report.output.contains("shop.example.com,www.shop.example.com"), "\(report.output)")
        #expect(report.output.contains("Pebble Intermediate CA"))
        // Challenge files are gone once the order is done.
        #expect((try? FileManager.default.contentsOfDirectory(atPath: "\(state)/challenges/http-01"))?.isEmpty == true)
        // The ACME process killed: the supervisor starts another, which finds the certificate and orders nothing.
        let acme = try #require(server.pids(of: "acme").first)
        kill(acme, SIGKILL)
        #expect(waitUntil(seconds: 10) { server.pids(of: "acme").contains { $0 != acme } })
        #expect(server.waitForLog("renewal planned at", count: 2))
        #expect(server.metrics()?[#"webserver_restarts_total{role="acme"}"#] == 1)
        #expect(server.metrics()?[#"webserver_acme_orders_total{name="shop.example.com"}"#] == 1)
        #expect(presentedCertificate(port: tls, name: "shop.example.com")?.serial == issued?.serial)
        #expect(server.stop() == 0)

        // The same state after a restart: the certificate is served from the first handshake, no order.
        let again = try TestServer(config: config, flags: flags).start()
        defer { again.stop() }
        #expect(presentedCertificate(port: tls, name: "shop.example.com")?.serial == issued?.serial)
        #expect(again.waitForLog("renewal planned at"))
        #expect(!again.log().contains("order https://"), "\(again.log())")
        #expect(again.metrics()?[#"webserver_acme_orders_total{name="shop.example.com"}"#] == 1)
    }

    /// TLS-ALPN-01 only (Pebble's HTTP-01 port has nothing on it): the workers answer the acme-tls/1
    /// handshake with the challenge certificate. A name the CA refuses stays refused at the handshake,
    /// with the CA's error in /metrics, and costs the other site nothing.
    @Test func tlsALPN01AndANameTheCARefuses() throws {
        let tls = try fixedPort()
        let pebble = try Pebble(httpPort: try fixedPort(), tlsPort: tls, blocked: ["blocked.example.com"])
        let state = try temporaryDirectory().appendingPathComponent("acme").path
        let config = pebble.acme(state: state, challenges: "[tls-alpn-01]") + """
            tls:
              listen: ["127.0.0.1:\(tls)"]
            sites:
              - names: [alpn.example.com]
                root: site
              - names: [blocked.example.com]
                root: site

            """
        let server = try TestServer(config: config).start()
        defer { server.stop() }
        #expect(waitUntil(seconds: 30) { presentedCertificate(port: tls, name: "alpn.example.com")?.issuer.contains("Pebble") == true },
                "server log:\n\(server.log())\npebble log:\n\(pebble.log())")
        #expect(server.log().contains("answering tls-alpn-01 for alpn.example.com"))
        let body = try fetch("https://alpn.example.com:\(tls)/", ["--http2", "--cacert", try pebble.root(), "--resolve", "alpn.example.com:\(tls):127.0.0.1"])
        #expect(body.status == 200 && body.body == AcmeTests.page)
        // No challenge is pending now: an acme-tls/1 handshake is refused rather than shown a certificate.
        #expect(presentedCertificate(port: tls, name: "alpn.example.com", alpn: "acme-tls/1") == nil)
        // The refused name: the CA's error is reported, its handshakes are refused.
        var text = ""
        #expect(waitUntil(seconds: 20) {
            text = (try? adminGet(server.adminPort ?? 0, "/metrics").body) ?? ""
            return text.contains(#"webserver_acme_failures{name="blocked.example.com"} 1"#)
        }, "\(server.log())")
        #expect(text.contains(#"webserver_acme_last_error_time_seconds{name="blocked.example.com",error="rejectedIdentifier"#), "\(text)")
        #expect(presentedCertificate(port: tls, name: "blocked.example.com") == nil)
        #expect(server.log().contains("TLS clients asking for these names are refused until it arrives"))
        // A site added by a reload gets its certificate from the running ACME process.
        let handle = try FileHandle(forWritingTo: server.configFile)
        handle.seekToEndOfFile()
        handle.write(Data("  - names: [added.example.com]\n    root: site\n".utf8))
        try handle.close()
        #expect(server.reload { kill(server.pid, SIGHUP) })
        #expect(waitUntil(seconds: 30) { presentedCertificate(port: tls, name: "added.example.com")?.issuer.contains("Pebble") == true },
                "\(server.log())")
        #expect(server.pids(of: "acme").count == 1)
    }

    /// A CA that requires external account binding (as ZeroSSL does): the account bound with the key
    /// the CA gave gets its certificate; one without is told, in the log, what is missing.
    @Test func externalAccountBinding() throws {
        let tls = try fixedPort()
        let macKey = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
        let pebble = try Pebble(httpPort: try fixedPort(), tlsPort: tls, eab: ["kid-1": macKey])
        let states = try temporaryDirectory()
        let config = """
            tls:
              listen: ["127.0.0.1:\(tls)"]
            acme: {directory: "\(pebble.directoryURL)", agree_terms: true, ca_bundle: \(pebble.caBundle), challenges: [tls-alpn-01]}
            sites:
              - names: [bound.example.com]
                root: site
                acme: {state: \(states.path)/bound, eab: {key_id: kid-1, mac_key: \(macKey)}}
              - names: [unbound.example.com]
                root: site
                acme: {state: \(states.path)/unbound}

            """
        let server = try TestServer(config: config).start()
        defer { server.stop() }
        #expect(waitUntil(seconds: 30) { presentedCertificate(port: tls, name: "bound.example.com")?.issuer.contains("Pebble") == true },
                "server log:\n\(server.log())\npebble log:\n\(pebble.log())")
        #expect(server.waitForLog("the CA requires an external account binding: set acme.eab"))
        #expect(presentedCertificate(port: tls, name: "unbound.example.com") == nil)
    }

    /// Renewal (Pebble's certificates live 12 seconds, so one is renewed 8 seconds in) under a bounded
    /// load of new TLS connections verified against Pebble's root and of keep-alive ones: no request
    /// lost at the switch. Then the CA goes away: the next renewal fails, is reported, and the
    /// certificate there keeps being served.
    @Test func renewalUnderLoadAndACAThatIsDown() throws {
        let (http, tls) = (try fixedPort(), try fixedPort())
        let pebble = try Pebble(httpPort: http, tlsPort: tls, validity: 12)
        let state = try temporaryDirectory().appendingPathComponent("acme").path
        let config = pebble.acme(state: state) + """
            tls:
              listen: ["127.0.0.1:\(tls)"]
            sites:
              - names: [renew.example.com]
                root: site

            """
        let server = try TestServer(config: config, flags: ["--listen", "127.0.0.1:\(http)"]).start()
        defer { server.stop() }
        // Plain HTTP from the start: the reload that takes up the first certificate loses none of it.
        let plain = try LoadRun(port: http, clients: 2, seconds: 6, mode: "keepalive", path: "/", expectedLength: AcmeTests.page.utf8.count, host: "renew.example.com")
        var first: String?
        #expect(waitUntil(seconds: 30) {
            first = presentedCertificate(port: tls, name: "renew.example.com").flatMap { $0.issuer.contains("Pebble") ? $0.serial : nil }
            return first != nil
        }, "\(server.log())")
        let root = try pebble.root()
        let length = AcmeTests.page.utf8.count
        let fresh = try LoadRun(port: tls, clients: 2, seconds: 12, mode: "new", path: "/", expectedLength: length, host: "renew.example.com", tlsCA: root)
        let kept = try LoadRun(port: tls, clients: 2, seconds: 12, mode: "keepalive", path: "/", expectedLength: length, host: "renew.example.com", tlsCA: root)
        var renewed: String?
        #expect(waitUntil(seconds: 20) {
            renewed = presentedCertificate(port: tls, name: "renew.example.com")?.serial
            return renewed != nil && renewed != first
        }, "\(server.log())")
        for run in [try plain.finish(), try fresh.finish(), try kept.finish()] {
            #expect(run.failed == 0 && run.ok > 0, "\(run.errors)")
        }
        pebble.stop()
        var text = ""
        #expect(waitUntil(seconds: 20) {
            text = (try? adminGet(server.adminPort ?? 0, "/metrics").body) ?? ""
            return text.contains(#"webserver_acme_failures{name="renew.example.com"} 1"#)
        }, "\(server.log())")
        #expect(text.contains("Couldn't connect to server"), "\(text)")
        #expect(server.log().contains("the current certificate keeps serving"))
        let served = presentedCertificate(port: tls, name: "renew.example.com")
        #expect(served?.issuer.contains("Pebble") == true)
        #expect(served?.serial != first)
        // A restart keeps the failure's backoff (a minute here): no new attempt at start.
        #expect(server.stop() == 0)
        let again = try TestServer(config: config, flags: ["--listen", "127.0.0.1:\(http)"]).start()
        defer { again.stop() }
        usleep(3_000_000)
        #expect(!again.log().contains("ordering the certificate failed"), "\(again.log())")
        #expect(again.metrics()?[#"webserver_acme_failures{name="renew.example.com"}"#] == 1)
        #expect(presentedCertificate(port: tls, name: "renew.example.com")?.serial == served?.serial)
    }
}
