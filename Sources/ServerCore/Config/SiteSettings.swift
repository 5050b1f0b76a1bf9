/// One site: the names it answers to, the files it serves and the rules in front of them. The
/// top-level keys of the file make the default site (`ServerConfig.defaultSite`), and every entry of
/// `sites:` starts from those values, so a key a site does not set is the server-wide one.
public struct SiteSettings: Codable, Sendable, Equatable {
    /// Exact names and `*.example.com` wildcards, lowercase, without a port or a trailing dot. Empty
    /// for the default site, which answers the names no other site claims.
    public var names: [String] = []
    /// Where the site was written (`file:line`), for what `check` says and for issues found later.
    public var place: String = ""
    /// Absolute path of the directory served; empty: the site serves no files (every path is 404 unless
    /// a rule answers first).
    public var root: String = ""
    public var index: String = "index.html"
    public var autoindex = false
    /// Status → URL path beneath the site's root.
    public var errorPages: [String: String] = [:]
    public var headers: [ServerConfig.HeaderRule] = []
    public var gzip = ServerConfig.GzipSettings()
    public var fileCache = ServerConfig.FileCacheSettings()
    /// The site's own certificates (chosen by SNI); nil: the default site's (`tls.cert`).
    public var certificates: TLSSite? = nil
    /// Where its certificate comes from when ACME gets it (nil: `cert`, or the default site's).
    public var acme: AcmeSettings? = nil
    /// Set by the loader when the ACME process has written the site's certificate: `certificates` then
    /// names those files.
    public var acmeIssued = false
    public var rules = SiteRules()

    public init() {}

    /// Whether this site presents a certificate of its own over TLS.
    public var hasOwnCertificate: Bool { certificates.map { !$0.certificates.isEmpty } ?? false }
}

/// The rules in front of a site's files, in the order a request meets them: rate limit (429), access
/// by address (403), HTTP to HTTPS, the canonical host, redirects, basic authentication (401), then
/// the files with `try_files`.
public struct SiteRules: Codable, Sendable, Equatable {
    /// `tls.redirect_http` for this site.
    public var redirectHTTP = false
    /// `canonical_host`: www.example.com to example.com (apex) or the other way (www).
    public var canonicalHost: CanonicalHost? = nil
    public var redirects: [Redirect] = []
    public var tryFiles: TryFiles? = nil
    public var auth: [AuthRule] = []
    public var access: [AccessRule] = []
    public var rateLimit: RateLimit? = nil

    public init() {}
}

/// `canonical_host`: which of a name and its `www.` form the site is served under; the other redirects.
public enum CanonicalHost: String, ConfigChoice {
    /// www.example.com → example.com.
    case apex
    /// example.com → www.example.com.
    case www
}

/// `redirects[]`: `from` an exact path (`/old`) or a prefix (`/blog/*`), `to` a path or an absolute URL
/// (for a prefix, a `*` in `to` stands for the rest of the path), with its status; the query is kept
/// (appended) unless `query: drop`.
public struct Redirect: Codable, Sendable, Equatable {
    public var from: String
    public var to: String
    public var status: Int = 301
    public var keepQuery = true

    public init(from: String, to: String, status: Int = 301, keepQuery: Bool = true) {
        self.from = from
        self.to = to
        self.status = status
        self.keepQuery = keepQuery
    }

    /// Whether `from` is a prefix (ends in `*`).
    public var isPrefix: Bool { from.hasSuffix("*") }
}

/// `try_files`: candidates tried in order for a path that names no file (`$uri`, `$uri.html`, `$uri/`
/// and fixed paths such as `/index.html`), never for paths under an `except` prefix.
public struct TryFiles: Codable, Sendable, Equatable {
    public var candidates: [String]
    public var except: [String] = []

    public init(candidates: [String], except: [String] = []) {
        self.candidates = candidates
        self.except = except
    }
}

/// `auth[]`: basic authentication (RFC 7617) for paths under `prefix`, against an htpasswd file of
/// bcrypt, SHA-512-crypt or yescrypt hashes.
public struct AuthRule: Codable, Sendable, Equatable {
    public var prefix: String = "/"
    public var realm: String
    /// Absolute path of the htpasswd file (`user:hash` lines).
    public var users: String

    public init(prefix: String = "/", realm: String, users: String) {
        self.prefix = prefix
        self.realm = realm
        self.users = users
    }
}

/// `access[]`: who may reach paths under `prefix`, by the client's address (after PROXY and trusted
/// proxies): refused (403) when it is in `deny`, or when `allow` is given and it is not in it.
public struct AccessRule: Codable, Sendable, Equatable {
    public var prefix: String = "/"
    public var allow: [String] = []
    public var deny: [String] = []

    public init(prefix: String = "/", allow: [String] = [], deny: [String] = []) {
        self.prefix = prefix
        self.allow = allow
        self.deny = deny
    }
}

/// `rate_limit`: requests per second per client address, in each worker, with a burst (429 beyond).
public struct RateLimit: Codable, Sendable, Equatable {
    public var perSecond: Int
    public var burst: Int

    public init(perSecond: Int, burst: Int) {
        self.perSecond = perSecond
        self.burst = burst
    }
}

/// `unmatched_host`: what a request for a name no site claims gets when there is no default site
/// (no top-level `root`).
public enum UnmatchedHost: String, ConfigChoice {
    /// 404 Not Found.
    case notFound = "404"
    /// 421 Misdirected Request.
    case misdirected = "421"
    /// The connection is closed without an answer (nginx's 444); over TLS without a top-level
    /// certificate, the handshake of a name no site claims is refused already.
    case close
}

extension ServerConfig {
    /// The default site, made of the top-level keys: what a name no site claims reaches when `root`
    /// is set, and what every `sites` entry starts from.
    public var defaultSite: SiteSettings {
        var site = SiteSettings()
        site.root = root
        site.index = index
        site.autoindex = autoindex
        site.errorPages = errorPages
        site.headers = headers
        site.gzip = gzip
        site.fileCache = fileCache
        site.certificates = tls.defaultSite
        site.rules = rules
        site.rules.redirectHTTP = tls.redirectHTTP
        site.place = "top level"
        return site
    }

    /// Every site a worker routes to: the default one first (index 0), then `sites` in order.
    public var allSites: [SiteSettings] { [defaultSite] + sites }

    /// Whether a name no site claims is served by the default site (the top-level `root` is set, or
    /// there are no `sites` at all).
    public var hasDefaultSite: Bool { !root.isEmpty || sites.isEmpty }
}
