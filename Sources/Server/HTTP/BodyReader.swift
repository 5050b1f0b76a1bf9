/// Reads past a request body (RFC 9112 sections 6 and 7.1): a Content-Length count of bytes, or a
/// chunked body with its extensions and trailer fields, so the next pipelined request parses from the
/// right byte. The server never needs a body's content, so the bytes are only checked and skipped.
///
/// A byte-level state machine over whatever arrives: no I/O, no allocation, any split of the input
/// gives the same result, so tests and the fuzzer can drive it alone.
public struct BodyReader: Sendable {
    public enum Result: Equatable, Sendable {
        /// Every byte given was consumed and more are needed.
        case needMore
        /// The body ended after `consumed` of the bytes given; the rest belong to the next request.
        case done(consumed: Int)
        /// The chunked framing is broken: the connection cannot be used any more (400 if not answered yet).
        case invalid
        /// The body's content went past `maxContent`.
        case tooLarge
    }

    /// Limits on what a chunked body may contain besides its data.
    public struct Limits: Sendable {
        /// Longest chunk-size line, extensions included.
        public var chunkLine: Int
        /// Most bytes of trailer fields, all together.
        public var trailerBytes: Int

        public init(chunkLine: Int = 4096, trailerBytes: Int = 16_384) {
            self.chunkLine = chunkLine
            self.trailerBytes = trailerBytes
        }
    }

    enum State: Sendable {
        /// Content-Length: this many bytes left.
        case fixed(Int64)
        /// At the start of a chunk-size line.
        case sizeStart
        /// Hex digits of the chunk size.
        case size
        /// After the size: chunk extensions up to CR.
        case extensions
        /// The LF of the chunk-size line; the size is known.
        case sizeLF
        /// Chunk data: this many bytes left.
        case data(Int64)
        /// The CR then LF after chunk data.
        case dataCR
        case dataLF
        /// At the start of a trailer line (CR here ends the body).
        case trailerStart
        /// Inside a trailer field line.
        case trailerLine
        /// LF of a trailer line.
        case trailerLF
        /// LF of the final empty line.
        case finalLF
        case finished
    }

    var state: State
    var chunkSize: Int64 = 0
    var lineLength = 0
    var trailerLength = 0
    /// Content bytes seen so far (chunk data, or the fixed length).
    public private(set) var contentLength: Int64 = 0
    let maxContent: Int64
    let limits: Limits

    /// A reader for a body of exactly `length` bytes.
    public init(contentLength length: Int64) {
        state = length > 0 ? .fixed(length) : .finished
        contentLength = length
        maxContent = Int64.max
        limits = Limits()
    }

    /// A reader for a chunked body whose data may total at most `maxContent` bytes (0: no limit).
    public init(chunkedWithMaxContent maxContent: Int64, limits: Limits = Limits()) {
        state = .sizeStart
        self.maxContent = maxContent > 0 ? maxContent : Int64.max
        self.limits = limits
    }

    public var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    /// Consumes body bytes from the front of `bytes`.
    public mutating func consume(_ bytes: UnsafeRawBufferPointer) -> Result {
        var index = 0
        let count = bytes.count
        while true {
            switch state {
            case .finished:
                return .done(consumed: index)
            case .fixed(let left):
                let take = Int(min(left, Int64(count - index)))
                index += take
                if left == Int64(take) {
                    state = .finished
                    return .done(consumed: index)
                }
                state = .fixed(left - Int64(take))
                return .needMore
            case .data(let left):
                let take = Int(min(left, Int64(count - index)))
                index += take
                if left == Int64(take) {
                    state = .dataCR
                } else {
                    state = .data(left - Int64(take))
                    return .needMore
                }
            default:
                guard index < count else { return .needMore }
                let byte = bytes[index]
                index += 1
                if let failure = step(byte) { return failure }
            }
        }
    }

    /// One byte of the chunked framing.
    mutating func step(_ byte: UInt8) -> Result? {
        switch state {
        case .sizeStart, .size:
            if let digit = BodyReader.hexValue(byte) {
                // 15 hex digits already hold more than any body we would accept.
                if chunkSize > (Int64.max >> 4) { return .invalid }
                chunkSize = chunkSize << 4 | Int64(digit)
                lineLength += 1
                if lineLength > limits.chunkLine { return .invalid }
                state = .size
                return nil
            }
            guard case .size = state else { return .invalid }  // no digits at all
            return afterSize(byte)
        case .extensions:
            lineLength += 1
            if lineLength > limits.chunkLine { return .invalid }
            if byte == 13 {
                state = .sizeLF
                return nil
            }
            // chunk-ext bytes: tokens, quoted strings, "=", ";" and whitespace; no controls.
            return byte == 9 || (byte >= 32 && byte != 127) ? nil : .invalid
        case .sizeLF:
            guard byte == 10 else { return .invalid }
            lineLength = 0
            if chunkSize == 0 {
                state = .trailerStart
                return nil
            }
            if contentLength > maxContent - chunkSize { return .tooLarge }
            contentLength += chunkSize
            state = .data(chunkSize)
            chunkSize = 0
            return nil
        case .dataCR:
            guard byte == 13 else { return .invalid }
            state = .dataLF
            return nil
        case .dataLF:
            guard byte == 10 else { return .invalid }
            state = .sizeStart
            return nil
        case .trailerStart:
            if byte == 13 {
                state = .finalLF
                return nil
            }
            // A trailer field line starts with a token byte (no obs-fold, no bare LF).
            guard RequestParser.isTokenByte(byte) else { return .invalid }
            state = .trailerLine
            return countTrailer()
        case .trailerLine:
            if byte == 13 {
                state = .trailerLF
                return countTrailer()
            }
            guard byte == 9 || (byte >= 32 && byte != 127) || byte >= 128 else { return .invalid }
            return countTrailer()
        case .trailerLF:
            guard byte == 10 else { return .invalid }
            state = .trailerStart
            return countTrailer()
        case .finalLF:
            guard byte == 10 else { return .invalid }
            state = .finished
            return nil
        case .fixed, .data, .finished:
            return nil
        }
    }

    /// The byte after the size digits: extensions (BWS then ";"), or the CR ending the line.
    mutating func afterSize(_ byte: UInt8) -> Result? {
        switch byte {
        case 13:
            state = .sizeLF
        case 59, 32, 9:  // ";" or BWS before it
            lineLength += 1
            state = .extensions
        default:
            return .invalid
        }
        return nil
    }

    mutating func countTrailer() -> Result? {
        trailerLength += 1
        return trailerLength > limits.trailerBytes ? .invalid : nil
    }

    @inline(__always)
    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 48...57: return byte - 48
        case 65...70: return byte - 55
        case 97...102: return byte - 87
        default: return nil
        }
    }
}
