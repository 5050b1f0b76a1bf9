import CCrypt
import Glibc

/// An htpasswd file: `user:hash` lines (blank lines and `#` comments skipped), each hash one the
/// system's libcrypt verifies and none plain text: bcrypt (`$2b$`, `$2y$`, `$2a$`), SHA-512-crypt
/// (`$6$`) or yescrypt (`$y$`). Apache's `htpasswd -B` and `mkpasswd` write these.
///
/// Read again when the file changes (checked every `file_cache.valid` at most), so adding a user takes
/// no reload; a file that stops parsing keeps the users it had, with a warning.
final class PasswordFile {
    let path: String
    private(set) var users: [[UInt8]: [CChar]] = [:]
    /// Bumped at each change, so credentials verified against an older version are verified again.
    private(set) var generation: UInt64 = 0
    private var identity = (UInt64(0), UInt64(0), Int64(0), Int64(0))
    private var checkedAt: Int64 = -1_000_000

    struct Problem: Error, CustomStringConvertible {
        let description: String
    }

    init(path: String) {
        self.path = path
    }

    /// The file's users and hashes, or what is wrong with it (naming the file and line).
    static func read(_ path: String) -> Result<[(String, String)], Problem> {
        guard let file = fopen(path, "r") else {
            return .failure(Problem(description: "cannot read the htpasswd file \(path): \(String(cString: strerror(errno)))"))
        }
        defer { fclose(file) }
        var entries: [(String, String)] = []
        var buffer = [CChar](repeating: 0, count: 4096)
        var number = 0
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            number += 1
            var line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            while line.hasSuffix("\n") || line.hasSuffix("\r") { line.removeLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                return .failure(Problem(description: "\(path):\(number): expected user:hash"))
            }
            let user = String(line[..<colon])
            var hash = String(line[line.index(after: colon)...])
            // Apache's format allows more fields after the hash; they are not ours.
            if let extra = hash.firstIndex(of: ":") { hash = String(hash[..<extra]) }
            guard PasswordFile.supported(hash) else {
                return .failure(Problem(description: "\(path):\(number): the hash for '\(user)' is not bcrypt ($2y$), SHA-512-crypt ($6$) or yescrypt ($y$); plain text and older schemes are refused (make one with: htpasswd -B FILE USER)"))
            }
            entries.append((user, hash))
        }
        return .success(entries)
    }

    static func supported(_ hash: String) -> Bool {
        ["$2b$", "$2y$", "$2a$", "$6$", "$y$"].contains { hash.hasPrefix($0) } && hash.utf8.count >= 20
    }

    /// Reads the file again when `validity` has passed and it changed (device, inode, size, mtime).
    func refresh(now: Int64, validity: Int64) {
        guard now - checkedAt >= validity else { return }
        checkedAt = now
        var info = stat()
        guard stat(path, &info) == 0 else {
            // Said once when it goes (its identity is then none), not at every look.
            if identity != (0, 0, 0, 0) || generation == 0 {
                log.warning("the htpasswd file \(path) cannot be read; keeping the users it had")
                identity = (0, 0, 0, 0)
            }
            if generation == 0 { generation = 1 }
            return
        }
        let current = (UInt64(info.st_dev), UInt64(info.st_ino), Int64(info.st_size), Int64(info.st_mtim.tv_sec) &* 1_000_000_000 &+ Int64(info.st_mtim.tv_nsec))
        guard current != identity || generation == 0 else { return }
        switch PasswordFile.read(path) {
        case .success(let entries):
            identity = current
            var users: [[UInt8]: [CChar]] = [:]
            for (user, hash) in entries { users[Array(user.utf8)] = Array(hash.utf8CString) }
            self.users = users
            generation += 1
        case .failure(let problem):
            identity = current
            if generation == 0 { generation = 1 }
            log.warning("\(problem.description); keeping the users it had")
        }
    }
}

/// Basic authentication (RFC 7617) in a worker: checks a request's `Authorization: Basic` credentials
/// against a password file with libcrypt's `crypt_rn`, and remembers the outcome.
///
/// A bcrypt or yescrypt check costs milliseconds of the worker's only thread, so each credential (the
/// base64 token as sent) is verified once per password file version and then answered from a table of
/// up to 4,096 outcomes, wrong ones included: a browser sends the same header with every request, and a
/// client repeating a wrong password costs one check. Only new guesses cost a hash, which is what
/// `rate_limit` bounds.
final class BasicAuth {
    /// libcrypt's 32 KiB work area, one per worker.
    private let data: UnsafeMutableRawPointer
    private let dataSize = MemoryLayout<crypt_data>.size
    private struct Outcome {
        var token: [UInt8]
        var file: ObjectIdentifier
        var generation: UInt64
        var valid: Bool
    }
    private var outcomes: [UInt64: Outcome] = [:]
    static let remembered = 4096
    /// Hash checks made (what the cache saves is the requests minus these).
    private(set) var verifications = 0

