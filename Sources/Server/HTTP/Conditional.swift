/// Entity-tag lists (RFC 9110 section 8.8.3) and byte ranges (section 14), read from request bytes
/// without allocating.
public enum EntityTags {
    /// Whether `list` (an If-Match or If-None-Match value: `*` or comma-separated entity-tags) matches
    /// `tag`, the resource's current strong ETag with its quotes. `weak` picks the comparison: If-None-Match
    /// uses the weak one (W/ ignored), If-Match and If-Range the strong one (a W/ tag never matches).
    /// A malformed list matches nothing.
    public static func list(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan, matches tag: UnsafeRawBufferPointer, weak: Bool) -> Bool {
        var index = span.start
        let end = span.end
        if end - index == 1 && bytes[index] == 42 { return true }  // "*"
        while index < end {
            while index < end, bytes[index] == 32 || bytes[index] == 9 || bytes[index] == 44 { index += 1 }
            if index == end { break }
            var isWeak = false
            if end - index >= 2 && bytes[index] == 87 && bytes[index + 1] == 47 {  // "W/"
                isWeak = true
                index += 2
            }
            guard index < end, bytes[index] == 34 else { return false }
            let start = index
            index += 1
            while index < end, bytes[index] != 34 { index += 1 }
            guard index < end else { return false }
            index += 1
            if isWeak && !weak { continue }
            if index - start == tag.count && memcmpEqual(bytes, start, tag) { return true }
        }
        return false
    }

    static func memcmpEqual(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ tag: UnsafeRawBufferPointer) -> Bool {
        for offset in 0..<tag.count where bytes[start + offset] != tag[offset] { return false }
        return true
    }
}

/// A Range header's byte ranges, resolved against a length (RFC 9110 section 14.1.2).
public enum ByteRanges {
    public enum Outcome: Equatable, Sendable {
        /// No usable Range: serve the whole representation (absent, malformed, another unit, too many).
        case ignore
        /// None of the ranges overlaps the content: 416.
        case unsatisfiable
        /// This many ranges were written to the output, sorted and coalesced; each is first...last inclusive.
        case ranges(Int)
    }

    /// Parses `bytes=...` for a representation of `length` bytes into `output` (capacity `limit`).
    /// Overlapping ranges, and ranges less than `gap` bytes apart, are merged into one.
    public static func resolve(
        _ bytes: UnsafeRawBufferPointer, _ span: ByteSpan, length: Int64, limit: Int, gap: Int64 = 80,
        into output: UnsafeMutablePointer<(Int64, Int64)>
    ) -> Outcome {
        var index = span.start
        let end = span.end
        // "bytes" is case-insensitive (a token); then "=".
        guard end - index > 6, bytes[index] | 0x20 == 98, bytes[index + 1] | 0x20 == 121, bytes[index + 2] | 0x20 == 116,
              bytes[index + 3] | 0x20 == 101, bytes[index + 4] | 0x20 == 115 else { return .ignore }  // "bytes"
        index += 5
        guard bytes[index] == 61 else { return .ignore }
        index += 1
        var count = 0
        var specs = 0
        while index < end {
            while index < end, bytes[index] == 32 || bytes[index] == 9 || bytes[index] == 44 { index += 1 }
            if index == end { break }
            specs += 1
            if specs > limit { return .ignore }
            var first: Int64 = -1
            if bytes[index] != 45 {
                guard let value = number(bytes, &index, end) else { return .ignore }
                first = value
            }
            guard index < end, bytes[index] == 45 else { return .ignore }
            index += 1
            var last: Int64 = -1
            if index < end, bytes[index] >= 48 && bytes[index] <= 57 {
                guard let value = number(bytes, &index, end) else { return .ignore }
                last = value
            }
            while index < end, bytes[index] == 32 || bytes[index] == 9 { index += 1 }
            guard index == end || bytes[index] == 44 else { return .ignore }
            var range: (Int64, Int64)
            if first < 0 {
                // Suffix: the last N bytes; -0 and an empty file cannot be satisfied.
                guard last >= 0 else { return .ignore }
                if last == 0 || length == 0 { continue }
                range = (max(0, length - last), length - 1)
            } else {
                if last >= 0 && last < first { return .ignore }  // invalid: the whole header is ignored
                if first >= length { continue }
                range = (first, last < 0 ? length - 1 : min(last, length - 1))
            }
            // Insert sorted by start, merging with neighbours that overlap or nearly touch.
            var position = count
            while position > 0 && output[position - 1].0 > range.0 { position -= 1 }
            if position > 0 && output[position - 1].1 + gap >= range.0 {
                position -= 1
                output[position].1 = max(output[position].1, range.1)
            } else {
                var move = count
                while move > position {
                    output[move] = output[move - 1]
                    move -= 1
                }
                output[position] = range
                count += 1
            }
            // The merged range may now reach the ones after it.
            while position + 1 < count && output[position].1 + gap >= output[position + 1].0 {
                output[position].1 = max(output[position].1, output[position + 1].1)
                var move = position + 1
                while move + 1 < count {
                    output[move] = output[move + 1]
                    move += 1
                }
                count -= 1
            }
        }
        if specs == 0 { return .ignore }
        return count == 0 ? .unsatisfiable : .ranges(count)
    }

    /// 1*DIGIT, at most 18 digits.
    static func number(_ bytes: UnsafeRawBufferPointer, _ index: inout Int, _ end: Int) -> Int64? {
        var value: Int64 = 0
        var digits = 0
        while index < end, bytes[index] >= 48 && bytes[index] <= 57 {
            if digits == 18 { return nil }  // a 19th digit could overflow Int64: no file is that large
            value = value * 10 + Int64(bytes[index] - 48)
            digits += 1
            index += 1
        }
        return digits > 0 ? value : nil
    }
}
