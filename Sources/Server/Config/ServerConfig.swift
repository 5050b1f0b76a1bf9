import Glibc

/// The whole effective configuration: the file's values with the command line's flags applied.
///
/// The supervisor validates it once and passes it to every child as JSON in a memfd, so children never
/// re-read the file and always run with exactly what the supervisor checked.
public struct ServerConfig: Codable, Sendable, Equatable {
    /// Addresses to listen on, as written (`127.0.0.1:8080`, `[::1]:8080`, `*:80`).
    public var listen: [String] = ["127.0.0.1:8080"]
    /// Owner and mode of each Unix-domain socket in `listen` or `tls.listen` (`unix:/path` entries).
    public var unixSockets: [UnixSocket] = []

    /// A `unix:/path` listener's file: made by the supervisor (a stale socket file is replaced), given
    /// this owner, group and mode, and removed when the server stops.
    public struct UnixSocket: Codable, Sendable, Equatable {
        public var address: String
        public var owner: String? = nil
        public var group: String? = nil
        public var mode: Int = 0o660
    }

    /// The path of a `unix:/path` listen entry, or nil for a TCP address.
    public static func unixPath(_ address: String) -> String? {
        address.hasPrefix("unix:/") ? String(address.dropFirst(5)) : nil
    }

    /// For each `listen` address, whether connections on it start with a PROXY protocol header.
    public var listenProxyProtocol: [Bool] = [false]
    /// Absolute path of the directory served.
    public var root: String = ""
    /// File served for a request to a directory.
    public var index: String = "index.html"
    /// Symlinks beneath the root: follow, owner-match or never.
    public var symlinks: String = "follow"
    /// `%2F` in a path: decode (a separator, as nginx does) or reject (404, as Apache does by default).
    public var encodedSlash: String = "decode"
    /// HTML listings of directories without an index file (off: 404).
    public var autoindex = false
    /// Pages served, with their status, instead of the built-in error bodies: status → URL path.
    public var errorPages: [String: String] = [:]
    /// Extra response headers for files whose path matches, in order.
    public var headers: [HeaderRule] = []

    /// `match` is an exact path (`/robots.txt`), a prefix (`/assets/*`) or a suffix (`*.html`); the
    /// `set` headers go on every 200, 206 and 304 for a matching file. A later rule's header replaces an
    /// earlier one of the same name.
    public struct HeaderRule: Codable, Sendable, Equatable {
        public var match: String
        public var set: [[String]]

        public init(match: String, set: [[String]]) {
            self.match = match
            self.set = set
        }

        public func matches(_ path: String) -> Bool {
            if match.hasPrefix("*") { return path.hasSuffix(match.dropFirst()) }
            if match.hasSuffix("*") { return path.hasPrefix(match.dropLast()) }
            return path == match
        }
    }
    /// User to switch to after binding, when started as root.
    public var user: String? = nil
    /// Where the supervisor writes its pid, or nil for the default location.
    public var pidFile: String? = nil
    /// Access log path, or nil when access logging is off.
    public var accessLog: String? = nil
    /// Access log line format: combined (Apache/nginx's) or json (one object per line, with the client's port).
    public var accessLogFormat: String = "combined"
    /// Error log path, or nil for standard error.
    public var errorLog: String? = nil
    /// Lowest level written to the error log: trace, debug, info, notice, warning, error, critical.
    public var logLevel: String = "info"
    /// Most connections open at once across the server; the listener stops accepting at this number.
    public var maxConnections: Int = 10_000
    /// Listen backlog for each socket.
    public var backlog: Int = 511
    /// TCP_DEFER_ACCEPT on each socket, in milliseconds (rounded up to seconds); 0 is off. A connection
    /// is accepted only once its first bytes arrive, so a client that connects and says nothing wakes no
    /// process, and the worker finds the request already waiting.
    public var deferAcceptMilliseconds: Int = 10_000
    /// TCP_NOTSENT_LOWAT on each TCP socket, in bytes; 0 is off (the kernel's default, unlimited). A
    /// connection's socket reports writable, and takes more, only while less than this is waiting unsent,
    /// so a large response is fed in steps from the worker's own CPU instead of queued whole in the
    /// kernel and pushed out from whichever CPU handles the client's acknowledgements. Accepted sockets
    /// inherit it from the listening socket.
    public var notSentLowat: Int = 131_072
    public var workers = Workers()
    public var keepalive = Keepalive()
    public var timeouts = Timeouts()
    public var limits = Limits()
    public var supervisor = Supervision()
    public var fileCache = FileCacheSettings()
    public var gzip = GzipSettings()
    public var proxy = ProxySettings()
    /// The admin listener (/livez, /readyz, /metrics), or nil for none.
    public var adminListen: String? = nil

