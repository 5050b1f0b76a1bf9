/// Turns a request-target into a path relative to the site root, or a rejection.
///
/// Percent-decodes once; a decoded NUL is 400; `%2F` becomes a separator (as nginx does); `.` and `..`
/// segments are resolved and `..` above the root is 400; empty segments (`//`) collapse. After
/// normalizing, a segment starting with `.` is 403 unless it is a first segment `.well-known`.
/// Absolute-form targets (`http://host/path`) use their path. The query is not part of the path.
enum RequestPath {
    enum Outcome: Equatable {
        /// `length` bytes of relative path were written (no leading slash; NUL-terminated; `.` for the root).
        /// `directory` when the target named a directory (trailing slash). `pathEnd` is the offset in the
        /// target where the path ends (at `?` or the end), for redirects.
        case path(length: Int, directory: Bool, pathEnd: Int)
        case rejected(HTTPStatus)
    }

    /// Writes the normalized path into `output` (at least target length + 2 bytes). With
    /// `rejectEncodedSlash`, a `%2F` is 404 instead of a separator (Apache's AllowEncodedSlashes Off).
    static func normalize(
        _ bytes: UnsafeRawBufferPointer, target: ByteSpan, into output: UnsafeMutablePointer<UInt8>,
        rejectEncodedSlash: Bool = false
    ) -> Outcome {
        var index = target.start
        let end = target.end
        if bytes[index] != 47 {
            // absolute-form: scheme "://" authority path
            guard let afterScheme = schemeEnd(bytes, index, end) else { return .rejected(.badRequest) }
            index = afterScheme
            while index < end, bytes[index] != 47, bytes[index] != 63 { index += 1 }
            if index == end || bytes[index] == 63 {
                output[0] = 46
                output[1] = 0
                return .path(length: 1, directory: true, pathEnd: index)
            }
        }
        if let fast = plainPath(bytes, from: index, end: end, into: output) { return fast }
        return normalizeSegments(bytes, from: index, end: end, into: output, rejectEncodedSlash: rejectEncodedSlash)
    }

