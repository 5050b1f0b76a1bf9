/// Which site a name belongs to: a hash table built once at load from every site's names, looked up
/// with the bytes of a Host (or `:authority`, or the TLS server name) without copying or allocating.
///
/// Exact names win; then `*.example.com` wildcards, the longest suffix first (`*.example.com` matches
/// `a.example.com` and `a.b.example.com`, never `example.com` itself, as nginx's server_name does).
/// Case is ignored, and so are a port and a trailing dot. Open addressing over a power-of-two array of
/// twice the names, so a lookup is a hash of the name and, almost always, one probe.
final class SiteTable: @unchecked Sendable {  // immutable once built
    /// One slot: a name's hash, where its bytes are in `names`, its site (-1: an empty slot), and
    /// whether it is a wildcard suffix. Plain values, so a probe touches no reference counts.
    struct Slot {
        var hash: UInt64 = 0
        var start: Int32 = 0
        var length: Int32 = 0
        var site: Int32 = -1
        var wildcard = false
    }
    /// Every name's bytes, lowercase, one after another (a wildcard as its suffix with the dot), and
    /// the slots: allocated once and owned here (plain memory, so a lookup retains nothing).
    private let names: UnsafeMutableBufferPointer<UInt8>
    private let slots: UnsafeMutableBufferPointer<Slot>
    private let mask: Int
    private let count: Int
    /// Whether any wildcard is configured (when not, a miss needs no suffix probes).
    private let hasWildcards: Bool
    /// Longest name stored: a longer Host cannot match and is not hashed.
    static let maximumLength = 255

    /// From `sites` (the default site, which has no names, at index 0).
    init(_ sites: [SiteSettings]) {
        var names: [UInt8] = []
        var entries: [Slot] = []
        for (index, site) in sites.enumerated() {
            for name in site.names {
                let isWildcard = name.hasPrefix("*.")
                let bytes = Array((isWildcard ? String(name.dropFirst()) : name).lowercased().utf8).map { $0 | 0x20 }
                let hash = bytes.withUnsafeBufferPointer { SiteTable.hash($0.baseAddress!, 0, $0.count, wildcard: isWildcard) }
                entries.append(Slot(hash: hash, start: Int32(names.count), length: Int32(bytes.count), site: Int32(index), wildcard: isWildcard))
                names += bytes
            }
        }
        var size = 8
        while size < entries.count * 2 { size <<= 1 }
        var slots = [Slot](repeating: Slot(), count: size)
        for entry in entries {
            var slot = Int(truncatingIfNeeded: entry.hash) & (size - 1)
            while slots[slot].site >= 0 { slot = (slot + 1) & (size - 1) }
            slots[slot] = entry
        }
        self.names = .allocate(capacity: max(names.count, 1))
        _ = self.names.initialize(from: names)
        self.slots = .allocate(capacity: size)
        _ = self.slots.initialize(from: slots)
        mask = size - 1
        count = entries.count
        hasWildcards = entries.contains { $0.wildcard }
    }

    deinit {
        names.deallocate()
        slots.deallocate()
    }

    /// A host name's bytes with 0x20 set in each: lowercase for letters, and no change for digits, '-'
    /// and '.', the other bytes a name has ('_' becomes DEL, which a Host cannot hold). Eight at a time.
    static let fold: UInt64 = 0x2020_2020_2020_2020

    /// A hash of the folded bytes, a word at a time (a multiply and a shift per eight bytes), and
    /// whether the entry is a wildcard suffix.
    @inline(__always)
    private static func hash(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int, wildcard: Bool) -> UInt64 {
        var hash: UInt64 = wildcard ? 0x84222325_cbf29ce4 : 0xcbf2_9ce4_8422_2325
        let raw = UnsafeRawPointer(base)
        var index = start
        while index + 8 <= end {
            hash = (hash ^ (raw.loadUnaligned(fromByteOffset: index, as: UInt64.self) | fold)) &* 0x9E37_79B9_7F4A_7C15
            hash ^= hash >> 29
            index += 8
        }
        var tail = UInt64(end - start) << 56
        var shift: UInt64 = 0
        while index < end {
            tail |= UInt64(base[index] | 0x20) << shift
            shift += 8
            index += 1
        }
        hash = (hash ^ tail) &* 0x9E37_79B9_7F4A_7C15
        return hash ^ (hash >> 32)
    }

    /// Whether the folded bytes of `base[start..<start + length]` are `stored` (folded already).
    @inline(__always)
    private static func same(_ stored: UnsafePointer<UInt8>, _ base: UnsafePointer<UInt8>, _ start: Int, _ length: Int) -> Bool {
        let left = UnsafeRawPointer(stored)
        let right = UnsafeRawPointer(base + start)
        var offset = 0
        while offset + 8 <= length {
            if left.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                != right.loadUnaligned(fromByteOffset: offset, as: UInt64.self) | fold { return false }
            offset += 8
        }
        while offset < length {
            if stored[offset] != base[start + offset] | 0x20 { return false }
            offset += 1
        }
        return true
    }

    /// The site of `base[start..<end]` (an exact name or a wildcard suffix), or -1.
    private func find(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int, wildcard: Bool) -> Int {
        let hash = SiteTable.hash(base, start, end, wildcard: wildcard)
        let length = end - start
        var slot = Int(truncatingIfNeeded: hash) & mask
        while true {
            let entry = slots[slot]
            if entry.site < 0 { return -1 }
            if entry.hash == hash && Int(entry.length) == length && entry.wildcard == wildcard
                && SiteTable.same(names.baseAddress! + Int(entry.start), base, start, length) {
                return Int(entry.site)
            }
            slot = (slot + 1) & mask
        }
    }

