import Foundation
import Glibc
import Testing

@testable import Server

func proxyParse(_ bytes: [UInt8]) -> ProxyProtocol.Result {
    bytes.withUnsafeBytes { ProxyProtocol.parse($0) }
}

/// A v2 header: command (0 LOCAL, 1 PROXY), family byte, address block, then `tlvs`.
func proxyV2(command: UInt8 = 1, family: UInt8, addresses: [UInt8], tlvs: [UInt8] = []) -> [UInt8] {
    let length = addresses.count + tlvs.count
    return ProxyProtocol.v2Signature + [0x20 | command, family, UInt8(length >> 8), UInt8(length & 0xFF)] + addresses + tlvs
}

func address(_ text: String) -> SocketAddress { SocketAddress(parsing: text)! }

@Suite struct ProxyProtocolTests {
    @Test func version1() {
        let header = Array("PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n".utf8)
        #expect(proxyParse(header + Array("GET / HTTP/1.1\r\n".utf8)) == .complete(length: header.count, source: address("192.0.2.10:56324")))
        let six = Array("PROXY TCP6 2001:db8::7 2001:db8::1 4711 80\r\n".utf8)
        #expect(proxyParse(six) == .complete(length: six.count, source: address("[2001:db8::7]:4711")))
        let unknown = Array("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n".utf8)
        #expect(proxyParse(unknown) == .complete(length: unknown.count, source: nil))
        #expect(proxyParse(Array("PROXY UNKNOWN\r\n".utf8)) == .complete(length: 15, source: nil))
        // Every prefix of a valid header is incomplete: a header split across segments waits.
        for cut in 1..<header.count { #expect(proxyParse(Array(header[0..<cut])) == .incomplete, "\(cut)") }
        let invalid = [
            "GET / HTTP/1.1\r\n", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        ]
        for text in invalid { #expect(proxyParse(Array(text.utf8)) == .invalid, "\(text.debugDescription)") }
        // No CRLF within 107 bytes.
        #expect(proxyParse(Array(("PROXY UNKNOWN " + String(repeating: "x", count: 100)).utf8)) == .invalid)
    }

    @Test func version2() {
        let four = proxyV2(family: 0x11, addresses: [192, 0, 2, 10, 198, 51, 100, 1, 0xDC, 0x04, 0x01, 0xBB])
        #expect(proxyParse(four + Array("GET /".utf8)) == .complete(length: 28, source: address("192.0.2.10:56324")))
        var six: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [7]
        six += [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1] + [0x12, 0x67, 0x00, 0x50]
        #expect(proxyParse(proxyV2(family: 0x21, addresses: six)) == .complete(length: 52, source: address("[2001:db8::7]:4711")))
        // TLVs after the addresses are skipped (ALPN, authority, unique id, SSL, and a NOOP).
        let tlvs: [UInt8] = [0x01, 0x00, 0x02, 0x68, 0x32, 0x02, 0x00, 0x03, 0x61, 0x2E, 0x62, 0x04, 0x00, 0x00, 0x05, 0x00, 0x01, 0x09]
        let withTLVs = proxyV2(family: 0x11, addresses: [10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 0, 81], tlvs: tlvs)
        #expect(proxyParse(withTLVs) == .complete(length: withTLVs.count, source: address("10.0.0.1:80")))
        // LOCAL (a health check): the addresses, if any, are not the client's.
        let local = proxyV2(command: 0, family: 0x00, addresses: [])
        #expect(proxyParse(local) == .complete(length: 16, source: nil))
        #expect(proxyParse(proxyV2(command: 0, family: 0x11, addresses: [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])) == .complete(length: 28, source: nil))
        // UNSPEC, UNIX and UDP carry no TCP client address: the connection's own peer stands.
        #expect(proxyParse(proxyV2(family: 0x00, addresses: [])) == .complete(length: 16, source: nil))
        #expect(proxyParse(proxyV2(family: 0x12, addresses: [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])) == .complete(length: 28, source: nil))
        #expect(proxyParse(proxyV2(family: 0x31, addresses: [UInt8](repeating: 0, count: 216))) == .complete(length: 232, source: nil))
        // Split anywhere: incomplete until the last byte.
        for cut in 1..<withTLVs.count { #expect(proxyParse(Array(withTLVs[0..<cut])) == .incomplete, "\(cut)") }
        var badSignature = four
        badSignature[5] = 0x0E
        var version1 = four
        version1[12] = 0x11
        var command = four
        command[12] = 0x22
        var family = four
        family[13] = 0x41
        var transport = four
        transport[13] = 0x13
        let short = proxyV2(family: 0x11, addresses: [1, 2, 3, 4, 5, 6, 7, 8])  // 8 bytes for a 12-byte block
        let long = ProxyProtocol.v2Signature + [0x21, 0x11, 0x10, 0x00]  // 4096 bytes of addresses and TLVs
        for bad in [badSignature, version1, command, family, transport, short, long] { #expect(proxyParse(bad) == .invalid) }
        #expect(proxyParse([0x16, 0x03, 0x01]) == .invalid)  // a TLS ClientHello with no header
    }

    @Test func networks() throws {
        let trusted = try #require(Networks(["10.0.0.0/8", "192.0.2.7", "fd00::/8", "::1"]))
        #expect(trusted.contains(address("10.200.3.4:1")))
        #expect(!trusted.contains(address("11.0.0.1:1")))
        #expect(trusted.contains(address("192.0.2.7:9")) && !trusted.contains(address("192.0.2.8:9")))
        #expect(trusted.contains(address("[fd12::1]:1")) && !trusted.contains(address("[fe80::1]:1")))
        #expect(trusted.contains(address("[::1]:1")) && !trusted.contains(address("[::2]:1")))
        #expect(trusted.contains(address("[::ffff:10.1.2.3]:1")))  // IPv4-mapped
        let odd = try #require(Networks(["172.16.0.0/12", "0.0.0.0/0"]))
        #expect(odd.contains(address("8.8.8.8:1")) && !odd.contains(address("[::1]:1")))
        #expect(try #require(Networks(["172.16.0.0/12"])).contains(address("172.31.255.255:1")))
        #expect(!(try #require(Networks(["172.16.0.0/12"])).contains(address("172.32.0.0:1"))))
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "host", "10.0.0.0/", "10.0.0.0/8/8", ""] { #expect(Networks([bad]) == nil, "\(bad)") }
    }
}

/// The client address a request resolves to, from `peer`, with `lines` as header fields.
func client(_ lines: [String], peer: String, trusted: [String], header: ClientAddress.Header = .xForwardedFor) -> String {
    let text = "GET / HTTP/1.1\r\nHost: a\r\n" + lines.map { $0 + "\r\n" }.joined() + "\r\n"
    var bytes = Array(text.utf8)
    return bytes.withUnsafeMutableBytes { buffer in
        guard case .complete(let head) = RequestParser.parse(UnsafeRawBufferPointer(buffer), limits: ParserLimits()) else { return "unparsed" }
        return ClientAddress.resolve(UnsafeRawBufferPointer(buffer), head, peer: address(peer), trusted: Networks(trusted)!, header: header).description
    }
}

@Suite struct ForwardedHeaderTests {
    @Test func theRightMostUntrustedHopIsTheClient() {
        let proxies = ["10.0.0.0/8", "127.0.0.1"]
        // (header lines, peer, expected client)
        let rows: [([String], String, String)] = [
            ([], "127.0.0.1:5000", "127.0.0.1:5000"),
            (["X-Forwarded-For: 203.0.113.9"], "127.0.0.1:5000", "203.0.113.9:0"),
            (["X-Forwarded-For: 203.0.113.9, 10.1.1.1"], "127.0.0.1:5000", "203.0.113.9:0"),
            // The client wrote a fake first hop; the proxy appended the real one.
            (["X-Forwarded-For: 6.6.6.6, 203.0.113.9, 10.1.1.1"], "127.0.0.1:5000", "203.0.113.9:0"),
            // From an untrusted peer the header is ignored.
            (["X-Forwarded-For: 203.0.113.9"], "198.51.100.4:7000", "198.51.100.4:7000"),
            // Split over two lines: one list.
            (["X-Forwarded-For: 6.6.6.6", "X-Forwarded-For: 203.0.113.9, 10.1.1.1"], "127.0.0.1:5000", "203.0.113.9:0"),
            // Every hop trusted: the left-most.
            (["X-Forwarded-For: 10.0.0.5, 10.0.0.6"], "127.0.0.1:5000", "10.0.0.5:0"),
            // Ports and IPv6 forms.
            (["X-Forwarded-For: 203.0.113.9:4711"], "127.0.0.1:5000", "203.0.113.9:4711"),
            (["X-Forwarded-For: 2001:db8::9"], "127.0.0.1:5000", "[2001:db8::9]:0"),
            (["X-Forwarded-For: [2001:db8::9]:80"], "127.0.0.1:5000", "[2001:db8::9]:80"),
            // Garbage stops the walk at the nearest trusted hop.
            (["X-Forwarded-For: 203.0.113.9, unknown, 10.1.1.1"], "127.0.0.1:5000", "10.1.1.1:0"),
            (["X-Forwarded-For: nonsense"], "127.0.0.1:5000", "127.0.0.1:5000"),
            // The other header is not read.
            (["Forwarded: for=203.0.113.9"], "127.0.0.1:5000", "127.0.0.1:5000"),
        ]
        for (lines, peer, expected) in rows {
            #expect(client(lines, peer: peer, trusted: proxies) == expected, "\(lines) from \(peer)")
        }
    }

    @Test func forwardedRFC7239() {
        let proxies = ["10.0.0.0/8", "127.0.0.1"]
        let rows: [([String], String)] = [
            (["Forwarded: for=203.0.113.9"], "203.0.113.9:0"),
            (["Forwarded: For=\"[2001:db8:cafe::17]:4711\""], "[2001:db8:cafe::17]:4711"),
            (["Forwarded: for=6.6.6.6, for=203.0.113.9;proto=https;by=10.0.0.1, for=10.2.2.2"], "203.0.113.9:0"),
            (["Forwarded: proto=https;for=203.0.113.9:81"], "203.0.113.9:81"),
            (["Forwarded: for=\"_hidden\", for=10.2.2.2"], "10.2.2.2:0"),
            (["Forwarded: for=unknown"], "127.0.0.1:5000"),
            (["Forwarded: by=10.0.0.1;host=\"a,b\", for=203.0.113.9"], "203.0.113.9:0"),  // a quoted comma
            (["X-Forwarded-For: 203.0.113.9"], "127.0.0.1:5000"),
        ]
        for (lines, expected) in rows {
            #expect(client(lines, peer: "127.0.0.1:5000", trusted: proxies, header: .forwarded) == expected, "\(lines)")
        }
        #expect(client(["X-Forwarded-For: 203.0.113.9"], peer: "127.0.0.1:5000", trusted: proxies, header: .none) == "127.0.0.1:5000")
    }

    @Test func configuration() throws {
        let config = try loadConfig("""
            listen: ["127.0.0.1:8001", {address: "127.0.0.1:8002", proxy_protocol: true}]
            root: site
            proxy: {trusted: [10.0.0.0/8, "fd00::/8"], header_timeout: 2s, forwarded_header: forwarded}
            """)
        #expect(config.listen == [ListenSocket(address: "127.0.0.1:8001"), ListenSocket(address: "127.0.0.1:8002", proxyProtocol: true)])
        #expect(config.proxy == ServerConfig.ProxySettings(trusted: ["10.0.0.0/8", "fd00::/8"], headerTimeoutMilliseconds: 2000, forwardedHeader: .forwarded))
        #expect(ServerConfig().proxy.trusted == ["127.0.0.0/8", "::1"])
        let found = issues("""
            root: site
            listen: [{address: "127.0.0.1:0", proxy: true}, {proxy_protocol: true}]
            proxy: {trusted: [10.0.0.0/33, lan], forwarded_header: x-real-ip}
            """)
        #expect(found.map(\.key) == ["listen.proxy", "listen", "proxy.trusted", "proxy.trusted", "proxy.forwarded_header"])
        #expect(found.map(\.line) == [2, 2, 3, 3, 3])
        var overrides = ConfigOverrides()
        overrides.listen = ["127.0.0.1:0"]
        overrides.proxyProtocol = true
        overrides.trustedProxies = ["192.0.2.0/24"]
        let flagged = try loadConfig("root: site\n", overrides: overrides)
        #expect(flagged.listen.map(\.proxyProtocol) == [true] && flagged.proxy.trusted == ["192.0.2.0/24"])
        overrides.trustedProxies = ["nope"]
        #expect(issues("root: site\n", overrides: overrides).map(\.key) == ["--trusted-proxy"])
    }
}

@Suite struct UnixSocketConfigTests {
    @Test func unixListenEntriesWithOwnerAndMode() throws {
        let config = try loadConfig("""
            root: site
            listen: ["127.0.0.1:8001", "unix:web.sock", {address: "unix:/run/x/api.sock", owner: "www-data:adm", mode: "0600", proxy_protocol: true}]
            """)
        #expect(config.listen.count == 3 && config.listen[1].address.hasPrefix("unix:/") && config.listen[1].address.hasSuffix("/web.sock"))
        #expect(config.listen[1].unixPath?.hasSuffix("/web.sock") == true && config.listen[0].unixPath == nil)
        #expect(config.listen.map(\.proxyProtocol) == [false, false, true])
        #expect(config.listen[1].mode == 0o660 && config.listen[1].owner == nil)
        var api = ListenSocket(address: "unix:/run/x/api.sock", proxyProtocol: true)
        api.owner = "www-data"
        api.group = "adm"
        api.mode = 0o600
        #expect(config.listen[2] == api)
        let found = issues("root: site\nlisten: [{address: 'unix:/a.sock', mode: '999'}, {address: '127.0.0.1:1', owner: 'x'}]\n")
        #expect(found.map(\.key) == ["listen.mode", "listen"])
    }
}

@Suite struct UnixSocketFileTests {
    @Test func theSocketFileGetsItsModeAndOwnerAndAStaleOneIsReplaced() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-unix-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("s.sock").path
        let owner = getuid() == 0 ? "nobody" : nil  // changing the owner needs root
        let first = try Socket.listenUnix(path: path, backlog: 8, mode: 0o600, owner: owner, group: nil)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        if let owner { #expect(info.st_uid == getpwnam(owner)!.pointee.pw_uid) }
        // Someone listening there: refused, like a busy port.
        #expect(throws: SystemError.self) { _ = try Socket.listenUnix(path: path, backlog: 8, mode: 0o600, owner: nil, group: nil) }
        #expect(Socket.unixPath(of: first) == path)
        close(first)
        // The file left behind (nobody listening): replaced.
        let second = try Socket.listenUnix(path: path, backlog: 8, mode: 0o660, owner: nil, group: nil)
        defer { close(second) }
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o660)
        // Not a socket: never removed.
        let file = directory.appendingPathComponent("plain").path
        #expect(FileManager.default.createFile(atPath: file, contents: Data("keep".utf8)))
        #expect(throws: SystemError.self) { _ = try Socket.listenUnix(path: file, backlog: 8, mode: 0o660, owner: nil, group: nil) }
        #expect(FileManager.default.contents(atPath: file) == Data("keep".utf8))
    }
}
