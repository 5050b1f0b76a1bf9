import CBrotli
import CZlib
import CZstd
import Glibc

extension ContentCoding {
    /// What ends the ETag of a body compressed here (with the level after it) and a sidecar's name.
    var tag: StaticString {
        switch self {
        case .br: return "br"
        case .zstd: return "zst"
        case .gzip: return "gz"
        }
    }

    /// `.br`, `.zst`, `.gz`: the precompressed file beside the file.
    var sidecarSuffix: [UInt8] {
        switch self {
        case .br: return [46, 98, 114]
        case .zstd: return [46, 122, 115, 116]
        case .gzip: return [46, 103, 122]
        }
    }
}

/// What a request's Accept-Encoding allows (RFC 9110 section 12.5.3), as q-values in thousandths.
public struct EncodingPreference: Equatable, Sendable {
    /// Each coding's weight (0: not acceptable).
    public var gzip: Int
    public var br: Int
    public var zstd: Int
    /// identity's weight (0: the client refuses an uncompressed body).
    public var identity: Int

    public init(gzip: Int, br: Int = 0, zstd: Int = 0, identity: Int) {
        self.gzip = gzip
        self.br = br
        self.zstd = zstd
        self.identity = identity
    }

    /// No Accept-Encoding: any coding would do, and identity is what a server sends (as nginx does).
    public static let absent = EncodingPreference(gzip: 0, identity: 1000)

    /// gzip is chosen when it weighs at least as much as identity (a tie goes to the smaller body).
    public var prefersGzip: Bool { gzip > 0 && gzip >= identity }

    public func weight(_ coding: ContentCoding) -> Int {
        switch coding {
        case .br: return br
        case .zstd: return zstd
        case .gzip: return gzip
        }
    }

    /// The coding to send, of those `available` says can be had, in `order`: the one the client weighs
    /// most, a tie going to the earlier in `order` (the smaller body, by default), and only when it
    /// weighs at least as much as identity (a tie again going to the smaller body). Nil: identity.
    public func choose(_ order: [ContentCoding], available: (ContentCoding) -> Bool) -> ContentCoding? {
        var best: ContentCoding?
        var bestWeight = 0
        for coding in order {
            let weight = weight(coding)
            if weight > bestWeight && available(coding) {
                best = coding
                bestWeight = weight
            }
        }
        return bestWeight >= identity ? best : nil
    }

    /// Reads Accept-Encoding from the parsed head: every field line of it, as one list.
    public static func of(_ bytes: UnsafeRawBufferPointer, _ head: RequestHead) -> EncodingPreference {
        guard head.sentAcceptEncoding else { return .absent }
        var scan = Scan()
        if head.repeatedAcceptEncoding {
            for span in RequestParser.fieldValues(bytes, headLength: head.headLength, name: "accept-encoding") {
                scan.read(bytes, span)
            }
        } else {
            scan.read(bytes, head.acceptEncoding)
        }
        return scan.result
    }

    /// The weights listed for gzip (or x-gzip), identity and `*`; -1 where a coding is not listed.
    struct Scan {
        var gzip = -1
        var br = -1
        var zstd = -1
        var identity = -1
        var star = -1

        var result: EncodingPreference {
            // An empty field (nothing listed) means identity only. A coding not listed takes `*`'s
            // weight; identity is acceptable unless "identity;q=0", or "*;q=0" without identity, says not.
            let other = max(star, 0)
            return EncodingPreference(
                gzip: gzip >= 0 ? gzip : other, br: br >= 0 ? br : other, zstd: zstd >= 0 ? zstd : other,
                identity: identity >= 0 ? identity : star >= 0 ? star : 1000)
        }

