/// What a representation's responses say about its version: the validators a client compares.
struct Validators {
    /// The strong entity-tag, with its quotes.
    var etag: UnsafeRawBufferPointer
    /// Last-Modified, in seconds since the epoch.
    var lastModified: Int64
}

/// Conditional requests (RFC 9110 section 13.2.2, steps 1 to 4, for GET and HEAD), as a pure function of
/// the request and the chosen representation's validators: no sockets, no files.
enum Preconditions {
    enum Outcome: Equatable {
        /// Answer the request (200, or a range).
        case proceed
        /// 304: the client's copy is current.
        case notModified
        /// 412: a precondition the client set is false.
        case preconditionFailed
    }

    /// If-Match (strong comparison) or, without it, If-Unmodified-Since: 412 when false. Then
    /// If-None-Match (weak comparison) or, without it, If-Modified-Since: 304 when the client's copy is
    /// current. A date that does not parse is ignored; lists split over several field lines are one list.
    static func evaluate(_ head: RequestHead, _ bytes: UnsafeRawBufferPointer, _ validators: Validators) -> Outcome {
        if !head.ifMatch.isEmpty {
            if !matches(bytes, head, head.ifMatch, name: "if-match", validators.etag, weak: false) { return .preconditionFailed }
        } else if !head.ifUnmodifiedSince.isEmpty, let date = HTTPDate.parse(bytes, head.ifUnmodifiedSince),
                  validators.lastModified > date {
            return .preconditionFailed
        }
        if !head.ifNoneMatch.isEmpty {
            if matches(bytes, head, head.ifNoneMatch, name: "if-none-match", validators.etag, weak: true) { return .notModified }
        } else if !head.ifModifiedSince.isEmpty, let date = HTTPDate.parse(bytes, head.ifModifiedSince),
                  validators.lastModified <= date {
            return .notModified
        }
        return .proceed
    }

    /// An entity-tag list, from one field line or, when the client split it, from all of them.
    static func matches(
        _ bytes: UnsafeRawBufferPointer, _ head: RequestHead, _ span: ByteSpan, name: StaticString,
        _ tag: UnsafeRawBufferPointer, weak: Bool
    ) -> Bool {
        guard head.repeatedConditionalList else { return EntityTags.list(bytes, span, matches: tag, weak: weak) }
        let spans = RequestParser.fieldValues(bytes, headLength: head.headLength, name: name)
        return spans.contains { EntityTags.list(bytes, $0, matches: tag, weak: weak) }
    }
}

/// Which bytes of a representation a request gets (RFC 9110 section 14), as a pure function of the
/// request, the representation's validators and its length.
enum RangeSelection {
    enum Outcome: Equatable {
        /// The whole representation: no Range, or one that does not apply (not GET, sent twice, an
        /// If-Range that is not current, malformed, another unit, more ranges than the limit).
        case whole
        /// 416: no range overlaps the content.
        case unsatisfiable
        /// 206: this many ranges, sorted and coalesced, in the output buffer (first...last, inclusive).
        case ranges(Int)
    }

    static func select(
        _ head: RequestHead, _ bytes: UnsafeRawBufferPointer, _ validators: Validators, length: Int64, limit: Int,
        into output: UnsafeMutablePointer<(Int64, Int64)>
    ) -> Outcome {
        guard !head.range.isEmpty && head.method == .get && !head.repeatedRange else { return .whole }
        guard ifRangeHolds(head, bytes, validators) else { return .whole }
        switch ByteRanges.resolve(bytes, head.range, length: length, limit: limit, into: output) {
        case .ignore: return .whole
        case .unsatisfiable: return .unsatisfiable
        case .ranges(let count): return .ranges(count)
        }
    }

    /// If-Range (RFC 9110 section 13.1.5): the Range applies only if the client's validator is current,
    /// an entity-tag by strong comparison or a date equal to Last-Modified.
    static func ifRangeHolds(_ head: RequestHead, _ bytes: UnsafeRawBufferPointer, _ validators: Validators) -> Bool {
        guard !head.ifRange.isEmpty else { return true }
        let first = bytes[head.ifRange.start]
        if first == UInt8(ascii: "\"") || first == UInt8(ascii: "W") {
            return first == UInt8(ascii: "\"") && EntityTags.list(bytes, head.ifRange, matches: validators.etag, weak: false)
        }
        return HTTPDate.parse(bytes, head.ifRange) == validators.lastModified
    }
}