    /// Load balancers and reverse proxies in front: whom to believe about the client's address.
    public struct ProxySettings: Codable, Sendable, Equatable {
        /// Networks trusted to send PROXY headers and X-Forwarded-For/Forwarded. A PROXY socket closes
        /// connections from anywhere else; forwarded headers from anywhere else are ignored.
        public var trusted: [String] = ["127.0.0.0/8", "::1"]
        /// Time a connection on a PROXY socket has to send its whole header, in milliseconds.
        public var headerTimeoutMilliseconds = 5000
        /// The header whose hops give the client's address behind a trusted proxy:
        /// x-forwarded-for, forwarded (RFC 7239) or none.
        public var forwardedHeader = "x-forwarded-for"
    }

    /// Whether connections on listener `id` (numbered as in `allListen`) start with a PROXY header.
    public func proxyProtocol(listener id: Int) -> Bool {
        id < listen.count ? listenProxyProtocol.indices.contains(id) && listenProxyProtocol[id]
            : tls.listenProxyProtocol.indices.contains(id - listen.count) && tls.listenProxyProtocol[id - listen.count]
    }
    public var tls = TLSSettings()

    /// Compression of responses with gzip (zlib), negotiated by Accept-Encoding.
    public struct GzipSettings: Codable, Sendable, Equatable {
        /// Compress compressible files on the fly (each version once, then from the cache).
        public var enabled = true
        /// zlib level, 1 (fastest) to 9 (smallest).
        public var level = 6
        /// Files shorter than this are sent as they are: the gzip header and trailer alone are 18 bytes.
        public var minLength = 256
        /// Media types compressed (`text/*` matches every text type; parameters are ignored).
        public var types: [String] = [
            "text/*", "application/javascript", "application/json", "application/*+json", "application/xml",
            "application/*+xml", "application/yaml", "application/wasm", "image/svg+xml", "image/bmp",
            "image/vnd.microsoft.icon", "font/ttf", "font/otf", "application/x-tar",
        ]
        /// Media types never compressed, even when `types` matches: formats that are compressed already.
        public var never: [String] = [
            "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "font/woff", "font/woff2",
            "application/zip", "application/gzip", "application/zstd", "application/x-bzip2", "application/x-xz",
            "application/x-7z-compressed", "application/x-rar-compressed", "application/pdf", "video/*", "audio/*",
        ]
        /// Serve `FILE.gz` beside `FILE` to clients that accept gzip, when it is not older than `FILE`.
        public var precompressed = true
        /// Memory each worker keeps for compressed bodies (least recently used dropped first); 0 keeps none.
        public var cacheBytes = 33_554_432
        /// Files up to this size are compressed whole and cached; larger ones stream through zlib with
        /// chunked transfer coding (HTTP/1.0 clients get them uncompressed).
        public var cacheFileMax = 1_048_576

        /// Whether `contentType` (with or without parameters) is to be compressed.
        public func compresses(_ contentType: String) -> Bool {
            let type = String(contentType.prefix { $0 != ";" && $0 != " " }).lowercased()
            func matches(_ pattern: String) -> Bool {
                if pattern == "*/*" { return true }
                let pattern = pattern.lowercased()
                if let star = pattern.firstIndex(of: "*") {
                    // "text/*", or "application/*+json" (a structured-syntax suffix).
                    let prefix = pattern[..<star]
                    let suffix = pattern[pattern.index(after: star)...]
                    return type.count >= prefix.count + suffix.count && type.hasPrefix(prefix) && type.hasSuffix(suffix)
                }
                return type == pattern
            }
            return types.contains(where: matches) && !never.contains(where: matches)
        }
    }

    /// HTTPS: the sockets that speak TLS, and the certificate they present.
    public struct TLSSettings: Codable, Sendable, Equatable {
        /// Addresses to listen on with TLS, written like `listen`.
        public var listen: [String] = []
        /// For each of them, whether connections start with a PROXY protocol header (before the TLS
        /// handshake).
        public var listenProxyProtocol: [Bool] = []
        /// Certificate chain (PEM: the leaf, then intermediates) and its unencrypted key: the default
        /// site's first pair. `cert` and `key` may also be lists (an ECDSA and an RSA certificate side by
        /// side), all in `defaultPairs`.
        public var cert: String? = nil
        public var key: String? = nil
        public var moreDefaultPairs: [[String]] = []
        /// More sites on the same sockets, each its [certificate, key] pairs, chosen by SNI.
        public var sites: [[[String]]] = []
        /// OCSP responses to staple (DER files the operator keeps fresh): the default site's, and each
        /// site's ("" for none).
        public var ocsp: String? = nil
        public var siteOCSP: [String] = []

