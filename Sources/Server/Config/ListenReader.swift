import Yams

extension DocumentReader {
    /// `listen` or `tls.listen`: one address or a list, each `ADDRESS:PORT`, `unix:/PATH`, or a mapping
    /// `{address: ..., proxy_protocol: true, owner: USER[:GROUP], mode: "0660"}` (owner and mode for Unix
    /// sockets only). A relative socket path is relative to the configuration file.
    func listenSockets(_ node: Node, key: String, required: Bool) -> [ListenSocket] {
        let items: [Node]
        switch node {
        case .sequence(let sequence): items = Array(sequence)
        case .scalar, .mapping: items = [node]
        default: items = []
        }
        var seen = Set<SocketAddress>()
        var sockets: [ListenSocket] = []
        for item in items {
            var socket = ListenSocket(address: "", origin: "\(key), \(file):\(item.mark?.line ?? 0)")
            var text = item.scalar?.string
            var unixOptions = false
            if case .mapping = item, let entry = Section(item, path: key, reader: self) {
                text = entry.string("address")?.0
                if text == nil { issue(item, key: key, "each entry needs address: ADDRESS:PORT or unix:/PATH") }
                socket.proxyProtocol = entry.boolean("proxy_protocol") ?? false
                if let (owner, _) = entry.string("owner") {
                    let parts = owner.split(separator: ":", maxSplits: 1).map(String.init)
                    socket.owner = parts.first
                    socket.group = parts.count > 1 ? parts[1] : nil
                    unixOptions = true
                }
                if let (mode, node) = entry.string("mode") {
                    if let value = Int(mode, radix: 8), (0...0o777).contains(value) { socket.mode = value } else {
                        issue(node, key: "\(key).mode", "'\(mode)' is not an octal mode such as 0660")
                    }
                    unixOptions = true
                }
                entry.finish()
                guard text != nil else { continue }
            }
            guard let value = text else {
                issue(item, key: key, "each entry must be ADDRESS:PORT, unix:/PATH or {address: ..., proxy_protocol: true}")
                continue
            }
            if value.hasPrefix("unix:") {
                let path = String(value.dropFirst(5))
                guard !path.isEmpty, path.utf8.count < 100 else {
                    issue(item, key: key, "'\(value)' needs a socket path shorter than 100 bytes")
                    continue
                }
                socket.address = "unix:" + ConfigLoader.absolute(path, base: base)
                if sockets.contains(where: { $0.address == socket.address }) { issue(item, key: key, "'\(socket.address)' is listed twice") }
                sockets.append(socket)
                continue
            }
            if unixOptions { issue(item, key: key, "owner and mode apply to unix:/PATH sockets only") }
            guard let address = SocketAddress(parsing: value) else {
                issue(item, key: key, "'\(value)' is not ADDRESS:PORT (IPv4, [IPv6], or *:PORT; port 0-65535)")
                continue
            }
            if !seen.insert(address).inserted { issue(item, key: key, "'\(value)' is listed twice") }
            socket.address = value
            sockets.append(socket)
        }
        if items.isEmpty && required { issue(node, key: key, "needs at least one address") }
        return sockets
    }
}
