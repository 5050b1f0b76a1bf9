/// Runs one input through everything that reads request bytes (the head parser, the body reader, the
/// path normalizer, ranges, entity tags, dates, Accept-Encoding, PROXY headers and forwarded hops) and traps if an invariant breaks. The fuzzer calls it
/// with arbitrary bytes; a unit test replays the corpus through it.
///
/// Invariants: no out-of-bounds access or crash (the sanitizer and bounds checks catch those); every
/// span lies inside the head; a complete head parses the same from exactly its own bytes, and every
/// shorter prefix is incomplete (the parser never decides before it has seen the bytes it needs);
/// a chunked body gives the same answer fed whole or a byte at a time.
public enum ParserCheck {
    public static func run(_ data: UnsafeRawBufferPointer) {
        // A PROXY header, as a proxy_protocol socket reads it: complete only with all its bytes, every
        // shorter prefix incomplete; what follows is a request like any other.
        var data = data
        if case .complete(let length, _) = ProxyProtocol.parse(data) {
            precondition(length > 0 && length <= data.count, "PROXY header length out of bounds")
            for cut in [length - 1, length / 2, 1] where cut > 0 && cut < length {
                precondition(ProxyProtocol.parse(UnsafeRawBufferPointer(rebasing: data[0..<cut])) == .incomplete,
                             "a prefix of a PROXY header was decided")
            }
            data = UnsafeRawBufferPointer(rebasing: data[length...])
        }
        let limits = ParserLimits(requestLine: 512, headerBytes: 2048, headerCount: 32, headerField: 1024)
        let result = RequestParser.parse(data, limits: limits)
        guard case .complete(let head) = result else { return }
        let length = head.headLength
        precondition(length > 0 && length <= data.count, "headLength out of bounds")
        for span in [head.target, head.requestLine, head.referer, head.userAgent, head.ifMatch, head.ifNoneMatch,
                     head.ifModifiedSince, head.ifUnmodifiedSince, head.range, head.ifRange, head.acceptEncoding,
                     head.forwardedFor, head.forwarded] {
            precondition(span.start <= span.end && span.end <= length, "span outside the head")
        }
        let own = RequestParser.parse(UnsafeRawBufferPointer(rebasing: data[0..<length]), limits: limits)
        precondition(own == result, "the head parses differently from its own bytes")
        for cut in [length - 1, length / 2, 1] where cut > 0 && cut < length {
            let prefix = RequestParser.parse(UnsafeRawBufferPointer(rebasing: data[0..<cut]), limits: limits)
            precondition(prefix == .incomplete, "a prefix of a complete head was decided: \(prefix)")
        }

        let path = UnsafeMutablePointer<UInt8>.allocate(capacity: head.target.count + 2)
        defer { path.deallocate() }
        if case .path(let pathLength, _, let pathEnd) = RequestPath.normalize(data, target: head.target, into: path) {
            precondition(pathLength <= head.target.count + 1 && pathEnd <= head.target.end, "path outside its buffer")
            for index in 0..<pathLength { precondition(path[index] != 0, "NUL inside a normalized path") }
        }

        let ranges = UnsafeMutablePointer<(Int64, Int64)>.allocate(capacity: 16)
        defer { ranges.deallocate() }
        if !head.range.isEmpty, case .ranges(let count) = ByteRanges.resolve(data, head.range, length: 1000, limit: 16, into: ranges) {
            for index in 0..<count {
                precondition(ranges[index].0 <= ranges[index].1 && ranges[index].1 < 1000, "range outside the file")
                if index > 0 { precondition(ranges[index - 1].1 < ranges[index].0, "ranges overlap or are unsorted") }
            }
        }
        let tag: StaticString = "\"abc\""
        let tagBytes = UnsafeRawBufferPointer(start: tag.utf8Start, count: tag.utf8CodeUnitCount)
        _ = EntityTags.list(data, head.ifNoneMatch, matches: tagBytes, weak: true)
        _ = EntityTags.list(data, head.ifMatch, matches: tagBytes, weak: false)
        _ = HTTPDate.parse(data, head.ifModifiedSince)
        let trusted = Networks(["0.0.0.0/0", "::/0"])!
        let peer = SocketAddress(family: 2, port: 1, bytes: (0x0100007F, 0))
        for header in [ClientAddress.Header.xForwardedFor, .forwarded] {
            _ = ClientAddress.resolve(data, head, peer: peer, trusted: trusted, header: header)
        }
        let preference = EncodingPreference.of(data, head)
        precondition((0...1000).contains(preference.gzip) && (0...1000).contains(preference.identity), "q-value out of range")

        guard head.hasBody else { return }
        let body = UnsafeRawBufferPointer(rebasing: data[length...])
        var whole = head.chunked ? BodyReader(chunkedWithMaxContent: 4096) : BodyReader(contentLength: head.contentLength)
        var split = whole
        let wholeResult = whole.consume(body)
        var splitResult = BodyReader.Result.needMore
        var offset = 0
        while offset < body.count {
            splitResult = split.consume(UnsafeRawBufferPointer(rebasing: body[offset..<(offset + 1)]))
            if case .done(let consumed) = splitResult {
                splitResult = .done(consumed: offset + consumed)
                break
            }
            if splitResult != .needMore { break }
            offset += 1
        }
        precondition(wholeResult == splitResult, "the body reader depends on how the bytes arrive")
    }
}
