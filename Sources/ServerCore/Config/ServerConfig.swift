import Glibc
public import Logging

/// The whole effective configuration: the file's values with the command line's flags applied.
///
/// The supervisor validates it once and passes it to every child as JSON in a memfd, so children never
/// re-read the file and always run with exactly what the supervisor checked.
public struct ServerConfig: Codable, Sendable, Equatable {
    /// The plain sockets (HTTP), in order.
    public var listen: [ListenSocket] = [ListenSocket(address: "127.0.0.1:8080", origin: "listen, by default")]
    /// Absolute path of the directory served.
    public var root: String = ""
    /// File served for a request to a directory.
    public var index: String = "index.html"
    /// Symlinks beneath the root.
    public var symlinks = SymlinkPolicy.follow
    /// `%2F` in a path: a separator (as nginx takes it), or 404 (as Apache answers by default).
    public var encodedSlash = EncodedSlash.decode
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
    /// User to switch to after binding, when started as root (nil: `ServerConfig.defaultUser`).
    public var user: String? = nil
    /// Who serves requests when the server is started as root and `user` is not set: never root.
    public static let defaultUser = "nobody"

    /// The user the server runs as once its sockets are bound: `user`, or `defaultUser` when started as
    /// root; nil when it was not started as root (it stays who it is).
    public var effectiveUser: String? {
        guard getuid() == 0 || geteuid() == 0 else { return nil }
        return user ?? ServerConfig.defaultUser
    }
    /// Where the supervisor writes its pid, or nil for the default location.
    public var pidFile: String? = nil
    /// Access log path, or nil when access logging is off.
    public var accessLog: String? = nil
    /// Access log line format.
    public var accessLogFormat = AccessLogFormat.combined
    /// Error log path, or nil for standard error.
    public var errorLog: String? = nil
    /// Lowest level written to the error log.
    public var logLevel = Logger.Level.info
    /// Most connections open at once across the server; the listener stops accepting at this number.
    public var maxConnections: Int = 10_000
    /// Listener processes (`listeners`), each accepting on its own copy of every TCP socket
    /// (SO_REUSEPORT); 0 is `auto`: one per eight processors (`listenerCount`).
    public var listeners: Int = 0
    /// The listener processes this configuration runs: `listeners`, or for `auto` one per eight
    /// processors (a single listener passes about 240,000 new connections a second, what eight to ten
    /// cores of workers serve; see docs/ARCHITECTURE.md, "Scaling past one core").
    public var listenerCount: Int { listeners > 0 ? listeners : max(1, min(ServerConfig.maxListeners, ServerConfig.processorCount / 8)) }
    /// Most listener processes (a connections entry carries the admitting listener's number in a byte).
    public static let maxListeners = 64
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
    public var http2 = HTTP2Settings()
    public var proxy = ProxySettings()
    /// The admin listener (/livez, /readyz, /metrics), or nil for none.
    public var adminListen: String? = nil
    /// The server-wide rules (`try_files`, `redirects`, `canonical_host`, `auth`, `access`,
    /// `rate_limit`): the default site's, and where every site's start.
    public var rules = SiteRules()
    /// `sites`: more sites, each answering its own names with its own root, certificates and rules.
    public var sites: [SiteSettings] = []
    /// `acme` at the top level: what every site's starts from (a site without `cert` gets its
    /// certificate by ACME when this or its own `acme` is set).
    public var acme: AcmeSettings? = nil
    /// What a name no site claims gets when there is no default site (no top-level `root`).
    public var unmatchedHost = UnmatchedHost.notFound

    /// Load balancers and reverse proxies in front: whom to believe about the client's address.
    public struct ProxySettings: Codable, Sendable, Equatable {
        /// Networks trusted to send PROXY headers and X-Forwarded-For/Forwarded. A PROXY socket closes
        /// connections from anywhere else; forwarded headers from anywhere else are ignored.
        public var trusted: [String] = ["127.0.0.0/8", "::1"]
        /// Time a connection on a PROXY socket has to send its whole header, in milliseconds.
        public var headerTimeoutMilliseconds = 5000
        /// The header whose hops give the client's address behind a trusted proxy.
        public var forwardedHeader = ForwardedHeader.xForwardedFor

        package init(trusted: [String] = ["127.0.0.0/8", "::1"], headerTimeoutMilliseconds: Int = 5000,
                     forwardedHeader: ForwardedHeader = .xForwardedFor) {
            self.trusted = trusted
            self.headerTimeoutMilliseconds = headerTimeoutMilliseconds
            self.forwardedHeader = forwardedHeader
        }
    }

    public var tls = TLSSettings()

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
        /// How long the new server an upgrade starts has to say it is ready; past it, it is stopped and
        /// the old one goes on serving.
        public var upgradeMilliseconds: Int = 30_000
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
        /// Most connections open at once from one client address, counted by the listener; 0 is no limit.
        public var connectionsPerIP: Int = 0
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
    public var allListen: [ListenSocket] { listen + tls.listen }

    /// Every certificate, key and OCSP file the TLS sockets read, the sites' included (what the
    /// supervisor watches and a reload checks).
    public var certificateFiles: [String] {
        tls.files + sites.flatMap { site in
            (site.certificates?.certificates ?? []).flatMap { [$0.certificate, $0.key] } + (site.certificates?.ocsp.map { [$0] } ?? [])
        }
    }

    /// What the supervisor watches: the certificate files, and where the ACME process will write the
    /// certificates it has not written yet (a new one is taken up as a replaced one is).
    public var watchedCertificateFiles: [String] {
        var files = certificateFiles
        for pair in acmeCertificates.map(\.pair) where !files.contains(pair.certificate) { files += [pair.certificate, pair.key] }
        return files
    }
}
