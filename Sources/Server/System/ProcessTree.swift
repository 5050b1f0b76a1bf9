import Foundation
import Glibc

/// The processes below one, from /proc: what the supervisor waits for (orphaned workers are its
/// children as subreaper), kills past its deadline, and `webserver status` shows.
enum ProcessTree {
    /// Every process below `pid`, from /proc/PID/task/TID/children.
    static func descendants(of pid: Int32) -> [Int32] {
        var result: [Int32] = []
        var pending = [pid]
        while let current = pending.popLast() {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(current)/task")) ?? []
            for task in tasks {
                let text = procText("/proc/\(current)/task/\(task)/children")
                for child in text.split(separator: " ").compactMap({ Int32($0) }) {
                    result.append(child)
                    pending.append(child)
                }
            }
        }
        return result
    }

    /// A /proc file's text, empty when the process has gone. Read with read(2): Foundation's
    /// String(contentsOfFile:) on these files (a size of 0 in stat) left a 4 KiB buffer unfreed under
    /// LeakSanitizer at the supervisor's shutdown (scripts/asan-smoke).
    static func procText(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
