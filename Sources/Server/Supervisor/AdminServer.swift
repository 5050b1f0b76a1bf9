import CSystemShims
import Glibc

/// The admin listener's HTTP: GET (or HEAD) of a path, one response, then the connection closes.
/// Served by the supervisor from its own event loop, so it is bounded in every way: at most 16
/// connections at once, 4 KiB of request, 5 seconds each, and it never blocks.
///
/// Owns its listening socket and each client socket.
final class AdminServer {
    struct Reply {
        var status: Int
        var contentType: String
        var body: String
    }

    let fd: Int32
    private var clients: [Int32: (bytes: [UInt8], deadline: Int64)] = [:]
    static let maximumClients = 16
    static let maximumRequest = 4096
    static let timeoutMilliseconds: Int64 = 5000

    init(address: SocketAddress) throws(SystemError) {
        fd = try Socket.listen(on: address, backlog: 64)
    }

    /// A listening socket handed over by an upgrading supervisor.
    init(adopting socket: Int32) {
        fd = socket
        Socket.adopt(fd)
    }

    func owns(_ descriptor: Int32) -> Bool { clients[descriptor] != nil }

    /// Takes every waiting connection (those beyond the limit are closed at once).
    func acceptAll(poller: Poller, now: Int64) {
        var peer = sockaddr_storage()
        while true {
            guard case .processed(let client)? = try? Socket.accept(fd, peer: &peer) else { return }
            if clients.count >= AdminServer.maximumClients || (try? poller.add(client, events: Poller.readable)) == nil {
                closeDescriptor(client)
                continue
            }
            clients[client] = ([], now + AdminServer.timeoutMilliseconds)
        }
    }

    /// Reads from a client; once its request head is whole, answers with `respond(method, path)`.
    func readable(_ client: Int32, poller: Poller, respond: (String, String) -> Reply) {
        guard var entry = clients[client] else { return }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let count = read(client, &buffer, buffer.count)
        if count < 0 && (errno == EAGAIN || errno == EINTR) { return }
        if count <= 0 { return drop(client, poller: poller) }
        entry.bytes += buffer[0..<count]
        clients[client] = entry
        guard let end = entry.bytes.firstRange(of: [13, 10, 13, 10]) else {
            if entry.bytes.count > AdminServer.maximumRequest { answer(client, Reply(status: 431, contentType: "text/plain", body: "request too large\n"), head: false, poller: poller) }
            return
        }
        let line = String(decoding: entry.bytes[..<end.lowerBound].prefix { $0 != 13 }, as: UTF8.self)
        let words = line.split(separator: " ")
        guard words.count == 3, words[2].hasPrefix("HTTP/1.") else {
            return answer(client, Reply(status: 400, contentType: "text/plain", body: "bad request\n"), head: false, poller: poller)
        }
        let method = String(words[0])
        guard method == "GET" || method == "HEAD" else {
            return answer(client, Reply(status: 405, contentType: "text/plain", body: "GET or HEAD\n"), head: false, poller: poller)
        }
        let target = String(words[1])
        let path = String(target.prefix { $0 != "?" })
        answer(client, respond(method, path), head: method == "HEAD", poller: poller)
    }

    /// Closes clients past their deadline.
    func expire(now: Int64, poller: Poller) {
        for (client, entry) in clients where entry.deadline <= now { drop(client, poller: poller) }
    }

    func answer(_ client: Int32, _ reply: Reply, head: Bool, poller: Poller) {
        let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
                      503: "Service Unavailable"][reply.status] ?? "Status"
        let body = Array(reply.body.utf8)
        var response = Array("HTTP/1.1 \(reply.status) \(reason)\r\nContent-Type: \(reply.contentType)\r\nContent-Length: \(body.count)\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n".utf8)
        if !head { response += body }
        // A socket buffer takes a metrics page whole; a client that cannot take it loses the rest.
        var offset = 0
        while offset < response.count {
            let sent = response[offset...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, cs_MSG_NOSIGNAL) }
            if sent < 0 && errno == EINTR { continue }
            if sent <= 0 { break }
            offset += sent
        }
        drop(client, poller: poller)
    }

    func drop(_ client: Int32, poller: Poller) {
        poller.remove(client)
        closeDescriptor(client)
        clients[client] = nil
    }

    func close(poller: Poller) {
        for client in clients.keys { drop(client, poller: poller) }
        poller.remove(fd)
        closeDescriptor(fd)
    }
}
