import Glibc
import Yams

/// Readers for `sites` and for the rules a site (or the whole server) puts in front of its files.
extension DocumentReader {
    /// The rule keys of `section` (the top level, or one site), over `current`.
    func rules(_ section: Section, _ current: SiteRules) -> SiteRules {
        var rules = current
        if let node = section.peek("canonical_host"), node.scalar?.string == "off" {
            _ = section.take("canonical_host")
            rules.canonicalHost = nil
        } else if let value = section.choice("canonical_host", CanonicalHost.self) {
            rules.canonicalHost = value
        }
        if let node = section.take("redirects") { rules.redirects = redirects(node, key: section.full("redirects")) }
        if let node = section.take("try_files") { rules.tryFiles = tryFiles(node, key: section.full("try_files")) }
        if let node = section.take("auth") { rules.auth = authRules(node, key: section.full("auth")) }
        if let node = section.take("access") { rules.access = accessRules(node, key: section.full("access")) }
        if let node = section.take("rate_limit") { rules.rateLimit = rateLimit(node, key: section.full("rate_limit")) }
        return rules
    }

    /// `sites`: a list of sites, each starting from the top-level values in `config`.
    func sites(_ node: Node, _ config: ServerConfig) -> [SiteSettings] {
        guard case .sequence(let items) = node else {
            issue(node, key: "sites", "expected a list of sites, each {names: [NAME, ...], root: DIR, ...}")
            return []
        }
        var sites: [SiteSettings] = []
        var claimed: [String: (Int, String)] = [:]
        for (position, item) in items.enumerated() {
            let key = "sites[\(position)]"
            guard let section = Section(item, path: key, reader: self) else { continue }
            var site = config.defaultSite
            site.certificates = nil
            site.acme = config.acme
            site.place = "\(file):\(item.mark?.line ?? 0)"
            if let node = section.take("names") {
                site.names = siteNames(node, key: "\(key).names")
                for name in site.names {
                    if let (other, place) = claimed[name] {
                        issue(node, key: "\(key).names", "'\(name)' is claimed by sites[\(other)] too (\(place)); a name belongs to one site")
                    } else {
                        claimed[name] = (position, site.place)
                    }
                }
            } else {
                issue(item, key: "\(key).names", "a site needs the names it answers to, such as [example.com, www.example.com]")
            }
            if let (value, node) = section.string("root") {
                site.root = ConfigLoader.absolute(value, base: base)
                siteRootMarks[sites.count] = (node.mark?.line ?? 0, node.mark?.column ?? 0)
            }
            if let (value, node) = section.string("index") {
                if value.isEmpty || value.contains("/") || value.hasPrefix(".") {
                    issue(node, key: "\(key).index", "must be a plain file name, got '\(value)'")
                } else { site.index = value }
            }
            if let value = section.boolean("autoindex") { site.autoindex = value }
            if let pages = section.section("error_pages") { site.errorPages = errorPages(pages) }
            if let node = section.take("headers") { site.headers = headerRules(node, key: "\(key).headers") }
            if let gzip = section.section("gzip") { site.gzip = self.gzip(gzip, site.gzip, serverWide: false) }
            if let compression = section.section("compression") { site.gzip = self.compression(compression, site.gzip) }
            if let cache = section.section("file_cache") { site.fileCache = fileCache(cache, site.fileCache) }
            let pairs = certificatePairs(section, key: key)
            var certificates = TLSSite(certificates: pairs)
            if let (value, node) = section.string("ocsp") {
                if pairs.isEmpty { issue(node, key: "\(key).ocsp", "goes with the site's own cert and key") }
                certificates.ocsp = path(value, node, key: "\(key).ocsp")
            }
            if !pairs.isEmpty { site.certificates = certificates }
            if let value = section.boolean("redirect_http") { site.rules.redirectHTTP = value }
            let acmeNode = section.peek("acme")
            if let acme = acme(section, site.acme) { site.acme = acme }
            if !pairs.isEmpty {
                // A certificate of its own wins over the top-level acme; one written in the site is a mistake.
                if let acmeNode, site.acme != nil { issue(acmeNode, key: "\(key).acme", "the site has its own cert and key; give it one or the other") }
                site.acme = nil
            } else if site.acme != nil {
                checkAcmeSite(site, node: section.peek("names") ?? item, key: key)
            }
            site.rules = rules(section, site.rules)
            section.finish()
            sites.append(site)
        }
        return sites
    }

    /// A site's names: `example.com`, `*.example.com`, an IPv4 address or a bracketed IPv6 one;
    /// lowercased, without a trailing dot.
    func siteNames(_ node: Node, key: String) -> [String] {
        let items: [Node]
        if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
        var names: [String] = []
        for item in items {
            var text = (item.scalar?.string ?? "").lowercased()
            if text.hasSuffix(".") { text.removeLast() }
            guard let name = SiteNames.valid(text) else {
                issue(item, key: key, "'\(item.scalar?.string ?? "")' is not a host name such as example.com or *.example.com (no port, no scheme)")
                continue
            }
            if !names.contains(name) { names.append(name) }
        }
        if items.isEmpty { issue(node, key: key, "needs at least one name") }
        return names
    }