        /// One field value: `coding [; q=qvalue] [; other params], ...`.
        mutating func read(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan) {
            var index = span.start
            let end = span.end
            while index < end {
                while index < end, bytes[index] == 32 || bytes[index] == 9 || bytes[index] == 44 { index += 1 }
                guard index < end else { return }
                let nameStart = index
                while index < end, RequestParser.isTokenByte(bytes[index]) { index += 1 }
                let nameEnd = index
                var weight = 1000
                // Parameters up to the next comma; only q counts.
                while index < end, bytes[index] != 44 {
                    if bytes[index] == 59 {
                        index += 1
                        while index < end, bytes[index] == 32 || bytes[index] == 9 { index += 1 }
                        if index + 1 < end, bytes[index] | 0x20 == 113, bytes[index + 1] == 61 {  // "q="
                            index += 2
                            let valueStart = index
                            while index < end, bytes[index] != 44, bytes[index] != 59, bytes[index] != 32, bytes[index] != 9 { index += 1 }
                            weight = Scan.qvalue(bytes, valueStart, index) ?? 0
                            continue
                        }
                    }
                    index += 1
                }
                let length = nameEnd - nameStart
                guard length > 0 else { continue }
                if Scan.equals(bytes, nameStart, length, "gzip") || Scan.equals(bytes, nameStart, length, "x-gzip") {
                    gzip = max(gzip, weight)
                } else if Scan.equals(bytes, nameStart, length, "br") {
                    br = max(br, weight)
                } else if Scan.equals(bytes, nameStart, length, "zstd") {
                    zstd = max(zstd, weight)
                } else if Scan.equals(bytes, nameStart, length, "identity") {
                    identity = max(identity, weight)
                } else if length == 1 && bytes[nameStart] == 42 {
                    star = max(star, weight)
                }
            }
        }

        /// `0[.ddd]` or `1[.000]` in thousandths; nil when malformed (the coding then counts as refused).
        static func qvalue(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int? {
            guard start < end, end - start <= 5, bytes[start] == 48 || bytes[start] == 49 else { return nil }
            var value = Int(bytes[start] - 48) * 1000
            if end - start == 1 { return value }
            guard bytes[start + 1] == 46 else { return nil }
            var scale = 100
            for index in (start + 2)..<end {
                let digit = bytes[index]
                guard digit >= 48 && digit <= 57 else { return nil }
                value += Int(digit - 48) * scale
                scale /= 10
            }
            return value > 1000 ? nil : value
        }

        static func equals(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ length: Int, _ word: StaticString) -> Bool {
            guard length == word.utf8CodeUnitCount else { return false }
            for offset in 0..<length where bytes[start + offset] | 0x20 != word.utf8Start[offset] { return false }
            return true
        }
    }
}

/// A zlib deflate stream writing the gzip format (RFC 1952), on the heap: zlib keeps a pointer back to
/// its `z_stream` and refuses one that moved.
final class GzipDeflater {
    let stream: UnsafeMutablePointer<z_stream>

    init?(level: Int) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // windowBits 15 + 16: gzip wrapper; memLevel 8 (zlib's default): 256 KiB of state.
        guard czlib_deflateInit2(stream, Int32(level), Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) == Z_OK else {
            stream.deallocate()
            return nil
        }
    }

    deinit {
        deflateEnd(stream)
        stream.deallocate()
    }

    /// Compresses `count` bytes from `input` into `output`, `finish` ending the stream; returns the
    /// number of bytes written and whether the stream ended. Input not consumed stays in `stream`.
    func deflateStep(output: UnsafeMutableRawPointer, capacity: Int, finish: Bool) -> (Int, Bool) {
        stream.pointee.next_out = output.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(capacity)
        let result = deflate(stream, finish ? Z_FINISH : Z_NO_FLUSH)
        return (capacity - Int(stream.pointee.avail_out), result == Z_STREAM_END)
    }

    func setInput(_ input: UnsafeRawPointer, _ count: Int) {
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(count)
    }

    var pendingInput: Int { Int(stream.pointee.avail_in) }

