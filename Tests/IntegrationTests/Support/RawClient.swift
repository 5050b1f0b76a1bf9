import Foundation
import Glibc

// The raw client: TCP connections to the server on loopback, requests as bytes, responses as they came.

/// The one raw client every test's socket-level request goes through: a TCP connection to 127.0.0.1
/// (never anything else), bytes sent as given, bytes read back as they came. Reads time out (10 s unless
/// said otherwise) so a test fails rather than hangs. Owns the socket until `close()`; `fd` is lent for
/// socket options and `recv` where a test needs them.
struct RawConnection {
    let fd: Int32

    /// Connects to 127.0.0.1:`port` from `source` (another loopback address, such as 127.0.0.2, for
    /// a test that needs a second client address).
    init(port: Int, source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
        setTimeout(10)
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                Glibc.close(fd)
                throw TestFailure("bind \(source): errno \(errno)")
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw TestFailure("connect: errno \(errno)")
        }
    }

    /// Reads give up after `seconds` without a byte.
    func setTimeout(_ seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends all of `bytes` (as far as the peer takes them).
    func send(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { break }
            sent += count
        }
    }

    func send(_ text: String) { send(Array(text.utf8)) }

    /// Reads until the server closes (true) or the read times out with the connection still open (false).
    func readAll() -> ([UInt8], closed: Bool) {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { return (received, true) }
            if count < 0 { return (received, false) }
            received += buffer[0..<count]
        }
    }

    /// Reads one whole response with a Content-Length (a keep-alive answer); throws if the connection
    /// ends first.
    func readResponse() throws -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let text = String(decoding: received, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n"),
               let line = text[..<end.lowerBound].split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }),
               let length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)),
               received.count >= text.utf8.distance(from: text.startIndex, to: end.upperBound) + length {
                return received
            }
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { throw TestFailure("no whole response (\(received.count) bytes)") }
            received += buffer[0..<count]
        }
    }

    func close() { Glibc.close(fd) }
}

/// An open connection's socket; the caller closes it. The server sees it only once it sends something
/// (defer_accept); use `openKeepAliveConnection` for a connection the server holds.
func openConnection(_ port: Int) throws -> Int32 { try RawConnection(port: port).fd }

/// An idle keep-alive connection's socket: one request made and its whole response read, the
/// connection left open for the caller to close.
func openKeepAliveConnection(_ port: Int, path: String = "/") throws -> Int32 {
    let connection = try RawConnection(port: port)
    connection.send("GET \(path) HTTP/1.1\r\nHost: test\r\n\r\n")
    do {
        _ = try connection.readResponse()
    } catch {
        connection.close()
        throw error
    }
    return connection.fd
}

/// A raw TCP exchange: sends `request`, reads until the server closes or `timeout` passes.
func exchange(port: Int, _ request: [UInt8], timeout: Double = 5, shutdownWrite: Bool = false) throws -> [UInt8] {
    try exchangeNotingClose(port: port, request, timeout: timeout, shutdownWrite: shutdownWrite).0
}

/// `exchange`, also saying whether the server closed the connection (rather than the read timing out).
func exchangeNotingClose(port: Int, _ request: [UInt8], timeout: Double, shutdownWrite: Bool = false) throws -> ([UInt8], Bool) {
    try exchangeInParts(port: port, [request], timeout: timeout, shutdownWrite: shutdownWrite)
}

func exchange(port: Int, _ request: String, timeout: Double = 5) throws -> String {
    String(decoding: try exchange(port: port, Array(request.utf8), timeout: timeout), as: UTF8.self)
}

/// Sends `parts` one after another with `pause` between them (a slow client, deliberately paced), then
/// reads until the server closes or `timeout` passes; says whether it closed.
func exchangeInParts(
    port: Int, _ parts: [[UInt8]], pause: useconds_t = 100_000, timeout: Double = 5, shutdownWrite: Bool = false
) throws -> ([UInt8], Bool) {
    let connection = try RawConnection(port: port)
    defer { connection.close() }
    connection.setTimeout(timeout)
    for (index, part) in parts.enumerated() {
        if index > 0 { usleep(pause) }
        connection.send(part)
    }
    if shutdownWrite { shutdown(connection.fd, Int32(SHUT_WR)) }
    let (received, closed) = connection.readAll()
    return (received, closed)
}

