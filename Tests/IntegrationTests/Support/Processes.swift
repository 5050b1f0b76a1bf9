import Foundation
import Glibc
import Server

// Processes: waiting on conditions, the server's process tree from /proc, running programs.

/// Polls `condition` every 20ms for up to `seconds`.
@discardableResult
func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

func commandLine(of pid: Int32) -> String {
    guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
    return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
}

/// Every process below `pid`.
func descendants(of pid: Int32) -> [Int32] { Supervisor.descendants(of: pid) }

/// Runs a program to completion; returns its exit status and standard output and error.
@discardableResult
func run(
    _ executable: String, _ arguments: [String], directory: URL? = nil, environment: [String: String] = [:]
) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/env")
    process.arguments = executable.hasPrefix("/") ? arguments : [executable] + arguments
    if let directory { process.currentDirectoryURL = directory }
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let output = Pipe()
    let error = Pipe()
    process.standardOutput = output
    process.standardError = error
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // The programs run here write little to standard error; read standard output to its end first.
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = error.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: errorData, as: UTF8.self))
}

/// Counts a worker's client connections: its sockets minus its channels (manager, connections, and one
/// release channel per listener: `listeners`, one unless a test says otherwise).
func clientSockets(of pid: Int32, listeners: Int = 1) -> Int {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
    let sockets = entries.filter {
        ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "").hasPrefix("socket:")
    }
    return sockets.count - 2 - listeners
}

func waitForOne(_ body: () -> Int32?) -> Int32? {
    var found: Int32?
    waitUntil(seconds: 10) {
        found = body()
        return found != nil
    }
    return found
}

/// Runs `command` with /bin/sh through posix_spawn and waitpid; returns its exit code.
///
/// Used for `serve --daemon`, whose process exits while its detached child keeps running: Foundation's
/// Process did not see that exit here, so this waits for the pid itself.
func shell(_ command: String, directory: URL) -> Int32 {
    var pid: pid_t = 0
    let arguments = ["/bin/sh", "-c", "cd '\(directory.path)' && \(command)"]
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    guard posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    return (status >> 8) & 0xff
}

/// The pid in a pid file, or nil.
func pidInFile(_ url: URL) -> Int32? {
    (try? String(contentsOf: url, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
}

/// Stops a server process that is not a child of the test (an upgrade's new supervisor).
func stopProcess(_ pid: Int32) {
    kill(pid, SIGTERM)
    if !waitUntil(seconds: 40, { kill(pid, 0) != 0 }) {
        for child in descendants(of: pid) { kill(child, SIGKILL) }
        kill(pid, SIGKILL)
    }
}

/// CPU time a process has used so far (user and system), in seconds, from /proc/PID/stat.
func cpuSeconds(of pid: Int32) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return 0 }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
