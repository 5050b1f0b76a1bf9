import Yams

/// One YAML mapping being read: hands out its keys once each and reports the ones nobody took.
final class Section {
    let node: Node
    /// Where section-wide issues point: the section's key in its parent, else the mapping itself.
    let anchor: Node
    let path: String
    unowned let reader: DocumentReader
    private var entries: [(key: String, keyNode: Node, value: Node)] = []
    private var taken = Set<String>()
    /// Every key a reader looked for, there or not: what an unknown key may have meant.
    private var known = Set<String>()

    init?(_ node: Node, path: String, reader: DocumentReader, keyNode: Node? = nil) {
        self.node = node
        anchor = keyNode ?? node
        self.path = path
        self.reader = reader
        guard case .mapping(let mapping) = node else {
            reader.issue(node, key: path, "expected a mapping of keys to values")
            return nil
        }
        var seen = Set<String>()
        for (key, value) in mapping {
            guard let name = key.scalar?.string else {
                reader.issue(key, key: path, "keys must be plain names")
                continue
            }
            if !seen.insert(name).inserted {
                reader.issue(key, key: full(name), "is set twice")
                continue
            }
            entries.append((name, key, value))
        }
    }

    func full(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func peek(_ key: String) -> Node? {
        known.insert(key)
        return entries.first { $0.key == key }?.value
    }

    func take(_ key: String) -> Node? {
        known.insert(key)
        guard let entry = entries.first(where: { $0.key == key }) else { return nil }
        taken.insert(key)
        return entry.value
    }

    func string(_ key: String) -> (String, Node)? {
        guard let node = take(key) else { return nil }
        guard let scalar = node.scalar else {
            reader.issue(node, key: full(key), "expected a single value")
            return nil
        }
        if scalar.tag == Tag(.null) || (scalar.string.isEmpty && scalar.style == .plain) {
            reader.issue(node, key: full(key), "needs a value")
            return nil
        }
        return (scalar.string, node)
    }

    func integer(_ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let (text, node) = string(key) else { return nil }
        guard let value = Int(text) else {
            reader.issue(node, key: full(key), "expected a whole number, got '\(text)'")
            return nil
        }
        guard range.contains(value) else {
            reader.issue(node, key: full(key), "\(value) is out of range \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return value
    }

    /// A duration in milliseconds: `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
    func duration(_ key: String, allowZero: Bool = false) -> Int? {
        guard let (text, node) = string(key) else { return nil }
        guard let value = Section.parseDuration(text), value >= (allowZero ? 0 : 1), value <= 86_400_000 else {
            reader.issue(node, key: full(key), "expected a duration between \(allowZero ? "0" : "1ms") and 24h such as 500ms, 30s, 5m; got '\(text)'")
            return nil
        }
        return value
    }

    /// Each duration key that is there, into its field (milliseconds) of `value`.
    func durations<Value>(_ fields: KeyValuePairs<String, WritableKeyPath<Value, Int>>, into value: inout Value) {
        for (key, field) in fields {
            if let milliseconds = duration(key) { value[keyPath: field] = milliseconds }
        }
    }

    static func parseDuration(_ text: String) -> Int? {
        let units: [(String, Int)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let number = Int(text.dropLast(suffix.count)), number >= 0, number <= 86_400_000 else { return nil }
            return number * scale
        }
        guard let seconds = Int(text), seconds >= 0, seconds <= 86_400 else { return nil }
        return seconds * 1000
    }

    /// A byte size: `8k`, `1m`, or a bare number of bytes.
    func size(_ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let (text, node) = string(key) else { return nil }
        var number = text.lowercased()
        var scale = 1
        if number.hasSuffix("k") { scale = 1024; number.removeLast() } else if number.hasSuffix("m") { scale = 1_048_576; number.removeLast() }
        guard let value = Int(number), value >= 0, value <= 1 << 30 else {
            reader.issue(node, key: full(key), "expected a size such as 8k or 16384, got '\(text)'")
            return nil
        }
        guard range.contains(value * scale) else {
            reader.issue(node, key: full(key), "\(value * scale) bytes is out of range \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return value * scale
    }

    /// Every entry, all taken: for mappings whose keys are data (status codes, header names).
    func all() -> [(String, Node, Node)] {
        for entry in entries { taken.insert(entry.key) }
        return entries.map { ($0.key, $0.keyNode, $0.value) }
    }

    func boolean(_ key: String) -> Bool? {
        guard let (text, node) = string(key) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            reader.issue(node, key: full(key), "expected true or false, got '\(text)'")
            return nil
        }
    }

    /// One of a fixed set of choices (`ConfigChoice`), case-insensitive; any other value is an issue that
    /// lists the valid ones.
    func choice<Choice: ConfigChoice>(_ key: String, _ type: Choice.Type = Choice.self) -> Choice? {
        guard let (text, node) = string(key) else { return nil }
        guard let value = Choice(rawValue: text.lowercased()) else {
            reader.issue(node, key: full(key), "'\(text)' is not one of \(Choice.choicesText)")
            return nil
        }
        return value
    }

    /// A value that may also be `off` (returned as `off`), else read by `read`.
    func offOr<Value>(_ key: String, off: Value, _ read: (String) -> Value?) -> Value? {
        if let node = peek(key), node.scalar?.string == "off" {
            _ = take(key)
            return off
        }
        return read(key)
    }

    func section(_ key: String) -> Section? {
        known.insert(key)
        guard let entry = entries.first(where: { $0.key == key }) else { return nil }
        taken.insert(key)
        return Section(entry.value, path: full(key), reader: reader, keyNode: entry.keyNode)
    }

    /// Reports every key nobody read: unknown keys are errors, never silently ignored.
    func finish() {
        for entry in entries where !taken.contains(entry.key) {
            if let guess = Section.nearest(entry.key, in: known) {
                reader.issue(entry.keyNode, key: full(entry.key), "unknown key; did you mean \(full(guess))?")
            } else {
                reader.issue(entry.keyNode, key: full(entry.key), "unknown key")
            }
        }
    }

    /// The known key closest to `key` by edit distance (at most 2, and less than half its length), if
    /// one is that close: a misspelling's likely meaning.
    static func nearest(_ key: String, in known: Set<String>) -> String? {
        let word = Array(key.lowercased())
        var best: (String, Int)? = nil
        for candidate in known.sorted() {
            let other = Array(candidate)
            var previous = Array(0...other.count)
            for (i, letter) in word.enumerated() {
                var current = [i + 1] + Array(repeating: 0, count: other.count)
                for (j, otherLetter) in other.enumerated() {
                    current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (letter == otherLetter ? 0 : 1))
                }
                previous = current
            }
            let distance = previous[other.count]
            if distance <= 2 && distance * 2 < max(word.count, 1) && distance < (best?.1 ?? Int.max) { best = (candidate, distance) }
        }
        return best?.0
    }
}