    init() {
        data = .allocate(byteCount: MemoryLayout<crypt_data>.size, alignment: 16)
        data.initializeMemory(as: UInt8.self, repeating: 0, count: dataSize)
    }

    deinit { data.deallocate() }

    /// Whether the request's head carries credentials `file` accepts.
    func allows(_ bytes: UnsafeRawBufferPointer, headLength: Int, file: PasswordFile) -> Bool {
        let values = RequestParser.fieldValues(bytes, headLength: headLength, name: "authorization")
        guard values.count == 1, let token = BasicAuth.token(bytes, values[0]) else { return false }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for index in token.start..<token.end { hash = (hash ^ UInt64(bytes[index])) &* 0x100_0000_01b3 }
        if let outcome = outcomes[hash], outcome.file == ObjectIdentifier(file), outcome.generation == file.generation,
           outcome.token.count == token.count, outcome.token.elementsEqual(bytes[token.start..<token.end]) {
            return outcome.valid
        }
        let valid = verify(Array(bytes[token.start..<token.end]), file: file)
        if outcomes.count >= BasicAuth.remembered { outcomes.removeAll(keepingCapacity: true) }
        outcomes[hash] = Outcome(token: Array(bytes[token.start..<token.end]), file: ObjectIdentifier(file), generation: file.generation, valid: valid)
        return valid
    }

    /// The base64 token of a `Basic` credential (the scheme is case-insensitive, RFC 9110 section 11.1).
    static func token(_ bytes: UnsafeRawBufferPointer, _ value: ByteSpan) -> ByteSpan? {
        guard value.count > 6 else { return nil }
        let scheme: StaticString = "basic"
        for offset in 0..<5 where bytes[value.start + offset] | 0x20 != scheme.utf8Start[offset] { return nil }
        guard bytes[value.start + 5] == UInt8(ascii: " ") else { return nil }
        var start = value.start + 6
        while start < value.end && bytes[start] == UInt8(ascii: " ") { start += 1 }
        guard start < value.end, value.end - start <= 1024 else { return nil }
        return ByteSpan(start: start, end: value.end)
    }

    /// Decodes `user:password` and checks the password against the user's hash.
    private func verify(_ token: [UInt8], file: PasswordFile) -> Bool {
        guard let decoded = BasicAuth.base64Decode(token), let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else { return false }
        let user = Array(decoded[..<colon])
        var password = Array(decoded[(colon + 1)...])
        guard let hash = file.users[user], !password.contains(0), password.count < 512 else { return false }
        verifications += 1
        password.append(0)
        let result: Bool = password.withUnsafeBufferPointer { phrase in
            hash.withUnsafeBufferPointer { setting in
                phrase.baseAddress!.withMemoryRebound(to: CChar.self, capacity: phrase.count) { phraseText in
                    guard let output = crypt_rn(phraseText, setting.baseAddress!, data, Int32(dataSize)) else { return false }
                    // Constant time over the hash's length: how much of a guess matched must not show.
                    var difference: UInt8 = 0
                    var index = 0
                    while index < setting.count - 1 {
                        let produced = UInt8(bitPattern: output[index])
                        difference |= produced ^ UInt8(bitPattern: setting[index])
                        if produced == 0 { difference |= 1; break }
                        index += 1
                    }
                    return difference == 0 && output[setting.count - 1] == 0
                }
            }
        }
        password.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        return result
    }

    /// Standard base64 with padding (RFC 4648 section 4); nil when it is not.
    static func base64Decode(_ text: [UInt8]) -> [UInt8]? {
        guard text.count % 4 == 0 else { return nil }
        func value(_ byte: UInt8) -> UInt32? {
            switch byte {
            case 65...90: return UInt32(byte - 65)
            case 97...122: return UInt32(byte - 71)
            case 48...57: return UInt32(byte + 4)
            case 43: return 62
            case 47: return 63
            default: return nil
            }
        }
        var output: [UInt8] = []
        output.reserveCapacity(text.count / 4 * 3)
        var index = 0
        while index < text.count {
            let padding = index + 4 == text.count ? (text[index + 3] == 61 ? (text[index + 2] == 61 ? 2 : 1) : 0) : 0
            var word: UInt32 = 0
            for offset in 0..<4 {
                if offset >= 4 - padding {
                    word <<= 6
                    continue
                }
                guard let bits = value(text[index + offset]) else { return nil }
                word = word << 6 | bits
            }
            output.append(UInt8(word >> 16 & 0xFF))
            if padding < 2 { output.append(UInt8(word >> 8 & 0xFF)) }
            if padding < 1 { output.append(UInt8(word & 0xFF)) }
            index += 4
        }
        return output
    }
}
