/// `headers`: response header lines for files whose path matches, made once per file version (when its
/// `CachedFile` is made) and carried by its 200, 206 and 304 with no per-request work.
struct HeaderRules {
    let rules: [ServerConfig.HeaderRule]

    /// The lines of every rule that matches the file at `path[0..<length]` (relative to the root), a
    /// later rule replacing an earlier one's header of the same name.
    func lines(forPath path: UnsafePointer<UInt8>, length: Int) -> [UInt8] {
        guard !rules.isEmpty else { return [] }
        let text = "/" + String(decoding: UnsafeBufferPointer(start: path, count: length), as: UTF8.self)
        var chosen: [(name: String, value: String)] = []
        for rule in rules where rule.matches(text) {
            for pair in rule.set where pair.count == 2 {
                chosen.removeAll { $0.name.lowercased() == pair[0].lowercased() }
                chosen.append((pair[0], pair[1]))
            }
        }
        var bytes: [UInt8] = []
        for (name, value) in chosen { bytes += Array("\(name): \(value)\r\n".utf8) }
        return bytes
    }
}
