import Foundation

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
                let text = (try? String(contentsOfFile: "/proc/\(current)/task/\(task)/children", encoding: .utf8)) ?? ""
                for child in text.split(separator: " ").compactMap({ Int32($0) }) {
                    result.append(child)
                    pending.append(child)
                }
            }
        }
        return result
    }
}
