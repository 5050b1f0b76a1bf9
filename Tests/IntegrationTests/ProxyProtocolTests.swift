import Foundation
import Glibc
import Testing

let plainRequest = Array("GET /index.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8)

@Suite(.serialized) struct ProxyProtocolIntegrationTests {
    /// v1 and v2 headers in front of requests: answered, and the access log names the client the
    /// header gave, not the proxy's address.
    @Test func headersNameTheClientInTheAccessLog() throws {
        let server = try TestServer(flags: ["--listen", "127.0.0.1:0", "--proxy-protocol"]).start()
        defer { server.stop() }
        let v1 = Array("PROXY TCP4 203.0.113.9 127.0.0.1 51234 80\r\n".utf8)
        #expect(statusCodes(String(decoding: try exchange(port: server.port, v1 + plainRequest), as: UTF8.self)) == [200])
        let six = Array("PROXY TCP6 2001:db8::9 ::1 4711 80\r\n".utf8)
        #expect(statusCodes(String(decoding: try exchange(port: server.port, six + plainRequest), as: UTF8.self)) == [200])
        var v2 = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x12] as [UInt8]
        v2 += [198, 51, 100, 23, 127, 0, 0, 1, 0x30, 0x39, 0x00, 0x50, 0x04, 0x00, 0x03, 0x61, 0x62, 0x63]  // + a TLV
        // Split across segments: the header arrives in three pieces, the request in a fourth.
        let (split, _) = try exchangeInParts(port: server.port, [Array(v2[0..<5]), Array(v2[5..<20]), Array(v2[20...]), plainRequest])
        #expect(statusCodes(String(decoding: split, as: UTF8.self)) == [200])
        // LOCAL, as a health check sends it: the connection's own address stands.
        let local: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00]
        #expect(statusCodes(String(decoding: try exchange(port: server.port, local + plainRequest), as: UTF8.self)) == [200])
        // Keep-alive after the header: two requests, one header.
        let two = Array("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8)
        #expect(statusCodes(String(decoding: try exchange(port: server.port, v1 + two), as: UTF8.self)) == [200, 200])
        let lines = accessLines(server, count: 6)
        #expect(lines.count == 6)
        #expect(lines[0].hasPrefix("203.0.113.9 - - ["))
        #expect(lines[1].hasPrefix("2001:db8::9 - - ["))
        #expect(lines[2].hasPrefix("198.51.100.23 - - ["))
        #expect(lines[3].hasPrefix("127.0.0.1 - - ["))
        #expect(lines[4].hasPrefix("203.0.113.9 - - [") && lines[5].hasPrefix("203.0.113.9 - - ["))
    }

    /// Strict: no header, a malformed one, one from an untrusted address, or one that never finishes:
    /// the connection is closed without an answer.
    @Test func anythingButAWholeTrustedHeaderIsClosed() throws {
        let server = try TestServer(config: "proxy: {header_timeout: 500ms}\n", flags: ["--listen", "127.0.0.1:0", "--proxy-protocol"]).start()
        defer { server.stop() }
        for bad in [plainRequest, Array("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".utf8) + plainRequest, [0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]] {
            let (reply, closed) = try exchangeNotingClose(port: server.port, bad, timeout: 3)
            #expect(reply.isEmpty && closed, "\(String(decoding: bad.prefix(20), as: UTF8.self).debugDescription)")
        }
        // A trusted peer that sent a request instead of a header is not cut off silently.
        #expect(server.waitForLog("broken header: \"GET /index.html HTTP/1.1\\xd\\xa"))
        // Half a header, then silence: closed when proxy.header_timeout passes, not before.
        let started = Date()
        let (reply, closed) = try exchangeNotingClose(port: server.port, Array("PROXY TCP4 1.2.3".utf8), timeout: 5)
        let waited = Date().timeIntervalSince(started)
        #expect(reply.isEmpty && closed && waited >= 0.4 && waited < 3, "closed after \(waited) s")
        // Still serving properly framed connections.
        let v1 = Array("PROXY TCP4 203.0.113.9 127.0.0.1 51234 80\r\n".utf8)
        #expect(statusCodes(String(decoding: try exchange(port: server.port, v1 + plainRequest), as: UTF8.self)) == [200])

        let strict = try TestServer(flags: ["--listen", "127.0.0.1:0", "--proxy-protocol", "--trusted-proxy", "192.0.2.0/24"]).start()
        defer { strict.stop() }
        let (untrusted, cut) = try exchangeNotingClose(port: strict.port, v1 + plainRequest, timeout: 3)
        #expect(untrusted.isEmpty && cut)
        #expect(strict.waitForLog("on a PROXY protocol socket: not in proxy.trusted"))
    }

    /// On a TLS socket the header comes before the handshake (Python's ssl module is the client).
    @Test func aHeaderBeforeTLS() throws {
        let certificates = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: certificates) }
        let (cert, key) = try makeTestCertificate(in: certificates)
        let server = try TestServer(flags: ["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key,
                                            "--proxy-protocol"]).start()
        defer { server.stop() }
        let port = try #require(server.tlsPort)
        let script = """
            import socket, ssl, sys
            s = socket.create_connection(("127.0.0.1", \(port)))
            s.sendall(b"PROXY TCP4 203.0.113.77 127.0.0.1 40000 443\\r\\n")
            context = ssl.create_default_context(cafile=sys.argv[1])
            t = context.wrap_socket(s, server_hostname="localhost")
            t.sendall(b"GET /index.html HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n")
            data = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    break
                data += chunk
            print(data.decode("latin-1").split("\\r\\n")[0])
            """
        let result = try run("python3", ["-c", script, cert])
        #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines) == "HTTP/1.1 200 OK", "\(result.error)")
        // curl's own PROXY v1 over TLS.
        #expect(try curl(["--haproxy-protocol", "--cacert", cert, "--resolve", "localhost:\(port):127.0.0.1", "-o", "/dev/null",
                          "-w", "%{http_code}", "https://localhost:\(port)/index.html"]) == "200")
        let lines = accessLines(server, count: 2)
        #expect(lines.first?.hasPrefix("203.0.113.77 - - [") == true)
    }
}

