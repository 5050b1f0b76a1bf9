import Glibc

/// One site in a worker: its settings, its files (made on the first request that needs them, so a
/// thousand configured sites cost a worker nothing until they are asked for) and the state of its
/// rules: the password files and the rate limiter's buckets.
final class Site {
    let settings: SiteSettings
    /// The site whose certificates this one presents over TLS: itself when it has its own, else 0.
    let certificateSite: Int32
    /// `access` rules with their networks parsed.
    let access: [(prefix: [UInt8], allow: Networks, deny: Networks)]
    /// `auth` rules with their password files.
    let auth: [(prefix: [UInt8], challenge: [UInt8], users: PasswordFile)]
    let redirects: [(from: [UInt8], prefix: Bool, to: [UInt8], status: HTTPStatus, keepQuery: Bool)]
    /// `redirect_http` and `canonical_host`, read on every request (kept apart from `settings`, whose
    /// arrays a read of it would retain and release).
    let redirectHTTP: Bool
    let canonicalHost: CanonicalHost?
    /// Whether any rule before the files applies at all: one test for a site without rules.
    let hasRules: Bool
    var rateLimiter: RateLimiter?
    private var filesFailedAt: Int64 = -1_000_000
    private var warnedAt: Int64 = -1_000_000

    init(_ settings: SiteSettings, index: Int) {
        self.settings = settings
        certificateSite = index > 0 && settings.hasOwnCertificate ? Int32(index) : 0
        access = settings.rules.access.map {
            (Array($0.prefix.utf8), Networks($0.allow) ?? Networks(), Networks($0.deny) ?? Networks())
        }
        auth = settings.rules.auth.map {
            (Array($0.prefix.utf8), Array("WWW-Authenticate: Basic realm=\"\($0.realm)\", charset=\"UTF-8\"\r\n".utf8), PasswordFile(path: $0.users))
        }
        redirects = settings.rules.redirects.map { rule in
            let prefix = rule.isPrefix
            let status: HTTPStatus = HTTPStatus(rawValue: UInt16(rule.status)) ?? .movedPermanently
            return (Array((prefix ? String(rule.from.dropLast()) : rule.from).utf8), prefix, Array(rule.to.utf8), status, rule.keepQuery)
        }
        rateLimiter = settings.rules.rateLimit.map { RateLimiter($0) }
        redirectHTTP = settings.rules.redirectHTTP
        canonicalHost = settings.rules.canonicalHost
        hasRules = !access.isEmpty || !auth.isEmpty || !redirects.isEmpty || rateLimiter != nil || redirectHTTP || canonicalHost != nil
    }

    /// The site's files once made (on the first request that needs them; the default site's at start).
    var madeFiles: StaticFiles?

    /// Makes the site's files with `make` (nil when it has no root, or the root cannot be opened: tried
    /// again after a second, with a warning each minute at most).
    func makeFiles(_ make: (SiteSettings) throws -> StaticFiles, now: Int64) -> StaticFiles? {
        if let madeFiles { return madeFiles }
        guard !settings.root.isEmpty, now - filesFailedAt >= 1000 else { return nil }
        do {
            madeFiles = try make(settings)
        } catch {
            if now - warnedAt >= 60_000 {
                warnedAt = now
                log.warning("site \(settings.names.first ?? "default"): cannot open its root \(settings.root): \(error)")
            }
            filesFailedAt = now
        }
        return madeFiles
    }

    /// Looks at the root and the password files again (from the tick).
    func refresh(now: Int64) {
        madeFiles?.refreshRoot(now: now)
        for rule in auth { rule.users.refresh(now: now, validity: Int64(settings.fileCache.validMilliseconds)) }
    }

    // MARK: The request's path

    /// The path part of the target: up to `?`.
    static func pathEnd(_ bytes: UnsafeRawBufferPointer, _ target: ByteSpan) -> Int {
        var index = target.start
        while index < target.end && bytes[index] != UInt8(ascii: "?") { index += 1 }
        return index
    }
}