    /// `redirects`: a list of `{from: PATH, to: PATH-OR-URL, status: 301|302|303|307|308, query: keep|drop}`.
    func redirects(_ node: Node, key: String) -> [Redirect] {
        guard case .sequence(let items) = node else {
            issue(node, key: key, "expected a list of {from: /old, to: /new, status: 301}")
            return []
        }
        var redirects: [Redirect] = []
        for (position, item) in items.enumerated() {
            let entryKey = "\(key)[\(position)]"
            guard let section = Section(item, path: entryKey, reader: self) else { continue }
            let from = section.string("from")
            let to = section.string("to")
            var status = 301
            if let value = section.integer("status", in: 300...399) {
                if [301, 302, 303, 307, 308].contains(value) { status = value } else {
                    issue(item, key: "\(entryKey).status", "\(value) is not one of 301, 302, 303, 307 or 308")
                }
            }
            var keepQuery = true
            if let (value, node) = section.string("query") {
                switch value.lowercased() {
                case "keep": keepQuery = true
                case "drop": keepQuery = false
                default: issue(node, key: "\(entryKey).query", "'\(value)' is not one of keep or drop")
                }
            }
            section.finish()
            guard let (fromText, fromNode) = from else {
                issue(item, key: "\(entryKey).from", "needs the path redirected: /exact or /prefix/*")
                continue
            }
            guard let (toText, toNode) = to else {
                issue(item, key: "\(entryKey).to", "needs where it goes: a path such as /new or a URL such as https://example.com/")
                continue
            }
            let stars = fromText.filter { $0 == "*" }.count
            guard fromText.hasPrefix("/"), stars == 0 || (stars == 1 && fromText.hasSuffix("*")), !fromText.contains("?"),
                  fromText.utf8.allSatisfy({ $0 > 32 && $0 < 127 })
            else {
                issue(fromNode, key: "\(entryKey).from", "'\(fromText)' is not /exact/path or /prefix/* (no query, no spaces)")
                continue
            }
            let toStars = toText.filter { $0 == "*" }.count
            guard toText.hasPrefix("/") || toText.hasPrefix("https://") || toText.hasPrefix("http://"),
                  toText.utf8.allSatisfy({ $0 > 32 && $0 < 127 }), toText.utf8.count <= 2048,
                  toStars == 0 || (toStars == 1 && stars == 1)
            else {
                issue(toNode, key: "\(entryKey).to",
                      "'\(toText)' is not a path (/new) or an http(s) URL without spaces; a * in it needs a from ending in *")
                continue
            }
            redirects.append(Redirect(from: fromText, to: toText, status: status, keepQuery: keepQuery))
        }
        return redirects
    }