@Suite(.serialized) struct ForwardedIntegrationTests {
    @Test func xForwardedForFromATrustedPeerNamesTheClient() throws {
        let server = try TestServer().start()  // proxy.trusted defaults to loopback
        defer { server.stop() }
        #expect(try status(server.url + "/", ["-H", "X-Forwarded-For: 6.6.6.6, 203.0.113.9"]) == 200)
        #expect(try status(server.url + "/", ["-H", "Forwarded: for=198.51.100.1"]) == 200)  // not the configured header
        let lines = accessLines(server, count: 2)
        #expect(lines.first?.hasPrefix("203.0.113.9 - - [") == true)
        #expect(lines.last?.hasPrefix("127.0.0.1 - - [") == true)

        let untrusting = try TestServer(flags: ["--trusted-proxy", "192.0.2.0/24"]).start()
        defer { untrusting.stop() }
        #expect(try status(untrusting.url + "/", ["-H", "X-Forwarded-For: 203.0.113.9"]) == 200)
        #expect(accessLines(untrusting, count: 1).first?.hasPrefix("127.0.0.1 - - [") == true)

        let rfc = try TestServer(config: "proxy: {forwarded_header: forwarded}\n").start()
        defer { rfc.stop() }
        #expect(try status(rfc.url + "/", ["-H", "Forwarded: for=\"[2001:db8::5]:1234\";proto=http"]) == 200)
        #expect(accessLines(rfc, count: 1).first?.hasPrefix("2001:db8::5 - - [") == true)
    }
}

