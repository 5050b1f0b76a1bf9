import CCurl
import Foundation
import Glibc

/// The checks that need the final values, file and flags together: the root exists, TLS sockets have a
/// certificate that loads and matches its key (made first when `tls.dev_certificate` asks), the user
/// the server becomes can read them, keys that need another key have it, sockets do not collide.
struct ConfigValidation {
    /// The file's name for issues without a line of their own ("command line" when there is no file).
    let file: String
    let overrides: ConfigOverrides
    /// Where `root` came from (the file's line, or `--root`): an issue about it points there.
    let rootPlace: ConfigIssue?

    private func issue(_ key: String, _ message: String, file: String? = nil) -> ConfigIssue {
        ConfigIssue(file: file ?? self.file, line: 0, column: 0, key: key, message: message)
    }

    /// Checks `config` (making the root absolute and real, and the development certificate when asked
    /// and nothing else is wrong); returns the issues.
    func check(_ config: inout ServerConfig, makeDevCertificate: Bool, previousIssues: Int) -> [ConfigIssue] {
        var issues = config.root.isEmpty && !config.sites.isEmpty ? [] : checkRoot(&config)
        issues += checkSites(config)
        issues += checkTLS(&config, makeDevCertificate: makeDevCertificate && previousIssues == 0 && issues.isEmpty)
        if config.tls.redirectHTTP && config.tls.listen.isEmpty {
            issues.append(issue("tls.redirect_http", "needs a TLS socket to redirect to (tls.listen)"))
        }
        if let site = config.sites.first(where: { $0.acme != nil }), ccurl_available() == 0 {
            issues.append(issue("acme", "site \(site.names.first ?? "") (\(site.place)) gets its certificate by ACME, which needs libcurl: apt install libcurl4"))
        }
        if config.tls.listen.isEmpty, let site = config.sites.first(where: { $0.acme != nil }) {
            issues.append(issue("acme", "site \(site.names.first ?? "") (\(site.place)) gets its certificate by ACME, but there is no TLS socket to serve it on (tls.listen)"))
        } else if config.listen.isEmpty, let site = config.sites.first(where: { $0.acme?.challenges == [.http01] }) {
            issues.append(issue("acme.challenges", "site \(site.names.first ?? "") (\(site.place)) offers only http-01, which the CA checks on port 80, but there is no plain socket (listen); add one, or tls-alpn-01"))
        }
        if config.tls.listen.isEmpty, let site = config.sites.first(where: { $0.rules.redirectHTTP }) {
            issues.append(issue("redirect_http", "site \(site.names.first ?? "") (\(site.place)) redirects to HTTPS, but there is no TLS socket (tls.listen)"))
        }
        if config.allListen.isEmpty && previousIssues == 0 {
            issues.append(issue("listen", "there is nothing to listen on: listen and tls.listen are both empty"))
        }
        let plain = Set(config.listen.compactMap { SocketAddress(parsing: $0.address) })
        for socket in config.tls.listen {
            if let address = SocketAddress(parsing: socket.address), address.port != 0, plain.contains(address) {
                issues.append(issue("tls.listen", "'\(socket.address)' is also a plain listen address"))
            }
        }
        return issues
    }

    /// `root` is set, exists and is a directory. It stays the path as written (made absolute): a symlink
    /// in it is followed by the workers each time they look, so a deploy can swap it.
    private func checkRoot(_ config: inout ServerConfig) -> [ConfigIssue] {
        guard !config.root.isEmpty else {
            return [issue("root", "no root directory: set 'root' in the config or pass --root DIR")]
        }
        func problem(_ message: String) -> [ConfigIssue] {
            var issue = rootPlace ?? self.issue("root", "")
            issue.message = message
            return [issue]
        }
        var info = stat()
        if stat(config.root, &info) != 0 { return problem("'\(config.root)' does not exist") }
        if info.st_mode & S_IFMT != S_IFDIR { return problem("'\(config.root)' is not a directory") }
        // The workers open files beneath it once the server has become its user.
        if let user = config.effectiveUser, user != "root", !ConfigValidation.reachable(config.root, byUser: user) {
            let whom = config.user == nil ? "'\(user)' (no 'user' is set, and a server started as root runs as \(user))" : "'\(user)'"
            return problem("'\(config.root)' cannot be read by \(whom), whom the server runs as once the sockets are bound: give that user read access to it and every directory above it, or set 'user'")
        }
        return []
    }

