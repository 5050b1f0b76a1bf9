import Foundation
import Glibc
import Testing

/// Connection handling over raw sockets: keep-alive, pipelining, HTTP/1.0, limits, timeouts, the access log.
@Suite(.serialized) struct ConnectionTests {
    @Test func keepAliveReusesOneConnection() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let counts = try curl(["-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} ",
                               server.url + "/", server.url + "/style.css", server.url + "/app.mjs"])
        #expect(counts == "1 0 0 ")
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let request = "GET /style.css HTTP/1.1\r\nHost: a\r\n\r\nGET /missing HTTP/1.1\r\nHost: a\r\n\r\n"
            + "HEAD /app.mjs HTTP/1.1\r\nHost: a\r\n\r\nGET /docs/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        let reply = try exchange(port: server.port, request)
        #expect(statusCodes(reply) == [200, 404, 200, 200])
        let css = reply.range(of: "body{}")
        let docs = reply.range(of: "<p>docs</p>")
        #expect(css != nil && docs != nil && css!.lowerBound < docs!.lowerBound)
        #expect(!reply.contains("export const"))  // HEAD has no body
    }

    @Test func pipelinedRequestsBehindABlockedResponse() throws {
        // The first response (5 MiB) cannot fit in the socket buffers while the client is not reading,
        // so the worker must hold the requests behind it and answer them once it drains.
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let request = "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\nGET /style.css HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        let reply = try exchange(port: server.port, Array(request.utf8), timeout: 10)
        let text = String(decoding: reply, as: UTF8.self)
        #expect(statusCodes(text).first == 200)
        #expect(text.hasSuffix("body{}\n"))
        #expect(reply.count > 5 * 1024 * 1024)
    }

    @Test func http10ClosesUnlessAskedToKeepAlive() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let plain = try exchange(port: server.port, "GET /style.css HTTP/1.0\r\n\r\n")
        #expect(statusCodes(plain) == [200])
        #expect(plain.contains("Connection: close\r\n"))
        let kept = try exchange(port: server.port, "GET /style.css HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /style.css HTTP/1.0\r\n\r\n")
        #expect(statusCodes(kept) == [200, 200])
        #expect(kept.contains("Connection: keep-alive\r\n"))
    }

    /// A response the server closes after carries its FIN in its last segment: the client receives no
    /// more segments without data than for a keep-alive response (SYN-ACK and the ACK of its request),
    /// counted by its own TCP stack (TCP_INFO). So the server, which chose to close, closes first (and
    /// keeps the TIME_WAIT) even when the listener or manager still held the socket for a moment.
    @Test func aClosingResponseCarriesItsFin() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let keptOpen = try segmentsWithoutData(server.port, "GET /style.css HTTP/1.1\r\nHost: a\r\n\r\n", untilEnd: false)
        for request in ["GET /style.css HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "GET /style.css HTTP/1.0\r\n\r\n",
                        "GET /missing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "BAD\r\n\r\n"] {
            #expect(try segmentsWithoutData(server.port, request, untilEnd: true) == keptOpen, "\(request.prefix(24))")
        }
    }

    /// Segments without payload that the client's socket received for one request and its response
    /// (read to the end of stream, or to the end of the body), after 100 ms for stragglers: segments
    /// that should not come at all can only be shown absent by giving them the time to come.
    func segmentsWithoutData(_ port: Int, _ request: String, untilEnd: Bool) throws -> Int {
        let connection = try RawConnection(port: port)
        defer { connection.close() }
        connection.send(request)
        let received = untilEnd ? connection.readAll().0 : try connection.readResponse()
        #expect(String(decoding: received, as: UTF8.self).hasPrefix("HTTP/1."))
        usleep(100_000)
        let fd = connection.fd
        var info = [UInt8](repeating: 0, count: 232)  // struct tcp_info of linux/tcp.h
        var length = socklen_t(info.count)
        guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0, length >= 156 else {
            throw TestFailure("getsockopt(TCP_INFO): errno \(errno), \(length) bytes")
        }
        func field(_ offset: Int) -> Int { info.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) } }
        return field(140) - field(152)  // tcpi_segs_in - tcpi_data_segs_in
    }

    @Test func keepAliveLimitsAndIdleTimeout() throws {
        let server = try TestServer(config: "keepalive: {requests: 2, timeout: 300ms}\n", site: richSite).start()
        defer { server.stop() }
        let three = "GET /style.css HTTP/1.1\r\nHost: a\r\n\r\n"
        let reply = try exchange(port: server.port, three + three + three)
        #expect(statusCodes(reply) == [200, 200])  // closed after the second
        #expect(reply.components(separatedBy: "Connection: close").count == 2)
        // An idle connection is closed after the keep-alive timeout: the read ends well before 5s.
        let start = Date()
        let idle = try exchange(port: server.port, three, timeout: 5)
        #expect(statusCodes(idle) == [200])
        #expect(Date().timeIntervalSince(start) < 3)
    }

    @Test func silentConnectionsWaitInTheKernelWithDeferAccept() throws {
        // max_connections 1, and a client that connects and sends nothing: with defer_accept (the
        // default) the kernel keeps it until its first bytes, so it takes no slot and others are served.
        let deferred = try TestServer(config: "max_connections: 1\n", site: richSite).start()
        defer { deferred.stop() }
        let silent = try openConnection(deferred.port)
        defer { close(silent) }
        // Given 200 ms in which it would be accepted (and take the slot) if the kernel passed it on.
        usleep(200_000)
        #expect(try status(deferred.url + "/style.css", ["--max-time", "3"]) == 200)
        // Once it speaks it is accepted and answered like any other.
        let request = "GET /style.css HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        _ = request.withCString { send(silent, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        #expect(String(decoding: buffer[0..<max(0, recv(silent, &buffer, buffer.count, 0))], as: UTF8.self).hasPrefix("HTTP/1.1 200"))

        // With defer_accept off the silent connection is accepted at once and holds the only slot.
        let immediate = try TestServer(config: "max_connections: 1\ndefer_accept: off\n", site: richSite).start()
        defer { immediate.stop() }
        let holder = try openConnection(immediate.port)
        let worker = try #require(immediate.pids(of: "worker").first)
        #expect(waitUntil(seconds: 5) { clientSockets(of: worker) == 1 })
        #expect(try status(immediate.url + "/style.css", ["--max-time", "1"]) == 0)  // waits in the backlog
        close(holder)
        #expect(try status(immediate.url + "/style.css", ["--max-time", "5"]) == 200)
    }

    /// A client that sends part of a head and closes its side (an aborted browser, a slowloris tool)
    /// gets its connection closed at once: the request can never be finished. A complete request before
    /// it is answered first. And the worker does not spin on the end of the stream until the header
    /// deadline: four such clients held open for a second cost it almost no CPU (issue 14).
    @Test func aHalfClosedPartialHeadClosesAtOnceWithoutSpinning() throws {
        let server = try TestServer(config: "workers: {min: 1, max: 1}\n", site: richSite).start()  // timeouts.header: 30s
        defer { server.stop() }
        let start = Date()
        let (partial, closed) = try exchangeNotingClose(port: server.port, Array("GET / HTTP/1.1\r\nHost: a\r\n".utf8), timeout: 5, shutdownWrite: true)
        #expect(partial.isEmpty && closed)
        #expect(Date().timeIntervalSince(start) < 2)
        let (answered, closedAfter) = try exchangeNotingClose(
            port: server.port, Array("GET /style.css HTTP/1.1\r\nHost: a\r\n\r\nGET /style.css HT".utf8), timeout: 5, shutdownWrite: true)
        #expect(statusCodes(String(decoding: answered, as: UTF8.self)) == [200] && closedAfter)

        let worker = try #require(server.pids(of: "worker").first)
        let clients = try (0..<4).map { _ in try RawConnection(port: server.port) }
        defer { for client in clients { client.close() } }
        for client in clients {
            client.send("GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: slow")
            shutdown(client.fd, Int32(SHUT_WR))
        }
        let before = cpuSeconds(of: worker)
        usleep(1_000_000)  // the window measured
        let used = cpuSeconds(of: worker) - before
        #expect(used < 0.2, "the worker used \(used) s of CPU in one second")
        for client in clients { #expect(client.readAll().closed) }
    }

    @Test func slowHeadersGet408() throws {
        let server = try TestServer(config: "timeouts: {header: 400ms}\n", site: richSite).start()
        defer { server.stop() }
        let start = Date()
        let reply = try exchange(port: server.port, "GET / HTTP/1.1\r\nHost: a\r\n", timeout: 5)
        #expect(statusCodes(reply) == [408])
        #expect(reply.contains("Connection: close"))
        #expect(Date().timeIntervalSince(start) < 3)
    }

    @Test func eachRequestHasItsOwnHeaderDeadline() throws {
        // Two requests on one connection, each head sent in two parts 300ms apart, with a 500ms header
        // timeout: together they take longer than 500ms, but neither head does.
        let server = try TestServer(config: "timeouts: {header: 500ms}\n", site: richSite).start()
        defer { server.stop() }
        let parts = ["GET /style.css HTTP/1.1\r\nHost: a\r\n", "\r\nGET /style.css HTTP/1.1\r\nHost: a\r\n", "Connection: close\r\n\r\n"]
        let (received, _) = try exchangeInParts(port: server.port, parts.map { Array($0.utf8) }, pause: 300_000, timeout: 3)
        #expect(statusCodes(String(decoding: received, as: UTF8.self)) == [200, 200])
    }

    @Test func malformedRequestsGet400AndClose() throws {
        let server = try TestServer(site: richSite).start()
        defer { server.stop() }
        let cases: [(String, Int)] = [
            ("GET / HTTP/1.1\r\n\r\n", 400),  // no Host
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: a\n\n", 400),
            ("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
            ("GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "b", count: 17000) + "\r\n\r\n", 431),
            ("PURGE / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        ]
        for (request, code) in cases {
            // A valid request follows: it must not be answered, because the connection closes.
            let reply = try exchange(port: server.port, request + "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            #expect(statusCodes(reply) == [code], "\(request.prefix(40).debugDescription)")
            #expect(reply.contains("Connection: close"))
        }
    }

    @Test func accessLogHasOneWholeLinePerRequest() throws {
        let server = try TestServer(config: "workers: {min: 2, max: 2}\n", site: richSite).start()
        defer { server.stop() }
        #expect(waitUntil(seconds: 10) { server.pids(of: "worker").count == 2 })
        _ = try curl(["-o", "/dev/null", "-A", "test \"agent\"", "-e", "http://ref/", server.url + "/style.css"])
        let load = try LoadRun(port: server.port, clients: 8, seconds: 2, mode: "new", path: "/style.css", expectedLength: 7)
        let result = try load.finish()
        #expect(result.failed == 0)
        #expect(waitUntil(seconds: 5) {
            ((try? String(contentsOf: server.accessLog, encoding: .utf8)) ?? "").split(separator: "\n").count == result.ok + 1
        })
        let lines = try String(contentsOf: server.accessLog, encoding: .utf8).split(separator: "\n")
        let pattern = try Regex(#"^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /style\.css HTTP/1\.1" 200 7 "[^"]*" "[^"]*"$"#)
        #expect(lines.allSatisfy { $0.wholeMatch(of: pattern) != nil })
        #expect(lines.first?.hasSuffix("\"http://ref/\" \"test \\x22agent\\x22\"") == true)
    }
}

@Suite(.serialized) struct AccessLogFailureTests {
    /// The access log's file stops taking bytes (here a file-size limit on the server's processes,
    /// set with prlimit, does what a full disk does: a write stops part-way, then fails): the file keeps
    /// only whole lines, the dropped ones are counted and the error log says so, and once there is room
    /// again (the file emptied, as logrotate's copytruncate does) every line is written whole (issue 14).
    @Test func aFullDiskDropsWholeLinesAndSaysSo() throws {
        let server = try TestServer(
            config: "workers: {min: 1, max: 1}\nsupervisor: {heartbeat_interval: 100ms}\n", launcher: ["prlimit", "--fsize=16000"]
        ).start()
        defer { server.stop() }
        func requests(_ query: String, _ count: Int) throws {
            let one = "GET /index.html?\(query) HTTP/1.1\r\nHost: a\r\nUser-Agent: test\r\n\r\n"
            _ = try exchange(port: server.port, String(repeating: one, count: count) + "GET /index.html HTTP/1.1\r\nHost: a\r\nUser-Agent: test\r\nConnection: close\r\n\r\n")
        }
        // About 210 lines fit in 16,000 bytes: 40 rounds of 9 requests overflow it part-way through a line.
        for round in 0..<40 { try requests("round=\(round)", 8) }
        #expect(waitUntil(seconds: 5) { server.metrics()?["webserver_access_log_dropped_lines_total"] ?? 0 >= 100 })
        #expect(server.log().contains("access log:") && server.log().contains("lines dropped"))
        let text = try String(contentsOf: server.accessLog, encoding: .utf8)
        #expect(text.hasSuffix("\n"))
        #expect(text.split(separator: "\n").allSatisfy { $0.hasSuffix("\"test\"") })
        // Room again: the next lines are whole.
        truncate(server.accessLog.path, 0)
        for index in 0..<5 { try requests("after=\(index)", 1) }
        #expect(waitUntil(seconds: 5) {
            let lines = ((try? String(contentsOf: server.accessLog, encoding: .utf8)) ?? "").split(separator: "\n")
            return (0..<5).allSatisfy { index in lines.contains { $0.contains("?after=\(index) ") } }
        })
        let after = try String(contentsOf: server.accessLog, encoding: .utf8)
        #expect(after.hasSuffix("\n") && after.split(separator: "\n").allSatisfy { $0.hasSuffix("\"test\"") })
    }
}
