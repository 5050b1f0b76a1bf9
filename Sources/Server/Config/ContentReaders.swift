import Yams

/// Readers for what the server sends: error pages, per-path headers, compression.
extension DocumentReader {
    /// `error_pages`: status (400-599) → a path beneath the root.
    func errorPages(_ section: Section) -> [String: String] {
        var pages: [String: String] = [:]
        for (key, keyNode, value) in section.all() {
            guard let status = Int(key), (400...599).contains(status) else {
                issue(keyNode, key: section.full(key), "expected a status from 400 to 599")
                continue
            }
            guard let path = value.scalar?.string, path.hasPrefix("/"), !path.contains("?") else {
                issue(value, key: section.full(key), "expected a path beneath the root such as /errors/404.html")
                continue
            }
            pages[String(status)] = path
        }
        return pages
    }

    /// `gzip`; in a site (`serverWide` false) without `cache`, which is one budget for the whole worker.
    func gzip(_ section: Section, _ current: ServerConfig.GzipSettings, serverWide: Bool = true) -> ServerConfig.GzipSettings {
        var gzip = current
        if !serverWide, let node = section.take("cache") {
            issue(node, key: section.full("cache"), "is one budget for every site: set gzip.cache at the top level")
        }
        if let value = section.boolean("enabled") { gzip.enabled = value }
        if let value = section.integer("level", in: 1...9) { gzip.level = value }
        if let value = section.size("min_length", in: 0...(1 << 30)) { gzip.minLength = value }
        if let value = mediaTypes(section, "types") { gzip.types = value }
        if let value = mediaTypes(section, "never") { gzip.never = value }
        if let value = section.boolean("precompressed") { gzip.precompressed = value }
        if let value = section.size("cache", in: 0...(1 << 30)) { gzip.cacheBytes = value }
        if let value = section.size("cache_file_max", in: 0...(1 << 30)) { gzip.cacheFileMax = value }
        section.finish()
        return gzip
    }

    /// `compression`: the codings offered and their tie order (`encodings`), and brotli's and zstd's
    /// levels: `level` answers the first request for a file version, `best` replaces it from the helper
    /// thread (at or below `level`: no second pass), `stream` for files compressed while they are sent.
    /// gzip's own keys stay in `gzip`.
    func compression(_ section: Section, _ current: ServerConfig.GzipSettings) -> ServerConfig.GzipSettings {
        var settings = current
        if let node = section.take("encodings") {
            let items: [Node]
            if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
            var codings: [ContentCoding] = []
            for item in items {
                let text = item.scalar?.string ?? ""
                guard let coding = ContentCoding(name: text) else {
                    issue(item, key: section.full("encodings"), "'\(text)' is not br, zstd or gzip")
                    continue
                }
                if codings.contains(coding) {
                    issue(item, key: section.full("encodings"), "'\(text)' is listed twice")
                } else {
                    codings.append(coding)
                }
            }
            settings.encodings = codings
        }
        if let brotli = section.section("brotli") {
            if let value = brotli.integer("level", in: 0...11) { settings.brotliLevel = value }
            if let value = brotli.integer("best", in: 0...11) { settings.brotliBestLevel = value }
            if let value = brotli.integer("stream", in: 0...11) { settings.brotliStreamLevel = value }
            brotli.finish()
        }
        if let zstd = section.section("zstd") {
            // Up to 19: the "ultra" levels above it want windows beyond the 8 MB HTTP allows (RFC 9659).
            if let value = zstd.integer("level", in: 1...19) { settings.zstdLevel = value }
            if let value = zstd.integer("best", in: 1...19) { settings.zstdBestLevel = value }
            if let value = zstd.integer("stream", in: 1...19) { settings.zstdStreamLevel = value }
            zstd.finish()
        }
        section.finish()
        return settings
    }

    /// A list of media types or patterns (`text/*`, `application/*+json`, `*/*`).
    func mediaTypes(_ section: Section, _ name: String) -> [String]? {
        guard let node = section.take(name) else { return nil }
        let items: [Node]
        if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
        var values: [String] = []
        for item in items {
            let text = item.scalar?.string ?? ""
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            let valid = parts.count == 2 && !parts[0].isEmpty && !parts[1].isEmpty
                && text.utf8.allSatisfy { $0 > 32 && $0 < 127 && $0 != 59 && $0 != 44 }
                && text.filter({ $0 == "*" }).count <= 1
            if valid { values.append(text.lowercased()) } else {
                issue(item, key: "\(section.full(name))", "'\(text)' is not a media type such as text/css, text/* or application/*+json")
            }
        }
        return values
    }

    /// `headers`: a list of `{match: PATTERN, set: {Name: value, ...}}`.
    func headerRules(_ node: Node, key name: String = "headers") -> [ServerConfig.HeaderRule] {
        guard case .sequence(let items) = node else {
            issue(node, key: name, "expected a list of {match: PATTERN, set: {NAME: VALUE}}")
            return []
        }
        var rules: [ServerConfig.HeaderRule] = []
        for (position, item) in items.enumerated() {
            let key = "\(name)[\(position)]"
            guard let section = Section(item, path: key, reader: self) else { continue }
            let pattern = section.string("match")
            var pairs: [[String]] = []
            if let set = section.section("set") {
                for (name, nameNode, value) in set.all() {
                    let forbidden = ["content-length", "transfer-encoding", "content-range", "connection", "date", "server",
                                     "content-type", "etag", "last-modified", "accept-ranges", "keep-alive", "upgrade"]
                    guard !name.isEmpty, name.utf8.allSatisfy(RequestParser.isTokenByte) else {
                        issue(nameNode, key: "\(key).set.\(name)", "is not a valid header name")
                        continue
                    }
                    guard !forbidden.contains(name.lowercased()) else {
                        issue(nameNode, key: "\(key).set.\(name)", "is set by the server and cannot be changed here")
                        continue
                    }
                    guard let text = value.scalar?.string, !text.isEmpty,
                          text.utf8.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else {
                        issue(value, key: "\(key).set.\(name)", "needs a one-line value without control characters")
                        continue
                    }
                    pairs.append([name, text])
                }
            } else {
                issue(item, key: "\(key).set", "needs the headers to set")
            }
            section.finish()
            guard let (match, matchNode) = pattern else {
                issue(item, key: "\(key).match", "needs a pattern: /exact/path, /prefix/*, or *.suffix")
                continue
            }
            let stars = match.filter { $0 == "*" }.count
            guard stars <= 1, stars == 0 ? match.hasPrefix("/") : (match.hasPrefix("*") || match.hasSuffix("*") && match.hasPrefix("/")) else {
                issue(matchNode, key: "\(key).match", "'\(match)' is not /exact/path, /prefix/*, or *.suffix")
                continue
            }
            rules.append(ServerConfig.HeaderRule(match: match, set: pairs))
        }
        // Every rule could match one file: together they must fit beside the server's own headers.
        let total = rules.flatMap(\.set).reduce(0) { $0 + $1[0].utf8.count + $1[1].utf8.count + 4 }
        if total > 2048 { issue(node, key: name, "all the headers together come to \(total) bytes; the most is 2048") }
        return rules
    }
}
