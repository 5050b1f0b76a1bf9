import Testing

@testable import Server

@Suite struct HTTPDateTests {
    func format(_ seconds: Int64) -> String {
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 64)
        defer { buffer.deallocate() }
        var writer = ByteWriter(base: buffer, capacity: 64)
        HTTPDate.write(seconds, into: &writer)
        return String(decoding: UnsafeBufferPointer(start: buffer, count: writer.count), as: UTF8.self)
    }

    @Test func imfFixdate() {
        #expect(format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")  // RFC 9110 5.6.7's example
        #expect(format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(format(951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
        #expect(format(4_102_444_799) == "Thu, 31 Dec 2099 23:59:59 GMT")
    }
}

@Suite struct MediaTypeTests {
    @Test(arguments: [
        ("index.html", "text/html; charset=utf-8"), ("app.mjs", "text/javascript; charset=utf-8"),
        ("m.wasm", "application/wasm"), ("p.webp", "image/webp"), ("p.AVIF", "image/avif"),
        ("f.woff2", "font/woff2"), ("noextension", "application/octet-stream"), ("dir.d/file", "application/octet-stream"),
    ])
    func byExtension(_ name: String, _ type: String) {
        let bytes = Array(name.utf8)
        let found = bytes.withUnsafeBufferPointer { MediaTypes.forPath($0.baseAddress!, length: $0.count) }
        #expect(found.description == type)
    }
}

@Suite struct ScalingPolicyTests {
    @Test func growsAfterTwoBusyTicksWithDoublingBursts() {
        var policy = ScalingPolicy(minimum: 1, maximum: 16, connectionsPerWorker: 100, idleTicks: 3)
        #expect(policy.decide(workers: 1, load: 90, queued: 0) == .hold)
        #expect(policy.decide(workers: 1, load: 90, queued: 0) == .spawn(1))
        #expect(policy.decide(workers: 2, load: 190, queued: 0) == .spawn(2))
        #expect(policy.decide(workers: 4, load: 390, queued: 0) == .spawn(4))
        #expect(policy.decide(workers: 8, load: 790, queued: 0) == .spawn(8))
        #expect(policy.decide(workers: 16, load: 1590, queued: 0) == .hold)  // at the maximum
    }

    @Test func aQueueMeansBusy() {
        var policy = ScalingPolicy(minimum: 1, maximum: 4, connectionsPerWorker: 1000, idleTicks: 3)
        _ = policy.decide(workers: 1, load: 0, queued: 5)
        #expect(policy.decide(workers: 1, load: 0, queued: 5) == .spawn(1))
    }

    @Test func shrinksOneAtATimeAfterTheIdlePeriod() {
        var policy = ScalingPolicy(minimum: 1, maximum: 4, connectionsPerWorker: 100, idleTicks: 3)
        #expect(policy.decide(workers: 3, load: 10, queued: 0) == .hold)
        #expect(policy.decide(workers: 3, load: 10, queued: 0) == .hold)
        #expect(policy.decide(workers: 3, load: 10, queued: 0) == .retire)
        #expect(policy.decide(workers: 2, load: 10, queued: 0) == .hold)
        #expect(policy.decide(workers: 1, load: 0, queued: 0) == .hold)  // never below the minimum
    }

    @Test func refillsToTheMinimumAtOnce() {
        var policy = ScalingPolicy(minimum: 3, maximum: 4, connectionsPerWorker: 100, idleTicks: 3)
        #expect(policy.decide(workers: 1, load: 0, queued: 0) == .spawn(2))
    }
}

@Suite struct RestartPolicyTests {
    @Test func backoffDoublesWithJitterAndStopsAtTheIntensity() {
        let policy = RestartPolicy(baseDelay: 100, maxDelay: 1000, intensity: 4, period: 60_000)
        var history: [Int64] = []
        #expect(policy.nextDelay(now: 0, history: &history, random: 1) == 100)
        #expect(policy.nextDelay(now: 10, history: &history, random: 0) == 100)  // ceiling 200, jitter floor
        #expect(policy.nextDelay(now: 20, history: &history, random: 1) == 400)
        #expect(policy.nextDelay(now: 30, history: &history, random: 1) == 800)
        #expect(policy.nextDelay(now: 40, history: &history, random: 1) == nil)  // fifth within the period
    }