    /// Every site's root exists, is a directory and can be read by `user` (a site may have none: it
    /// then serves no files, only its rules' answers).
    private func checkSites(_ config: ServerConfig) -> [ConfigIssue] {
        var issues: [ConfigIssue] = []
        if let user = config.effectiveUser, user != "root" {
            let files = Set(config.allSites.flatMap { $0.rules.auth.map(\.users) })
            for path in files.sorted() where !ConfigValidation.readable(path, byUser: user) {
                issues.append(issue("auth.users", "\(path) is not readable by '\(user)', whom the server runs as once the sockets are bound"))
            }
        }
        for (position, site) in config.sites.enumerated() where !site.root.isEmpty && site.root != config.root {
            let key = "sites[\(position)].root"
            var info = stat()
            if stat(site.root, &info) != 0 {
                issues.append(issue(key, "'\(site.root)' does not exist (site at \(site.place))"))
            } else if info.st_mode & S_IFMT != S_IFDIR {
                issues.append(issue(key, "'\(site.root)' is not a directory (site at \(site.place))"))
            } else if let user = config.effectiveUser, user != "root", !ConfigValidation.reachable(site.root, byUser: user) {
                issues.append(issue(key, "'\(site.root)' cannot be read by '\(user)', whom the server runs as once the sockets are bound (site at \(site.place))"))
            }
        }
        return issues
    }

    /// A certificate and key that load and match, for every TLS socket; readable by `user`.
    private func checkTLS(_ config: inout ServerConfig, makeDevCertificate: Bool) -> [ConfigIssue] {
        guard !config.tls.listen.isEmpty else { return [] }
        ConfigValidation.takeAcmeCertificates(&config)
        var issues: [ConfigIssue] = []
        let first = config.tls.defaultSite.certificates.first
        let bothMissing = first.map { access($0.certificate, F_OK) != 0 && access($0.key, F_OK) != 0 } ?? false
        if config.tls.devCertificate && bothMissing, let first {
            // Only when both are missing: one without the other is an operator's file, never overwritten.
            guard makeDevCertificate else { return [] }  // `check`: the certificate is made on the first `serve`
            do {
                let made = try DevCertificates.make(certificate: first.certificate, key: first.key)
                config.tls.madeDevCertificate = made.caCertificate
                // Made as root for a server that will run as another user: that user reads them.
                if let user = config.effectiveUser { DevCertificates.give([first.certificate, first.key], to: user) }
            } catch {
                return [issue("tls.dev_certificate", error.description)]
            }
        }
        let certificates = config.tls.defaultSite.certificates
        if certificates.contains(where: { $0.certificate.isEmpty || $0.key.isEmpty }) {
            return [issue("tls", "TLS sockets need a certificate and a key: set tls.cert and tls.key, or pass --cert and --key")]
        }
        if certificates.isEmpty {
            // Without a default certificate, only the names of sites with their own are served over TLS.
            let bare = config.sites.filter { !$0.hasOwnCertificate && $0.acme == nil }
            if config.sites.isEmpty || bare.count == config.sites.count {
                return [issue("tls", "TLS sockets need a certificate and a key: set tls.cert and tls.key, or pass --cert and --key")]
            }
            if let site = bare.first {
                return [issue("tls", "site \(site.names.first ?? "") (\(site.place)) has no cert and key of its own, and there is no tls.cert for it to use")]
            }
        }
        // Each pair's files first, at the line that named them; then what only loading them all says.
        let fromFlags = overrides.cert != nil || overrides.key != nil
        let pairs = config.tls.allSites.flatMap(\.certificates) + config.sites.flatMap { $0.certificates?.certificates ?? [] }
        for (index, pair) in pairs.enumerated() {
            do {
                try TLSContext.check(certificate: pair.certificate, key: pair.key)
            } catch {
                if index == 0 && fromFlags {
                    issues.append(issue(overrides.cert != nil ? "--cert" : "--key", error.description, file: "command line"))
                } else {
                    issues.append(ConfigIssue(file: file, line: pair.line, column: 0, key: pair.origin, message: error.description))
                }
            }
        }
        guard issues.isEmpty else { return issues }
        do {
            _ = try TLSSites(config: config)
        } catch {
            let first = config.tls.defaultSite.certificates.first
            if fromFlags {
                issues.append(issue(overrides.cert != nil ? "--cert" : "tls.cert", error.description, file: "command line"))
            } else {
                issues.append(ConfigIssue(file: file, line: first?.line ?? 0, column: 0, key: "tls.cert", message: error.description))
            }
        }
        // Workers read the certificates after the server has become its user: a key only root can read
        // would fail there, after a start that looked fine, so say it now.
        if let user = config.effectiveUser, user != "root" {
            let whom = config.user == nil ? "'\(user)' (no 'user' is set, and a server started as root runs as \(user))" : "'\(user)'"
            for path in config.certificateFiles where !ConfigValidation.readable(path, byUser: user) {
                issues.append(issue("tls", "\(path) is not readable by \(whom), whom the server runs as once the sockets are bound; give that user read access (for example: chgrp ssl-cert FILE; chmod 640 FILE, with the user in ssl-cert), or set 'user'"))
            }
        }
        return issues
    }

