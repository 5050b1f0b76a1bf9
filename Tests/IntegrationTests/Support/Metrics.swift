import Foundation

/// Prometheus text parsed back: sample (name with labels) to value, and the declared type of each name.
struct Metrics {
    var samples: [String: Double] = [:]
    var types: [String: String] = [:]

    init(_ text: String) throws {
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let words = line.split(separator: " ")
                types[String(words[2])] = String(words[3])
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw TestFailure("not a sample: \(line)")
            }
            let name = String(line[..<space])
            let base = String(name.prefix { $0 != "{" })
            let family = ["_bucket", "_sum", "_count"].reduce(base) { $0.hasSuffix($1) ? String($0.dropLast($1.count)) : $0 }
            guard types[base] != nil || types[family] != nil else { throw TestFailure("sample before its TYPE: \(line)") }
            samples[name] = value
        }
    }

    subscript(_ name: String) -> Double { samples[name] ?? -1 }
}