@Suite(.serialized) struct JSONAccessLogTests {
    /// One JSON object per line that any parser reads back, with the client's address and port (the
    /// PROXY header's), and hostile bytes escaped.
    @Test func jsonLinesNameTheClientAndPort() throws {
        let server = try TestServer(config: "access_log_format: json\n", flags: ["--listen", "127.0.0.1:0", "--proxy-protocol"]).start()
        defer { server.stop() }
        let header = Array("PROXY TCP4 203.0.113.9 127.0.0.1 51234 80\r\n".utf8)
        var request = Array("GET /index.html?q=%22 HTTP/1.1\r\nHost: a\r\nUser-Agent: agent \"x\" \\ ".utf8)
        request += [0xC3, 0xA9, 0x09] + Array("end\r\nReferer: http://r.example/\r\nConnection: close\r\n\r\n".utf8)
        #expect(statusCodes(String(decoding: try exchange(port: server.port, header + request), as: UTF8.self)) == [200])
        let missing = Array("PROXY TCP6 2001:db8::1 ::1 4711 80\r\nGET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8)
        #expect(statusCodes(String(decoding: try exchange(port: server.port, missing), as: UTF8.self)) == [404])
        let lines = accessLines(server, count: 2)
        #expect(lines.count == 2)
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(first["client"] as? String == "203.0.113.9" && first["client_port"] as? Int == 51234)
        #expect(first["request"] as? String == "GET /index.html?q=%22 HTTP/1.1")
        #expect(first["status"] as? Int == 200 && first["bytes"] as? Int == 47)
        #expect(first["referer"] as? String == "http://r.example/")
        #expect(first["user_agent"] as? String == "agent \"x\" \\ \u{00C3}\u{00A9}\tend")
        let time = try #require(first["time"] as? String)
        #expect(time.count == 20 && time.hasSuffix("Z") && ISO8601DateFormatter().date(from: time) != nil)
        let second = try #require(try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any])
        #expect(second["client"] as? String == "2001:db8::1" && second["client_port"] as? Int == 4711 && second["status"] as? Int == 404)
        #expect(second["referer"] as? String == "" && second["user_agent"] as? String == "")
    }
}

@Suite(.serialized) struct UnixSocketTests {
    /// A `unix:/path` listener beside a TCP one: the file made with its owner and mode, requests served
    /// (plain and with a PROXY header, whose client is logged), the file removed at stop; a stale file
    /// left by a crash is replaced; an upgrade hands the socket over.
    @Test func unixListenersServeAndCleanUp() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("web.sock").path
        let proxied = directory.appendingPathComponent("proxied.sock").path
        // A stale socket file, as a crash leaves one.
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (index, byte) in path.utf8.enumerated() { raw[index] = byte } }
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        close(stale)
        let server = try TestServer(config: "access_log_format: json\n", flags: ["--listen", "127.0.0.1:0", "--listen", "unix:\(path)"]).start()
        defer { server.stop() }
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK && info.st_mode & 0o777 == 0o660)
        #expect(try curl(["--unix-socket", path, "-o", "/dev/null", "-w", "%{http_code}", "http://localhost/index.html"]) == "200")
        #expect(server.log().contains("listening on http+unix://\(path)"))
        let line = try #require(accessLines(server, count: 1).first)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["client"] as? String == "unix:")
        // An upgrade hands the unix socket over like the others.
        #expect(try run(webserverBinary, ["upgrade", "--pid-file", server.pidFile.path]).status == 0)
        let new = try #require(pidInFile(server.pidFile))
        #expect(try curl(["--unix-socket", path, "-o", "/dev/null", "-w", "%{http_code}", "http://localhost/index.html"]) == "200")
        stopProcess(new)
        #expect(!FileManager.default.fileExists(atPath: path))

        // PROXY on a unix socket: its peers need no trusted network (the file's mode guards it).
        let proxiedServer = try TestServer(config: "access_log_format: json\nproxy: {trusted: [192.0.2.0/24]}\n",
                                           flags: ["--listen", "127.0.0.1:0", "--listen", "unix:\(proxied)", "--proxy-protocol"]).start()
        defer { proxiedServer.stop() }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var target = sockaddr_un()
        target.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &target.sun_path) { raw in for (index, byte) in proxied.utf8.enumerated() { raw[index] = byte } }
        let connected = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(connected == 0)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("PROXY TCP4 198.51.100.8 127.0.0.1 40001 80\r\n".utf8) + plainRequest
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        #expect(count > 0 && String(decoding: buffer[0..<max(count, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 200 OK"))
        let logged = try #require(accessLines(proxiedServer, count: 1).first)
        #expect(logged.contains("\"client\":\"198.51.100.8\",\"client_port\":40001"))
    }
}
