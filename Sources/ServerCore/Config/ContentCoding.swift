/// The content codings the server sends (RFC 9110 section 8.4.1): gzip (RFC 1952), br (RFC 7932) and
/// zstd (RFC 8878, with at most an 8 MB window as RFC 9659 asks of HTTP).
public enum ContentCoding: Int, CaseIterable, Codable, Sendable {
    case br = 0
    case zstd = 1
    case gzip = 2

    /// The token in Accept-Encoding and Content-Encoding.
    public var token: StaticString {
        switch self {
        case .br: return "br"
        case .zstd: return "zstd"
        case .gzip: return "gzip"
        }
    }

    public init?(name: String) {
        switch name.lowercased() {
        case "br", "brotli": self = .br
        case "zstd": self = .zstd
        case "gzip": self = .gzip
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .br: return "br"
        case .zstd: return "zstd"
        case .gzip: return "gzip"
        }
    }
}