        /// Every [certificate, key] pair of the default site.
        public var defaultPairs: [[String]] {
            guard let cert, let key else { return [] }
            return [[cert, key]] + moreDefaultPairs
        }
        /// Lowest protocol version: "1.2" or "1.3".
        public var minVersion: String = "1.2"
        /// TLS 1.2 cipher list (OpenSSL syntax): forward-secret AEAD suites only, as Mozilla's
        /// "intermediate" profile without the DHE ones (no CBC, so no LUCKY13 class of attacks).
        public var ciphers: String = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
        /// TLS 1.3 cipher suites.
        public var ciphersuites: String = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
        /// Key exchange groups, in order of preference.
        public var groups: String = "X25519:P-256"
        /// Time a client has to finish the TLS handshake, in milliseconds.
        public var handshakeMilliseconds: Int = 10_000
        /// Answer requests on the plain sockets with a redirect to the first TLS socket (301 for GET and
        /// HEAD, 308 for the rest), except ACME HTTP-01 challenges beneath /.well-known/acme-challenge/.
        public var redirectHTTP = false
        /// The port of the first TLS socket as bound (port 0 resolved), set by the supervisor for redirects.
        public var redirectPort: Int = 0
        /// The Strict-Transport-Security value sent on TLS responses (nil: none); never for localhost,
        /// 127.0.0.1 or ::1, which a browser would otherwise pin for every local project.
        public var hsts: String? = nil
        /// Session resumption (tickets, and the worker's session cache); off makes every connection a full
        /// handshake, as the benchmark's row (f) needs.
        public var sessionResumption = true
        /// How often the supervisor makes a new session ticket key (the previous one still decrypts).
        public var ticketKeyRotationMilliseconds: Int = 43_200_000
        /// When `cert` and `key` are missing, make them with the local development CA (`webserver cert dev`).
        public var devCertificate = false
        /// Set by the loader when it just made the development certificate: the CA to tell the user about.
        public var madeDevCertificate: String? = nil
    }

    /// The worker pool's bounds and scaling thresholds.
    public struct Workers: Codable, Sendable, Equatable {
        public var min: Int = 1
        public var max: Int = ServerConfig.processorCount
        /// Connections per worker at which the pool grows.
        public var connectionsPerWorker: Int = 512
        /// How long the pool must be under-used before a worker is retired, in milliseconds.
        public var idleMilliseconds: Int = 30_000
        /// Connections after which a worker is replaced by a fresh one; 0 never.
        public var recycleAfter: Int = 0
    }

    public struct Keepalive: Codable, Sendable, Equatable {
        /// How long an idle keep-alive connection stays open, in milliseconds.
        public var timeoutMilliseconds: Int = 75_000
        /// Requests served on one connection before it is closed.
        public var requests: Int = 1000
    }

    public struct Timeouts: Codable, Sendable, Equatable {
        /// Time for a client to send a whole request head once it has started, in milliseconds (408 after).
        public var headerMilliseconds: Int = 30_000
        /// Time between two reads of a request body being skipped, in milliseconds (then the connection closes).
        public var bodyMilliseconds: Int = 60_000
        /// Time a response may wait for a client that stopped reading, in milliseconds.
        public var sendMilliseconds: Int = 60_000
        /// Time a graceful shutdown or reload gives connections in flight, in milliseconds.
        public var shutdownMilliseconds: Int = 30_000
        /// After SIGTERM, how long the listeners keep accepting (with /readyz already 503) before the
        /// drain begins: the time a load balancer or Kubernetes takes to stop sending new connections.
        public var shutdownDelayMilliseconds: Int = 0
    }

    public struct Limits: Codable, Sendable, Equatable {
        /// Longest request line accepted (414 beyond).
        public var requestLine: Int = 8192
        /// Largest request head, request line included (431 beyond).
        public var headerBytes: Int = 16_384
        /// Most header fields in a request (431 beyond).
        public var headerCount: Int = 100
        /// Longest single header field line (431 beyond).
        public var headerField: Int = 8192
        /// Largest request body (413 beyond); 0 is no limit.
        public var bodyBytes: Int = 1_048_576
        /// Most ranges in one Range header; a request asking for more gets the whole file.
        public var ranges: Int = 16
    }

    /// Each worker's open-file cache.
    public struct FileCacheSettings: Codable, Sendable, Equatable {
        /// Files kept open per worker; 0 turns the cache off.
        public var entries: Int = 1024
        /// How long a cached file is used before it is checked against the disk again, in milliseconds.
        public var validMilliseconds: Int = 1000
        /// Files up to this size are kept in memory and sent with their head in one writev.
        public var inlineMax: Int = 16_384
    }

    public struct Supervision: Codable, Sendable, Equatable {
        public var heartbeatIntervalMilliseconds: Int = 1000
        public var heartbeatTimeoutMilliseconds: Int = 5000
        /// Time between SIGTERM and SIGKILL for a child that stopped answering or must stop.
        public var killGraceMilliseconds: Int = 3000
        /// First restart delay; doubles with each crash in a row, with jitter.
        public var restartDelayMilliseconds: Int = 100
        public var restartDelayMaxMilliseconds: Int = 30_000
        /// Restarts allowed within `restartPeriodMilliseconds` before respawning stops.
        public var restartIntensity: Int = 5
        public var restartPeriodMilliseconds: Int = 60_000
    }

    public init() {}

    /// Online processors, the default upper bound of the worker pool.
    public static var processorCount: Int { Swift.max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Every socket in the order the supervisor binds them and the listener numbers them: the plain ones,
    /// then the TLS ones. A connection's listener number says which kind it came from.
    public var allListen: [String] { listen + tls.listen }
}