/// Status codes of every response in a raw byte stream, in order.
func statusCodes(_ text: String) -> [Int] {
    let pattern = try! Regex(#"HTTP/1\.1 (\d{3}) "#)
    return text.matches(of: pattern).compactMap { ($0.output[1].substring).flatMap { Int($0) } }
}

/// What a raw exchange gave: the statuses in order, and whether the server closed the connection
/// (rather than leaving it open past the read timeout).
struct Outcome: Equatable, CustomStringConvertible {
    let statuses: [Int]
    let closed: Bool
    var description: String { "\(statuses) \(closed ? "closed" : "open")" }
}

/// Sends `request` on a new connection and reads until the server closes it or `timeout` passes.
func outcome(port: Int, _ request: [UInt8], timeout: Double = 1.5) throws -> (Outcome, String) {
    let (received, closed) = try exchangeNotingClose(port: port, request, timeout: timeout)
    let text = String(decoding: received, as: UTF8.self)
    return (Outcome(statuses: statusCodes(text), closed: closed), text)
}

/// One raw request (Connection: close) with the given extra header lines; the response's status, headers
/// (lowercase names) and body bytes.
func rawFetch(_ port: Int, _ path: String, method: String = "GET", _ lines: [String] = []) throws -> (Int, [String: String], [UInt8]) {
    let request = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + lines.map { $0 + "\r\n" }.joined() + "\r\n"
    let bytes = try exchange(port: port, Array(request.utf8))
    guard let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { throw TestFailure("no head in \(bytes.count) bytes") }
    let response = Response(String(decoding: bytes[..<end.upperBound], as: UTF8.self))
    return (response.status, response.headers, Array(bytes[end.upperBound...]))
}

/// A loopback socket bound to `port` (0: one the kernel picks), listening when asked; the caller
/// closes it. Binding a port a test used shows nothing holds it any more.
func bindLoopback(port wanted: Int = 0, listening: Bool = false) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(wanted).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var on: Int32 = 1  // a port left in TIME_WAIT is free; one a socket listens on is not
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard bound, !listening || listen(fd, 1) == 0, let port = port(of: fd) else {
        close(fd)
        throw TestFailure("cannot bind a loopback socket: errno \(errno)")
    }
    return (fd, Int(port))
}

/// A port nothing listens on now (bound and released; a race only with other tests picking ports).
func freePort() throws -> Int {
    let (fd, port) = try bindLoopback(listening: false)
    close(fd)
    return port
}

/// A free port below the kernel's ephemeral range (32768 and up), for a test that must name its ports
/// before anything binds them (Pebble validates on the server's ports): the ports other tests get by
/// binding port 0, and outgoing connections, never come from here, so only another such pick can race.
func fixedPort() throws -> Int {
    for _ in 0..<200 {
        let candidate = Int.random(in: 20_000..<32_000)
        if let (fd, port) = try? bindLoopback(port: candidate, listening: false) {
            close(fd)
            return port
        }
    }
    throw TestFailure("no free port between 20000 and 32000")
}

/// A socket listening on a free loopback port, to make a port busy.
func openListener() throws -> (fd: Int32, port: Int) { try bindLoopback(listening: true) }

/// An IPv4 socket's own port, or its peer's; nil for any other socket or when it has none.
func port(of fd: Int32, peer: Bool = false) -> UInt16? {
    var address = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let result = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length) }
    }
    guard result == 0, Int32(address.sin_family) == AF_INET else { return nil }
    return UInt16(bigEndian: address.sin_port)
}

/// A raw TLS exchange (Fixtures/tls_exchange.py, Python's ssl) started as a second process: sends
/// `request` (escapes such as \r\n written out as backslash sequences), reads until the server closes
/// or `timeout` passes; `finish()` waits for it and returns what came back.
final class TLSExchange: @unchecked Sendable {
    let process = Process()
    let output = Pipe()

    init(port: Int, _ request: String, timeout: Double) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures/tls_exchange.py").path,
            "\(port)", request, "\(timeout)",
        ]
        process.standardOutput = output
        try process.run()
    }

    func finish() throws -> String {
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