    /// The whole of `file` compressed, in a buffer of exactly its length; nil if the file could not be
    /// read in full (it changed under us). `scratch` holds input read from the file.
    func compressWhole(_ file: CachedFile, scratch: UnsafeMutableRawBufferPointer) -> UnsafeMutableRawBufferPointer? {
        deflateReset(stream)
        let bound = Int(deflateBound(stream, uLong(file.size)))
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: bound, alignment: 16)
        var produced = 0
        var offset: Int64 = 0
        var done = false
        while !done {
            if pendingInput == 0 && offset < file.size {
                if let body = file.body {
                    setInput(body.baseAddress!, body.count)
                    offset = file.size
                } else {
                    let want = Int(min(Int64(scratch.count), file.size - offset))
                    let count = pread(file.fd, scratch.baseAddress!, want, off_t(offset))
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else {
                        output.deallocate()
                        return nil
                    }
                    setInput(scratch.baseAddress!, count)
                    offset += Int64(count)
                }
            }
            let (written, ended) = deflateStep(
                output: output.baseAddress! + produced, capacity: bound - produced, finish: offset >= file.size)
            produced += written
            done = ended
            if !ended && written == 0 && pendingInput == 0 && offset >= file.size {
                output.deallocate()  // cannot happen with deflateBound's room; never loop forever
                return nil
            }
        }
        let exact = UnsafeMutableRawBufferPointer.allocate(byteCount: produced, alignment: 16)
        if produced > 0 { exact.copyMemory(from: UnsafeRawBufferPointer(rebasing: output[0..<produced])) }
        output.deallocate()
        return exact
    }
}

/// A streaming encoder: input set in pieces, output taken in steps, `finish` once all input is set.
protocol StreamEncoder: AnyObject {
    func setInput(_ input: UnsafeRawPointer, _ count: Int)
    /// Input set and not consumed yet.
    var pendingInput: Int { get }
    /// Writes up to `capacity` bytes to `output`; returns how many and whether the stream ended.
    func step(output: UnsafeMutableRawPointer, capacity: Int, finish: Bool) -> (Int, Bool)
}

extension GzipDeflater: StreamEncoder {
    func step(output: UnsafeMutableRawPointer, capacity: Int, finish: Bool) -> (Int, Bool) {
        deflateStep(output: output, capacity: capacity, finish: finish)
    }
}

/// Brotli's streaming encoder (window 4 MiB).
final class BrotliStreamEncoder: StreamEncoder {
    let state: OpaquePointer
    private var next: UnsafePointer<UInt8>?
    private var available = 0

    init?(quality: Int, sizeHint: Int64) {
        guard let state = BrotliEncoderCreateInstance(nil, nil, nil) else { return nil }
        self.state = state
        _ = BrotliEncoderSetParameter(state, BROTLI_PARAM_QUALITY, UInt32(quality))
        _ = BrotliEncoderSetParameter(state, BROTLI_PARAM_LGWIN, UInt32(BROTLI_DEFAULT_WINDOW))
        _ = BrotliEncoderSetParameter(state, BROTLI_PARAM_SIZE_HINT, UInt32(clamping: sizeHint))
    }

    deinit { BrotliEncoderDestroyInstance(state) }

    func setInput(_ input: UnsafeRawPointer, _ count: Int) {
        next = input.assumingMemoryBound(to: UInt8.self)
        available = count
    }

    var pendingInput: Int { available }

    func step(output: UnsafeMutableRawPointer, capacity: Int, finish: Bool) -> (Int, Bool) {
        var out: UnsafeMutablePointer<UInt8>? = output.assumingMemoryBound(to: UInt8.self)
        var room = capacity
        let operation = finish ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_PROCESS
        guard BrotliEncoderCompressStream(state, operation, &available, &next, &room, &out, nil) == BROTLI_TRUE else {
            return (capacity - room, false)
        }
        return (capacity - room, BrotliEncoderIsFinished(state) == BROTLI_TRUE && BrotliEncoderHasMoreOutput(state) == BROTLI_FALSE)
    }
}

/// zstd's streaming encoder, its window at most 8 MiB (RFC 9659).
final class ZstdStreamEncoder: StreamEncoder {
    let context: OpaquePointer
    private var input = ZSTD_inBuffer(src: nil, size: 0, pos: 0)