    /// `try_files`: a list of candidates, or `{files: [...], except: [/api/, ...]}`, or `off`.
    func tryFiles(_ node: Node, key: String) -> TryFiles? {
        if node.scalar?.string == "off" { return nil }
        var candidatesNode = node
        var except: [String] = []
        if case .mapping = node {
            guard let section = Section(node, path: key, reader: self) else { return nil }
            guard let files = section.take("files") else {
                issue(node, key: "\(key).files", "needs the candidates, such as [$uri, $uri/, /index.html]")
                section.finish()
                return nil
            }
            candidatesNode = files
            if let exceptNode = section.take("except") {
                let items: [Node]
                if case .sequence(let sequence) = exceptNode { items = Array(sequence) } else { items = [exceptNode] }
                for item in items {
                    let text = item.scalar?.string ?? ""
                    if text.hasPrefix("/") && text.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) { except.append(text) } else {
                        issue(item, key: "\(key).except", "'\(text)' is not a path prefix such as /api/")
                    }
                }
            }
            section.finish()
        }
        guard case .sequence(let items) = candidatesNode else {
            issue(candidatesNode, key: key, "expected a list of candidates such as [$uri, $uri.html, $uri/, /index.html]")
            return nil
        }
        var candidates: [String] = []
        for item in items {
            let text = item.scalar?.string ?? ""
            let suffix = text.dropFirst(4)
            let valid = text == "$uri" || text == "$uri/"
                || (text.hasPrefix("$uri.") && suffix.count > 1 && suffix.dropFirst().allSatisfy { $0.isLetter || $0.isNumber })
                || (text.hasPrefix("/") && !text.contains("?") && !text.contains("$") && text.utf8.allSatisfy { $0 > 32 && $0 < 127 })
            if valid { candidates.append(text) } else {
                issue(item, key: key, "'\(text)' is not $uri, $uri.EXT, $uri/ or a path such as /index.html")
            }
        }
        if candidates.isEmpty { return nil }
        return TryFiles(candidates: candidates, except: except)
    }

    /// `auth`: `{realm: TEXT, users: HTPASSWD, prefix: /}`, a list of them, or `off`.
    func authRules(_ node: Node, key: String) -> [AuthRule] {
        var rules: [AuthRule] = []
        for (item, section) in ruleEntries(node, key: key) {
            let entryKey = section.path
            let prefix = pathPrefix(section)
            var realm = "restricted"
            if let (value, node) = section.string("realm") {
                if value.utf8.allSatisfy({ $0 >= 32 && $0 < 127 && $0 != 34 && $0 != 92 }) && value.utf8.count <= 200 { realm = value } else {
                    issue(node, key: "\(entryKey).realm", "must be printable ASCII without quotes or backslashes, at most 200 characters")
                }
            }
            let users = section.string("users")
            section.finish()
            guard let (value, usersNode) = users else {
                issue(item, key: "\(entryKey).users", "needs an htpasswd file (user:hash lines; bcrypt, SHA-512-crypt or yescrypt)")
                continue
            }
            let path = ConfigLoader.absolute(value, base: base)
            switch PasswordFile.read(path) {
            case .failure(let problem):
                issue(usersNode, key: "\(entryKey).users", problem.description)
            case .success:
                rules.append(AuthRule(prefix: prefix, realm: realm, users: path))
            }
        }
        return rules
    }

    /// `access`: `{prefix: /, allow: [CIDR, ...], deny: [CIDR, ...]}` or a list of them; `all` is every
    /// address.
    func accessRules(_ node: Node, key: String) -> [AccessRule] {
        var rules: [AccessRule] = []
        for (item, section) in ruleEntries(node, key: key) {
            let entryKey = section.path
            var rule = AccessRule()
            rule.prefix = pathPrefix(section)
            func networks(_ name: String) -> [String] {
                guard let node = section.take(name) else { return [] }
                let entries: [Node]
                if case .sequence(let sequence) = node { entries = Array(sequence) } else { entries = [node] }
                var values: [String] = []
                for entry in entries {
                    let text = entry.scalar?.string ?? ""
                    if text == "all" { values += ["0.0.0.0/0", "::/0"] } else if Networks([text]) != nil { values.append(text) } else {
                        issue(entry, key: "\(entryKey).\(name)", "'\(text)' is not a network such as 10.0.0.0/8, 192.0.2.7, fd00::/8 or all")
                    }
                }
                return values
            }
            rule.allow = networks("allow")
            rule.deny = networks("deny")
            if rule.allow.isEmpty && rule.deny.isEmpty { issue(item, key: entryKey, "needs allow or deny (lists of networks)") }
            section.finish()
            rules.append(rule)
        }
        return rules
    }

    /// A rule written once (a mapping) or several times (a list of them), or `off` (none): each entry
    /// with its section, named `key` or `key[N]`.
    private func ruleEntries(_ node: Node, key: String) -> [(Node, Section)] {
        if node.scalar?.string == "off" { return [] }
        let items: [(Node, String)]
        if case .sequence(let sequence) = node {
            items = sequence.enumerated().map { ($1, "\(key)[\($0)]") }
        } else {
            items = [(node, key)]
        }
        return items.compactMap { item, entryKey in Section(item, path: entryKey, reader: self).map { (item, $0) } }
    }

    /// A rule's `prefix`: a path prefix such as /admin/ (default /, every path).
    private func pathPrefix(_ section: Section) -> String {
        guard let (value, node) = section.string("prefix") else { return "/" }
        if value.hasPrefix("/") { return value }
        issue(node, key: section.full("prefix"), "'\(value)' is not a path prefix such as /admin/")
        return "/"
    }

    /// `rate_limit`: `{requests_per_second: N, burst: M}` or `off`.
    func rateLimit(_ node: Node, key: String) -> RateLimit? {
        if node.scalar?.string == "off" { return nil }
        guard let section = Section(node, path: key, reader: self) else { return nil }
        let perSecond = section.integer("requests_per_second", in: 1...1_000_000)
        let burst = section.integer("burst", in: 1...1_000_000)
        section.finish()
        guard let perSecond else {
            issue(node, key: "\(key).requests_per_second", "needs the requests each client address may make per second")
            return nil
        }
        return RateLimit(perSecond: perSecond, burst: burst ?? perSecond)
    }
}

/// What a site's name may be.
enum SiteNames {
    /// `text` (lowercase) when it is a host name, a `*.` wildcard of one, an IPv4 address or a
    /// bracketed IPv6 address.
    static func valid(_ text: String) -> String? {
        if text.hasPrefix("[") && text.hasSuffix("]") {
            var address = in6_addr()
            return inet_pton(AF_INET6, String(text.dropFirst().dropLast()), &address) == 1 ? text : nil
        }
        var name = Substring(text)
        if name.hasPrefix("*.") { name = name.dropFirst(2) }
        guard !name.isEmpty, name.utf8.count <= 253 else { return nil }
        for label in name.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.utf8.count <= 63, !label.hasPrefix("-"), !label.hasSuffix("-"),
                  label.utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 95 })
            else { return nil }
        }
        return text
    }

    /// Whether a valid name is an address (IPv4, or bracketed IPv6) rather than a host name.
    static func isAddress(_ name: String) -> Bool {
        if name.hasPrefix("[") { return true }
        var address = in_addr()
        return inet_pton(AF_INET, name, &address) == 1
    }
}