    @Test func oldRestartsLeaveTheWindow() {
        let policy = RestartPolicy(baseDelay: 100, maxDelay: 1000, intensity: 2, period: 1000)
        var history: [Int64] = []
        _ = policy.nextDelay(now: 0, history: &history, random: 1)
        _ = policy.nextDelay(now: 100, history: &history, random: 1)
        #expect(policy.nextDelay(now: 5000, history: &history, random: 1) == 100)
    }
}

import Foundation
import Glibc

/// The fallback walk used where openat2 is missing: same answers as openat2, symlinks refused.
@Suite struct BeneathRootTests {
    @Test func theWalkNeverLeavesTheRoot() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-beneath-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("a/b"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "x".write(to: directory.appendingPathComponent("a/b/file.txt"), atomically: true, encoding: .utf8)
        symlink("/etc", directory.appendingPathComponent("a/out").path)
        symlink("b/file.txt", directory.appendingPathComponent("a/in").path)
        let root = open(directory.path, O_RDONLY | O_DIRECTORY)
        defer { close(root) }
        func walk(_ path: String) -> Int32 {
            let fd = path.withCString { BeneathRoot.walk(root, UnsafeRawPointer($0).assumingMemoryBound(to: UInt8.self), flags: O_RDONLY) }
            let code = fd >= 0 ? 0 : errno
            if fd >= 0 { close(fd) }
            return code
        }
        #expect(walk("a/b/file.txt") == 0)
        #expect(walk(".") == 0)
        #expect(walk("a/missing") == ENOENT)
        #expect(walk("a/out/hostname") == ELOOP)  // a symlink as a directory
        #expect(walk("a/in") == ELOOP)  // a symlink as the file
        #expect(walk("a/b/file.txt/x") == ENOTDIR || walk("a/b/file.txt/x") == ELOOP)
    }
}

/// Response field names go into HPACK in lowercase (RFC 9113 section 8.2.1), lowered eight bytes at a
/// time: every length and colon position, every byte value, and a limit that ends before the colon.
@Suite struct LowercaseNameTests {
    func lowered(_ line: [UInt8], limit: Int? = nil) -> (Int?, [UInt8]) {
        let target = UnsafeMutablePointer<UInt8>.allocate(capacity: line.count + 8)
        defer { target.deallocate() }
        target.initialize(repeating: 0, count: line.count + 8)
        let length = line.withUnsafeBufferPointer { HTTP2Codec.lowercaseName($0.baseAddress!, limit ?? line.count, into: target) }
        return (length, Array(UnsafeBufferPointer(start: target, count: length ?? 0)))
    }

    @Test func everyLengthAndColonPosition() {
        let letters = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_0123456789@[`{~".utf8)
        for length in 0...40 {
            let name = (0..<length).map { letters[($0 * 7 + length) % letters.count] }
            let line = name + Array(": Value: X\r\n".utf8)
            let (found, bytes) = lowered(line)
            #expect(found == length, "length \(length)")
            #expect(bytes == name.map { $0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0 }, "length \(length)")
        }
    }

    @Test func everyByteValue() {
        for byte in 0...255 where byte != 0x3a {
            let line = [UInt8](repeating: UInt8(byte), count: 11) + Array(":x".utf8)
            let (found, bytes) = lowered(line)
            let expected: UInt8 = byte >= 65 && byte <= 90 ? UInt8(byte) | 0x20 : UInt8(byte)
            #expect(found == 11 && bytes == [UInt8](repeating: expected, count: 11), "byte \(byte)")
        }
    }

    @Test func inPlaceOnlyTheNameChanges() {
        for length in 0...20 {
            var line = Array(String(repeating: "X", count: length).utf8) + Array(":ABC Def: GHI\r\n".utf8)
            let found = line.withUnsafeMutableBufferPointer { HTTP2Codec.lowercaseName($0.baseAddress!, $0.count, into: $0.baseAddress!) }
            #expect(found == length)
            #expect(String(decoding: line, as: UTF8.self) == String(repeating: "x", count: length) + ":ABC Def: GHI\r\n", "length \(length)")
        }
    }

    @Test func noColonWithinTheLimit() {
        #expect(lowered(Array("Content-Type: text/html".utf8), limit: 12).0 == nil)
        #expect(lowered(Array("Content-Type: text/html".utf8), limit: 13).0 == 12)
        #expect(lowered(Array("no colon at all here".utf8)).0 == nil)
        #expect(lowered(Array(":empty name".utf8)).0 == 0)
    }
}
