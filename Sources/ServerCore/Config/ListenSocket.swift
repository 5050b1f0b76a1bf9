/// One listening socket, as `listen` or `tls.listen` names it: a TCP address or a Unix-domain path,
/// whether connections on it start with a PROXY protocol header, and for a Unix socket the owner and
/// mode its file gets.
public struct ListenSocket: Codable, Sendable, Equatable {
    /// As written: `127.0.0.1:8080`, `[::1]:8080`, `*:80`, or `unix:/absolute/path`.
    public var address: String
    /// Connections start with a PROXY v1 or v2 header from a trusted network (before any TLS).
    public var proxyProtocol = false
    /// A Unix socket file's owner and group (nil: the server's user), and mode.
    public var owner: String? = nil
    public var group: String? = nil
    public var mode = 0o660
    /// Where it was written (`listen, config/webserver.yaml:19` or `--listen`), for a bind error to
    /// name. Not part of what the socket is (equality ignores it).
    public var origin: String? = nil

    public init(address: String, proxyProtocol: Bool = false, origin: String? = nil) {
        self.address = address
        self.proxyProtocol = proxyProtocol
        self.origin = origin
    }

    public static func == (a: ListenSocket, b: ListenSocket) -> Bool {
        a.address == b.address && a.proxyProtocol == b.proxyProtocol && a.owner == b.owner && a.group == b.group && a.mode == b.mode
    }

    /// The socket file's path for a `unix:/path` entry; nil for a TCP address.
    public var unixPath: String? { address.hasPrefix("unix:/") ? String(address.dropFirst(5)) : nil }
}