    init?(level: Int, sizeHint: Int64) {
        guard let context = ZSTD_createCCtx() else { return nil }
        self.context = context
        _ = ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level))
        _ = ZSTD_CCtx_setParameter(context, ZSTD_c_windowLog, 23)
        _ = ZSTD_CCtx_setPledgedSrcSize(context, UInt64(max(sizeHint, 0)))
    }

    deinit { ZSTD_freeCCtx(context) }

    func setInput(_ pointer: UnsafeRawPointer, _ count: Int) {
        input = ZSTD_inBuffer(src: pointer, size: count, pos: 0)
    }

    var pendingInput: Int { input.size - input.pos }

    func step(output: UnsafeMutableRawPointer, capacity: Int, finish: Bool) -> (Int, Bool) {
        var out = ZSTD_outBuffer(dst: output, size: capacity, pos: 0)
        let remaining = ZSTD_compressStream2(context, &out, &input, finish ? ZSTD_e_end : ZSTD_e_continue)
        if ZSTD_isError(remaining) != 0 { return (out.pos, false) }
        return (out.pos, finish && remaining == 0)
    }
}

/// A response body compressed while it is sent, for files too large to compress whole: reads the file
/// a piece at a time, compresses it (gzip, brotli or zstd, at the streaming level), and for HTTP/1.1
/// frames the output as chunks of the chunked transfer coding. Memory is bounded: the encoder's state
/// and two 32 KiB buffers, whatever the file's size.
final class CompressionStream {
    let source: CachedFile
    let encoder: any StreamEncoder
    var inputOffset: Int64 = 0
    var finished = false
    let input: UnsafeMutableRawPointer
    let output: UnsafeMutableRawPointer
    static let inputCapacity = 32_768
    static let dataCapacity = 32_768
    /// Room before the data for the chunk size line, and after it for CRLF and the last chunk.
    static let prefixRoom = 10
    static let suffixRoom = 7
    /// The response's access log line, written with the compressed length when the body ends or is
    /// dropped (a closed connection, a reset stream).
    var pendingLog: AccessLog.PendingLine?

    init?(source: CachedFile, coding: ContentCoding, level: Int) {
        let encoder: (any StreamEncoder)?
        switch coding {
        case .gzip: encoder = GzipDeflater(level: level)
        case .br: encoder = BrotliStreamEncoder(quality: level, sizeHint: source.size)
        case .zstd: encoder = ZstdStreamEncoder(level: level, sizeHint: source.size)
        }
        guard let encoder else { return nil }
        self.source = source
        self.encoder = encoder
        input = .allocate(byteCount: CompressionStream.inputCapacity, alignment: 16)
        output = .allocate(byteCount: CompressionStream.prefixRoom + CompressionStream.dataCapacity + CompressionStream.suffixRoom, alignment: 16)
    }

    deinit {
        input.deallocate()
        output.deallocate()
        pendingLog?.finish()
    }