    /// The full treatment: escapes, dot segments, empty segments, dotfiles. Kept out of `normalize` so
    /// the plain path does not pay for this function's state.
    private static func normalizeSegments(
        _ bytes: UnsafeRawBufferPointer, from start: Int, end: Int, into output: UnsafeMutablePointer<UInt8>,
        rejectEncodedSlash: Bool
    ) -> Outcome {
        var index = start
        var count = 0
        var segmentStart = 0
        var directory = false
        var pathEnd = end

        // Finishes the segment output[segmentStart..<count]; false when `..` climbs above the root.
        func finishSegment() -> Bool {
            let length = count - segmentStart
            directory = false
            if length == 0 {
                return true
            }
            if length == 1 && output[segmentStart] == 46 {
                count = segmentStart
                directory = true
                return true
            }
            if length == 2 && output[segmentStart] == 46 && output[segmentStart + 1] == 46 {
                directory = true
                if segmentStart == 0 { return false }
                var back = segmentStart - 1  // the '/' before this segment
                while back > 0 && output[back - 1] != 47 { back -= 1 }
                count = back
                segmentStart = back
                return true
            }
            output[count] = 47
            count += 1
            segmentStart = count
            return true
        }

        index += 1  // skip the leading '/'
        while index < end {
            var byte = bytes[index]
            if byte == 63 {
                pathEnd = index
                break
            }
            if byte == 35 { return .rejected(.badRequest) }
            if byte == 37 {
                guard index + 2 < end, let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) else {
                    return .rejected(.badRequest)
                }
                byte = high << 4 | low
                if byte == 0 { return .rejected(.badRequest) }
                if byte == 47 && rejectEncodedSlash { return .rejected(.notFound) }
                index += 2
            }
            index += 1
            if byte == 47 {
                if !finishSegment() { return .rejected(.badRequest) }
                directory = true
            } else {
                output[count] = byte
                count += 1
            }
        }
        if count > segmentStart {
            if !finishSegment() { return .rejected(.badRequest) }
            if count > 0 && output[count - 1] == 47 && !directory { count -= 1 }
        }
        if count > 0 && output[count - 1] == 47 { count -= 1 }
        // Dotfiles: any segment starting with '.', except a first segment ".well-known".
        var position = 0
        var first = true
        while position < count {
            if output[position] == 46 {
                let allowed = first && isWellKnown(output, position, count)
                if !allowed { return .rejected(.forbidden) }
            }
            while position < count && output[position] != 47 { position += 1 }
            position += 1
            first = false
        }
        if count == 0 {
            output[0] = 46
            output[1] = 0
            return .path(length: 1, directory: true, pathEnd: pathEnd)
        }
        output[count] = 0
        return .path(length: count, directory: directory, pathEnd: pathEnd)
    }

    /// The common case without a copy per segment: no escapes, no dot segment or dotfile, no `//`.
    /// Returns nil when the path needs the full treatment.
    @inline(__always)
    private static func plainPath(
        _ bytes: UnsafeRawBufferPointer, from start: Int, end: Int, into output: UnsafeMutablePointer<UInt8>
    ) -> Outcome? {
        var index = start + 1  // past the leading '/'
        var previous: UInt8 = 47
        while index < end {
            let byte = bytes[index]
            if byte == 63 { break }
            if byte == 37 || byte == 35 || previous == 47 && (byte == 46 || byte == 47) { return nil }
            previous = byte
            index += 1
        }
        var length = index - start - 1  // without the leading '/'
        let directory = previous == 47
        if directory { length -= 1 }
        if length <= 0 { return nil }  // the root: let the full path handle it
        (output).update(from: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + start + 1, count: length)
        output[length] = 0
        return .path(length: length, directory: directory, pathEnd: index)
    }

    /// Whether the normalized path (`path[0..<length]`, relative, `.` for the root, as
    /// `RequestPath.normalize` writes it) is under `prefix` (`/admin/`), the directory itself included
    /// (`/admin`). Rules that guard paths (`access`, `auth`) and `try_files`' `except` match this, never
    /// the target as sent, so `/%61dmin/` or `//admin/x/../` cannot step around them.
    static func isUnder(_ path: UnsafePointer<UInt8>, _ length: Int, directory: Bool, _ prefix: [UInt8]) -> Bool {
        guard prefix.count > 1 else { return true }  // "/"
        let isRoot = length == 1 && path[0] == UInt8(ascii: ".")
        // The path as "/" + path + ("/" when a directory), compared without building it.
        let count = isRoot ? 1 : 1 + length + (directory ? 1 : 0)
        func byte(_ index: Int) -> UInt8 {
            if index == 0 { return UInt8(ascii: "/") }
            if isRoot { return 0 }
            return index - 1 < length ? path[index - 1] : UInt8(ascii: "/")
        }
        if count >= prefix.count {
            for index in 1..<prefix.count where byte(index) != prefix[index] { return false }
            return true
        }
        // The directory named without its slash.
        guard prefix.last == UInt8(ascii: "/"), count == prefix.count - 1 else { return false }
        for index in 1..<count where byte(index) != prefix[index] { return false }
        return true
    }

    /// Bytes that may stand unescaped in a path (RFC 3986 pchar and '/'): unreserved, sub-delims, ':', '@'.
    static func isPathByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 48...57, 65...90, 97...122: return true  // ALPHA DIGIT
        case 45, 46, 95, 126: return true  // - . _ ~
        case 33, 36, 38, 39, 40, 41, 42, 43, 44, 59, 61: return true  // ! $ & ' ( ) * + , ; =
        case 58, 64, 47: return true  // : @ /
        default: return false
        }
    }

    private static func isWellKnown(_ output: UnsafeMutablePointer<UInt8>, _ start: Int, _ count: Int) -> Bool {
        let name: StaticString = ".well-known"
        let length = name.utf8CodeUnitCount
        guard count - start >= length else { return false }
        for offset in 0..<length where output[start + offset] != name.utf8Start[offset] { return false }
        return count - start == length || output[start + length] == 47
    }

    private static func schemeEnd(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int? {
        for scheme in ["http://", "https://"] as [StaticString] {
            let length = scheme.utf8CodeUnitCount
            guard end - start > length else { continue }
            var matches = true
            for offset in 0..<length where bytes[start + offset] | (offset < length - 3 ? 0x20 : 0) != scheme.utf8Start[offset] {
                matches = false
                break
            }
            if matches { return start + length }
        }
        return nil
    }

    @inline(__always)
    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 48...57: return byte - 48
        case 65...70: return byte - 55
        case 97...102: return byte - 87
        default: return nil
        }
    }
}
