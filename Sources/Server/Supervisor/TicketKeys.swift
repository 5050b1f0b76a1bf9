import CSystemShims
import Glibc

/// TLS session ticket keys, made and rotated by the supervisor and shared by every worker (through
/// the manager), so a client resumes on whichever worker it reaches: the current key encrypts, the one
/// before it still decrypts, for up to two rotation periods.
struct TicketKeys {
    /// Current then previous, `Message.ticketKeySize` bytes each; empty without TLS or resumption.
    private(set) var bytes: [UInt8] = []
    private(set) var rotatedAt: Int64 = 0

    var isEmpty: Bool { bytes.isEmpty }

    /// Makes a new current key and keeps the one before it for decryption only.
    mutating func rotate(now: Int64) {
        var key = [UInt8](repeating: 0, count: Message.ticketKeySize)
        key.withUnsafeMutableBytes { _ = getrandom($0.baseAddress, $0.count, 0) }
        bytes = key + bytes.prefix(Message.ticketKeySize)
        rotatedAt = now
    }

    /// Whether the current key is older than `interval` milliseconds.
    func due(now: Int64, interval: Int) -> Bool { !bytes.isEmpty && now - rotatedAt >= Int64(interval) }
}