    /// The next piece of the compressed body as it is (HTTP/2 frames it in DATA frames): up to
    /// `dataCapacity` bytes, empty only once `finished`. `consumed` is how much of the file it read.
    /// Nil when the file cannot be read.
    func nextData(consumed: inout Int) -> UnsafeRawBufferPointer? {
        let data = output + CompressionStream.prefixRoom
        var produced = 0
        while produced < CompressionStream.dataCapacity && !finished {
            if encoder.pendingInput == 0 && inputOffset < source.size {
                let want = Int(min(Int64(CompressionStream.inputCapacity), source.size - inputOffset))
                let count = pread(source.fd, input, want, off_t(inputOffset))
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return nil }  // the file shrank: the body cannot be completed
                encoder.setInput(input, count)
                inputOffset += Int64(count)
                consumed += count
            }
            let (written, ended) = encoder.step(
                output: data + produced, capacity: CompressionStream.dataCapacity - produced, finish: inputOffset >= source.size)
            produced += written
            finished = ended
            // An encoder holds back output until it has enough; with input left to read, read more.
            if written == 0 && encoder.pendingInput == 0 && inputOffset >= source.size && !ended { return nil }
        }
        pendingLog?.bodyBytes += Int64(produced)
        return UnsafeRawBufferPointer(start: data, count: produced)
    }

    /// The next piece of the body framed for HTTP/1.1: one chunk (`SIZE CRLF data CRLF`), with the
    /// last chunk (`0 CRLF CRLF`) after the final data. Nil when the file cannot be read.
    func nextChunk(consumed: inout Int) -> UnsafeRawBufferPointer? {
        guard let data = nextData(consumed: &consumed) else { return nil }
        let produced = data.count
        var start = CompressionStream.prefixRoom
        var end = CompressionStream.prefixRoom
        if produced > 0 {
            // "SIZE\r\n" right before the data, "\r\n" after it.
            start -= 2
            output.storeBytes(of: 0x0a0d, toByteOffset: start, as: UInt16.self)
            var size = produced
            let hex: StaticString = "0123456789abcdef"
            repeat {
                start -= 1
                output.storeBytes(of: hex.utf8Start[size & 15], toByteOffset: start, as: UInt8.self)
                size >>= 4
            } while size > 0
            end += produced
            output.storeBytes(of: 0x0a0d, toByteOffset: end, as: UInt16.self)
            end += 2
        }
        if finished {
            for byte: UInt8 in [48, 13, 10, 13, 10] {  // "0\r\n\r\n"
                output.storeBytes(of: byte, toByteOffset: end, as: UInt8.self)
                end += 1
            }
        }
        return UnsafeRawBufferPointer(start: output + start, count: end - start)
    }
}

