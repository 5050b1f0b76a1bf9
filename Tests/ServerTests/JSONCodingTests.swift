import Foundation
import Testing

@testable import Server
@testable import ServerCore

/// The configuration's JSON (`JSONCoding`, what the supervisor writes and every child reads) is JSON:
/// Foundation's coders read what it writes and it reads what they write, value for value.
@Suite struct JSONCodingTests {
    /// A configuration with something set in every kind of field: optionals set and nil, nested
    /// structures, dictionaries, arrays of arrays, enums, strings that need escapes, large numbers.
    static func richConfig() -> ServerConfig {
        var config = ServerConfig()
        config.root = "/srv/www/\"quoted\" \\ back\tslash\nnewline \u{1} é 日本 🚀"
        config.user = "www-data"
        config.errorLog = nil
        config.accessLog = "/var/log/webserver/access.log"
        config.errorPages = ["404": "/errors/404.html", "500": "/errors/5xx.html"]
        config.headers = [ServerConfig.HeaderRule(match: "*.html", set: [["Cache-Control", "no-cache"], ["X-A", "b"]])]
        config.logLevel = .debug
        config.maxConnections = Int.max
        config.listeners = 3
        config.workers.recycleAfter = -1
        config.limits.connectionsPerIP = 16
        config.gzip = ServerConfig.GzipSettings(enabled: false, level: 9, types: ["text/*"], never: [], encodings: [.gzip])
        config.proxy = ServerConfig.ProxySettings(trusted: ["10.0.0.0/8", "fd00::/8"], forwardedHeader: .forwarded)
        config.tls.listen = [ListenSocket(address: "[::1]:8443", origin: "tls.listen[0]")]
        config.tls.minVersion = .tls13
        config.tls.sites = [TLSSite(certificates: [CertificatePair(certificate: "/a.pem", key: "/a-key.pem", line: 7, origin: "sites[0].cert")], ocsp: "/a.der")]
        var site = SiteSettings()
        site.names = ["example.com", "*.example.org"]
        site.root = "/srv/example"
        site.certificates = TLSSite(certificates: [], ocsp: nil)
        site.rules.redirects = [Redirect(from: "/old/*", to: "https://example.com/new", status: 308, keepQuery: false)]
        site.rules.tryFiles = TryFiles(candidates: ["$uri", "$uri/", "/index.html"], except: ["/api/*"])
        site.rules.access = [AccessRule(prefix: "/admin", allow: ["127.0.0.1"], deny: ["all"])]
        site.rules.rateLimit = RateLimit(perSecond: 10, burst: 20)
        site.rules.canonicalHost = .apex
        config.sites = [site, SiteSettings()]
        return config
    }

    @Test func whatItWritesFoundationReads() throws {
        let config = JSONCodingTests.richConfig()
        let text = try JSONCoding.encode(config)
        let read = try JSONDecoder().decode(ServerConfig.self, from: Data(text))
        #expect(read == config)
        #expect(read.root == config.root && read.tls.sites == config.tls.sites && read.sites == config.sites)
    }

    @Test func whatFoundationWritesItReads() throws {
        let config = JSONCodingTests.richConfig()
        for formatting: JSONEncoder.OutputFormatting in [[], [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]] {
            let encoder = JSONEncoder()
            encoder.outputFormatting = formatting
            let text = [UInt8](try encoder.encode(config))
            let read = try JSONCoding.decode(ServerConfig.self, from: text)
            #expect(read == config)
            #expect(read.root == config.root)
        }
    }

    @Test func itReadsBackWhatItWrites() throws {
        let config = JSONCodingTests.richConfig()
        #expect(try JSONCoding.decode(ServerConfig.self, from: JSONCoding.encode(config)) == config)
        #expect(try JSONCoding.decode(ServerConfig.self, from: JSONCoding.encode(ServerConfig())) == ServerConfig())
    }

    @Test func escapesAndNumbers() throws {
        // \u escapes, a surrogate pair, and what Foundation would write for each.
        #expect(try JSONCoding.decode([String].self, from: Array(#"["a\u00e9\ud83d\ude80\/\b\f\n\r\t\"\\"]"#.utf8)) == ["aé🚀/\u{8}\u{c}\n\r\t\"\\"])
        #expect(try JSONCoding.decode([Int64].self, from: Array("[9223372036854775807, -9223372036854775808, 0]".utf8))
                == [Int64.max, Int64.min, 0])
        #expect(try JSONCoding.decode([UInt64].self, from: Array("[18446744073709551615]".utf8)) == [UInt64.max])
        #expect(try JSONCoding.decode([Double].self, from: Array("[1.5, -2e3]".utf8)) == [1.5, -2000])
        #expect(try JSONCoding.decode([String: Int?].self, from: Array(#"{"a": null, "b": 2}"#.utf8)) == ["a": nil, "b": 2])
        let text = String(decoding: try JSONCoding.encode(["\u{0}\u{1f}x"]), as: UTF8.self)
        #expect(text == #"["\u0000\u001fx"]"#)
    }

    @Test(arguments: [
        "", "{", "[1,]", "[1] x", "{\"a\" 1}", "\"\\ud800\"", "\"\\q\"", "\"a\u{1}\"", "[tru]", "{\"a\":}",
        String(repeating: "[", count: 200) + String(repeating: "]", count: 200),
    ])
    func notJSONIsAnError(_ text: String) {
        #expect(throws: DecodingError.self) { try JSONCoding.decode([Int].self, from: Array(text.utf8)) }
    }

    @Test func aValueThatDoesNotFitIsAnError() {
        #expect(throws: DecodingError.self) { try JSONCoding.decode([UInt8].self, from: Array("[300]".utf8)) }
        #expect(throws: DecodingError.self) { try JSONCoding.decode([Int].self, from: Array("[1.5]".utf8)) }
        #expect(throws: DecodingError.self) { try JSONCoding.decode([Int].self, from: Array(#"["1"]"#.utf8)) }
        #expect(throws: DecodingError.self) { try JSONCoding.decode(ServerConfig.self, from: Array(#"{"root": "/"}"#.utf8)) }
    }
}