    /// The site a Host value names (`example.com`, `Example.COM:8443`, `[::1]:443`, `example.com.`),
    /// or -1 when no site claims it.
    func site(host base: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> Int {
        guard end > start, count > 0 else { return -1 }
        var end = SiteTable.nameEnd(base, start, end)
        if end > start && base[end - 1] == UInt8(ascii: ".") { end -= 1 }
        guard end > start, end - start <= SiteTable.maximumLength else { return -1 }
        let exact = find(base, start, end, wildcard: false)
        if exact >= 0 || !hasWildcards { return exact }
        // Each suffix that starts at a dot, the longest first.
        var index = start + 1
        while index < end {
            if base[index] == UInt8(ascii: ".") {
                let match = find(base, index, end, wildcard: true)
                if match >= 0 { return match }
            }
            index += 1
        }
        return -1
    }

    /// Where a Host's name ends: before its port (the last ':' outside an IPv6 literal's brackets).
    static func nameEnd(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> Int {
        var index = end - 1
        while index > start && base[index] != UInt8(ascii: ":") && base[index] != UInt8(ascii: "]") { index -= 1 }
        return base[index] == UInt8(ascii: ":") ? index : end
    }

    /// The site of a Host span in a request's bytes, or -1.
    @inline(__always)
    func site(_ bytes: UnsafeRawBufferPointer, _ host: ByteSpan) -> Int {
        guard !host.isEmpty else { return -1 }
        return site(host: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), host.start, host.end)
    }

    /// The site of a TLS server name (NUL-terminated), or -1.
    func site(serverName: UnsafePointer<CChar>) -> Int {
        let length = strlenBounded(serverName, SiteTable.maximumLength + 2)
        return serverName.withMemoryRebound(to: UInt8.self, capacity: length) { site(host: $0, 0, length) }
    }

    private func strlenBounded(_ text: UnsafePointer<CChar>, _ limit: Int) -> Int {
        var length = 0
        while length < limit && text[length] != 0 { length += 1 }
        return length
    }
}

extension ServerConfig {
    /// What `webserver check --host NAME` says: the site a name reaches (by the same table the workers
    /// route with), its root, certificate and rules.
    public func explain(host: String) -> String {
        let table = SiteTable(allSites)
        let bytes = Array(host.utf8)
        let index = bytes.withUnsafeBufferPointer { table.site(host: $0.baseAddress!, 0, $0.count) }
        let site: SiteSettings
        var lines: [String] = []
        if index < 0 {
            guard hasDefaultSite else {
                let answer = unmatchedHost == .close ? "the connection is closed without an answer" : "\(unmatchedHost.rawValue)"
                return "\(host): no site claims it and there is no default site (no top-level root): \(answer) (unmatched_host)"
            }
            site = defaultSite
            lines.append("\(host): no site claims it: the default site (top-level root)")
        } else if index == 0 {
            site = defaultSite
            lines.append("\(host): the default site")
        } else {
            site = allSites[index]
            var name = host.lowercased()
            if !name.hasPrefix("["), let colon = name.lastIndex(of: ":") { name = String(name[..<colon]) }
            if name.hasSuffix(".") { name.removeLast() }
            let matched = site.names.first { $0 == name }
                ?? site.names.filter { $0.hasPrefix("*.") && name.hasSuffix($0.dropFirst()) }.max { $0.count < $1.count } ?? ""
            lines.append("\(host): sites[\(index - 1)] (\(site.place)), by the name \(matched)")
        }
        lines.append("  root: \(site.root.isEmpty ? "none (no files; only its rules answer)" : site.root)")
        if !tls.listen.isEmpty {
            if index > 0 && site.hasOwnCertificate {
                lines.append("  certificate: \(site.certificates!.certificates.map(\.certificate).joined(separator: ", "))")
            } else if !tls.defaultSite.certificates.isEmpty {
                lines.append("  certificate: the default one (\(tls.defaultSite.certificates.map(\.certificate).joined(separator: ", ")))")
            } else {
                lines.append("  certificate: none (over TLS the handshake is refused)")
            }
        }
        let rules = site.rules
        if let limit = rules.rateLimit { lines.append("  rate_limit: \(limit.perSecond)/s per address, burst \(limit.burst)") }
        for rule in rules.access { lines.append("  access \(rule.prefix): allow \(rule.allow.isEmpty ? "any" : rule.allow.joined(separator: ", ")), deny \(rule.deny.isEmpty ? "none" : rule.deny.joined(separator: ", "))") }
        if rules.redirectHTTP { lines.append("  redirect_http: plain HTTP is redirected to HTTPS") }
        if let canonical = rules.canonicalHost { lines.append("  canonical_host: \(canonical.rawValue)") }
        for rule in rules.redirects { lines.append("  redirect \(rule.from) → \(rule.to) (\(rule.status)\(rule.keepQuery ? "" : ", query dropped"))") }
        for rule in rules.auth { lines.append("  auth \(rule.prefix): realm \"\(rule.realm)\", users \(rule.users)") }
        if let tryFiles = rules.tryFiles {
            lines.append("  try_files: \(tryFiles.candidates.joined(separator: " "))\(tryFiles.except.isEmpty ? "" : " (except \(tryFiles.except.joined(separator: ", ")))")")
        }
        return lines.joined(separator: "\n")
    }
}