/// Each worker's compressed bodies: one per file version (device, inode, size, modification time) and
/// level, within a byte budget, the least recently used dropped first. A file is compressed once and
/// then served from memory with its Content-Length until it changes or is pushed out. One per worker,
/// shared by every site (a file version is the same bytes whichever site reaches it), with the one
/// deflate state whole-file compression reuses.
final class CompressedCache {
    /// One file version in one coding, whatever its level: a body at a better level replaces the one
    /// made first.
    struct Key: Hashable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modified: Int64
        var coding: ContentCoding
    }

    let budget: Int
    private(set) var bytes = 0
    private var entries: [Key: (file: CachedFile, used: UInt64)] = [:]
    private var clock: UInt64 = 0
    /// Made on the first compression and reused (`deflateReset`, or made again for another level),
    /// with its 64 KiB input buffer.
    private var deflater: GzipDeflater?
    private var deflaterLevel = 0
    private var deflateInput: UnsafeMutableRawBufferPointer?
    /// zstd's compression context, made on first use and reused.
    private var zstdContext: OpaquePointer?

    init(budget: Int) {
        self.budget = budget
    }

    deinit {
        deflateInput?.deallocate()
        if let zstdContext { ZSTD_freeCCtx(zstdContext) }
    }

    /// `file` compressed whole in `coding` at `level` (gzip with the shared deflate state, zstd with the
    /// shared context); nil when the library fails or the file changed while it was read.
    func compress(_ file: CachedFile, coding: ContentCoding, level: Int) -> UnsafeMutableRawBufferPointer? {
        switch coding {
        case .gzip:
            if deflater == nil || deflaterLevel != level {
                deflater = GzipDeflater(level: level)
                deflaterLevel = level
            }
            if deflateInput == nil { deflateInput = .allocate(byteCount: 65_536, alignment: 16) }
            guard let deflater, let deflateInput else { return nil }
            return deflater.compressWhole(file, scratch: deflateInput)
        case .br, .zstd:
            return withWholeInput(file) { input in
                if coding == .br { return CompressedCache.brotli(input, quality: level) }
                if zstdContext == nil { zstdContext = ZSTD_createCCtx() }
                return zstdContext.flatMap { CompressedCache.zstd(input, level: level, context: $0) }
            }
        }
    }

    /// Calls `body` with all of `file`'s bytes: its inline copy, or the file read whole (a body that
    /// is compressed whole is at most `cache_file_max`).
    private func withWholeInput(
        _ file: CachedFile, _ body: (UnsafeRawBufferPointer) -> UnsafeMutableRawBufferPointer?
    ) -> UnsafeMutableRawBufferPointer? {
        if let inline = file.body { return body(UnsafeRawBufferPointer(inline)) }
        let size = Int(file.size)
        let input = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 16)
        defer { input.deallocate() }
        guard readFully(file.fd, input, size, at: 0) else { return nil }
        return body(UnsafeRawBufferPointer(start: input, count: size))
    }

    /// Brotli (RFC 7932) of `input` at `quality` (0-11), window 4 MiB (brotli's default), in a buffer
    /// of exactly its length.
    static func brotli(_ input: UnsafeRawBufferPointer, quality: Int) -> UnsafeMutableRawBufferPointer? {
        var length = BrotliEncoderMaxCompressedSize(input.count)
        if length == 0 { length = input.count + 1024 }
        let output = UnsafeMutablePointer<UInt8>.allocate(capacity: length)
        defer { output.deallocate() }
        let source = input.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(output)
        guard BrotliEncoderCompress(Int32(quality), BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, input.count, source, &length, output) == BROTLI_TRUE
        else { return nil }
        let exact = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 16)
        exact.copyMemory(from: UnsafeRawBufferPointer(start: output, count: length))
        return exact
    }

    /// Zstandard (RFC 8878) of `input` at `level`, with a reused `context`; the window is at most
    /// 8 MiB (windowLog 23), as RFC 9659 asks of HTTP.
    static func zstd(_ input: UnsafeRawBufferPointer, level: Int, context: OpaquePointer) -> UnsafeMutableRawBufferPointer? {
        _ = ZSTD_CCtx_reset(context, ZSTD_reset_session_and_parameters)
        _ = ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level))
        _ = ZSTD_CCtx_setParameter(context, ZSTD_c_windowLog, 23)
        let bound = ZSTD_compressBound(input.count)
        let output = UnsafeMutableRawPointer.allocate(byteCount: bound, alignment: 16)
        defer { output.deallocate() }
        let length = ZSTD_compress2(context, output, bound, input.baseAddress, input.count)
        guard ZSTD_isError(length) == 0 else { return nil }
        let exact = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 16)
        exact.copyMemory(from: UnsafeRawBufferPointer(start: output, count: length))
        return exact
    }

    var count: Int { entries.count }

    static func key(_ file: CachedFile, coding: ContentCoding) -> Key {
        Key(device: file.device, inode: file.inode, size: file.size,
            modified: file.modifiedSeconds &* 1_000_000_000 &+ file.modifiedNanoseconds, coding: coding)
    }

    /// The thread that makes the best levels (nil: none could be made; the first levels stay).
    let helper: CompressionHelper? = CompressionHelper()

    /// Puts the bodies the helper finished in place of the ones made first, for the versions still
    /// cached (one pushed out in the meantime is not brought back).
    func takeFinished() {
        guard let helper else { return }
        for done in helper.takeFinished() {
            guard let body = done.body else { continue }
            guard let current = entries[done.job.key], current.file.level < done.job.level else {
                body.deallocate()
                continue
            }
            let form = CachedFile(compressed: done.job.source, coding: done.job.coding, level: done.job.level, body: body)
            replace(form, key: done.job.key)
        }
    }

    /// `form` in place of the entry under `key`, keeping its place in the least-recently-used order.
    private func replace(_ form: CachedFile, key: Key) {
        guard let old = entries[key] else { return }
        let cost = form.memoryCost
        bytes += cost - old.file.memoryCost
        entries[key] = (form, old.used)
        while bytes > budget, let oldest = entries.min(by: { $0.value.used < $1.value.used }) {
            entries.removeValue(forKey: oldest.key)
            bytes -= oldest.value.file.memoryCost
        }
    }

    func contains(_ key: Key) -> Bool { entries[key] != nil }

    func lookup(_ key: Key) -> CachedFile? {
        guard let entry = entries[key] else { return nil }
        clock += 1
        entries[key] = (entry.file, clock)
        return entry.file
    }

    /// Keeps `file` (a compressed body), dropping the least recently used until it fits. One larger than
    /// the whole budget is not kept (the response in flight still holds it).
    func insert(_ file: CachedFile, key: Key) {
        let cost = file.memoryCost
        guard cost <= budget else { return }
        if let old = entries.removeValue(forKey: key) { bytes -= old.file.memoryCost }
        while bytes + cost > budget, let oldest = entries.min(by: { $0.value.used < $1.value.used }) {
            // A linear scan, but only when a new body is added, which costs a compression anyway.
            entries.removeValue(forKey: oldest.key)
            bytes -= oldest.value.file.memoryCost
        }
        clock += 1
        entries[key] = (file, clock)
        bytes += cost
    }
}