    /// Sites whose certificate comes by ACME present it once the ACME process has written it: the files
    /// are taken when they load and match (else the site waits for the next one, and says so in the log
    /// of the ACME process, which orders it).
    static func takeAcmeCertificates(_ config: inout ServerConfig) {
        for certificate in config.acmeCertificates {
            let pair = certificate.pair
            let site = TLSSite(certificates: [pair])
            guard (try? TLSContext.check(certificate: pair.certificate, key: pair.key)) != nil,
                  (try? TLSContext(site: site, settings: config.tls)) != nil else { continue }
            config.sites[certificate.site - 1].certificates = site
            config.sites[certificate.site - 1].acmeIssued = true
        }
    }

    /// Whether `user` may read the file at `path` by its mode bits (owner, then its groups, then others).
    static func readable(_ path: String, byUser user: String) -> Bool {
        guard let account = Account(user) else { return false }
        var info = stat()
        guard stat(path, &info) == 0 else { return true }  // a missing file is reported elsewhere
        return account.may(read: true, search: false, info)
    }

    /// Whether `user` may list and enter the directory `path` and search every directory above it.
    static func reachable(_ path: String, byUser user: String) -> Bool {
        guard let account = Account(user) else { return false }
        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            var info = stat()
            guard stat(prefix, &info) == 0 else { return true }  // a missing directory is reported elsewhere
            guard account.may(read: prefix == path, search: true, info) else { return false }
        }
        return true
    }

    /// A user's ids and groups, for permission checks by mode bits.
    struct Account {
        let uid: uid_t
        let groups: [gid_t]

        init?(_ name: String) {
            guard let entry = getpwnam(name) else { return nil }
            uid = entry.pointee.pw_uid
            var groups = [gid_t](repeating: 0, count: 256)
            var count = Int32(groups.count)
            _ = getgrouplist(entry.pointee.pw_name, entry.pointee.pw_gid, &groups, &count)
            self.groups = Array(groups.prefix(Int(max(0, count)))) + [entry.pointee.pw_gid]
        }

        /// Whether the owner, group or other bits that apply to this user allow reading and searching.
        func may(read: Bool, search: Bool, _ info: stat) -> Bool {
            if uid == 0 { return true }
            let (r, x): (mode_t, mode_t) =
                info.st_uid == uid ? (S_IRUSR, S_IXUSR) : groups.contains(info.st_gid) ? (S_IRGRP, S_IXGRP) : (S_IROTH, S_IXOTH)
            return (!read || info.st_mode & r != 0) && (!search || info.st_mode & x != 0)
        }
    }
}
