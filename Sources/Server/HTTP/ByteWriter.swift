/// Appends bytes into memory it does not own (a worker's output or log buffer); no allocation.
///
/// Writes past `capacity` are dropped and set `overflowed`, so a caller checks once at the end.
struct ByteWriter {
    let base: UnsafeMutablePointer<UInt8>
    let capacity: Int
    var count = 0
    var overflowed = false

    init(base: UnsafeMutablePointer<UInt8>, capacity: Int) {
        self.base = base
        self.capacity = capacity
    }

    @inline(__always)
    mutating func append(_ literal: StaticString) {
        append(literal.utf8Start, literal.utf8CodeUnitCount)
    }

    @inline(__always)
    mutating func append(_ bytes: UnsafePointer<UInt8>, _ length: Int) {
        guard count + length <= capacity else {
            overflowed = true
            return
        }
        (base + count).update(from: bytes, count: length)
        count += length
    }

    @inline(__always)
    mutating func append(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan) {
        guard span.count > 0 else { return }
        append(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + span.start, span.count)
    }

    @inline(__always)
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        append(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count)
    }

    /// What has been written so far.
    var written: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    @inline(__always)
    mutating func append(byte: UInt8) {
        guard count < capacity else {
            overflowed = true
            return
        }
        base[count] = byte
        count += 1
    }

    /// Appends a non-negative number in decimal.
    mutating func appendDecimal(_ value: Int64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch
        withUnsafeMutableBytes(of: &digits) { scratch in
            var remaining = UInt64(max(0, value))
            var position = scratch.count
            repeat {
                position -= 1
                scratch[position] = UInt8(48 + remaining % 10)
                remaining /= 10
            } while remaining > 0
            append(scratch.baseAddress!.assumingMemoryBound(to: UInt8.self) + position, scratch.count - position)
        }
    }

    /// Appends a number in lowercase hexadecimal.
    mutating func appendHex(_ value: UInt64) {
        var started = false
        for shift in stride(from: 60, through: 0, by: -4) {
            let nibble = UInt8((value >> UInt64(shift)) & 0xF)
            if nibble != 0 || started || shift == 0 {
                started = true
                append(byte: nibble < 10 ? 48 + nibble : 87 + nibble)
            }
        }
    }
}