/// A site's compressed forms: which representation a request's Accept-Encoding gets (the file, a
/// sidecar, or a form compressed here), and the forms compressed whole from the worker's
/// compressed-body cache (shared by the sites; this holds a reference).
final class Compressor {
    let settings: ServerConfig.GzipSettings
    let cache: CompressedCache

    init(settings: ServerConfig.GzipSettings, cache: CompressedCache) {
        self.settings = settings
        self.cache = cache
    }

    /// The representation of `file` for this request's Accept-Encoding: the acceptable coding the client
    /// weighs most (ties to the earlier in `compression.encodings`) that a sidecar or this server can
    /// give, when it weighs at least as much as identity; else the file; nil (406) when the client
    /// refuses identity and no acceptable form exists (RFC 9110 section 12.5.3: the only case a 406 is
    /// right).
    func negotiate(_ file: CachedFile, _ head: RequestHead, _ bytes: UnsafeRawBufferPointer) -> CachedFile? {
        let preference = EncodingPreference.of(bytes, head)
        if file.varies {
            // A Range is answered from the file's own bytes (or a sidecar's), never from bytes compressed
            // here; HTTP/1.0 has no chunked coding, so a file too large to compress whole goes as it is.
            let rangeRequest = head.method == .get && !head.range.isEmpty && preference.identity > 0
            let whole = file.size <= Int64(settings.cacheFileMax)
            let canMake = file.compressible && !rangeRequest
            let http11 = head.minorVersion == 1
            let chosen = preference.choose(settings.encodings) { coding in
                file.sidecar(coding) != nil || (canMake && (whole || http11))
            }
            if let chosen {
                // The form's headers are what a streamed body is sent with, so its ETag names the
                // streaming level; a body compressed whole brings its own.
                return file.sidecar(chosen) ?? file.form(chosen, level: whole ? settings.level(chosen) : settings.streamLevel(chosen))
            }
        }
        return preference.identity > 0 ? file : nil
    }

    /// `file` compressed whole in `coding`: from the compressed cache, or compressed now at the first
    /// level and kept there, the best level following from the helper thread.
    func compressedForm(_ file: CachedFile, coding: ContentCoding) -> CachedFile? {
        let key = CompressedCache.key(file, coding: coding)
        if let cached = cache.lookup(key) { return cached }
        let level = settings.level(coding)
        guard let body = cache.compress(file, coding: coding, level: level) else { return nil }
        let form = CachedFile(compressed: file, coding: coding, level: level, body: body)
        cache.insert(form, key: key)
        let best = settings.bestLevel(coding)
        // Only for a body the cache kept (with `gzip.cache: 0`, or one above the budget, a better body
        // would have nowhere to go).
        if best > level, cache.contains(key), let helper = cache.helper {
            helper.submit(CompressionHelper.Job(source: file, coding: coding, level: best, key: key))
        }
        return form
    }
}
