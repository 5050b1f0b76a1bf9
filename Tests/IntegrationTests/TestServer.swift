import Foundation
import Glibc
import Server
import Testing

/// The built `webserver` binary, next to the test bundle in the build folder.
let webserverBinary: String = {
    let candidates = [
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("webserver").path,
        Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("webserver").path,
        packageRoot.appendingPathComponent(".build/debug/webserver").path,
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[2]
}()

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A real server started from the built binary in a fresh directory with its own site, config, logs
/// and pid file, listening on a port the kernel picks. Stopped (and killed if need be) by `stop()`.
final class TestServer: @unchecked Sendable {
    let directory: URL
    let site: URL
    var configFile: URL { directory.appendingPathComponent("webserver.yaml") }
    var errorLog: URL { directory.appendingPathComponent("error.log") }
    var accessLog: URL { directory.appendingPathComponent("access.log") }
    var pidFile: URL { directory.appendingPathComponent("webserver.pid") }
    let process = Process()
    private(set) var port = 0
    var pid: Int32 { process.processIdentifier }

    /// `config` is YAML added to a base that sets listen, root, logs and pid file.
    /// `environment` is added to the server's; `launcher` runs first and execs the server (its last
    /// arguments are the server's command line).
    init(
        config: String = "", flags: [String] = [], environment: [String: String] = [:], launcher: [String] = [],
        site populate: (URL) throws -> Void = TestServer.defaultSite
    ) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-it-\(UUID().uuidString)")
        site = directory.appendingPathComponent("site")
        try FileManager.default.createDirectory(at: site, withIntermediateDirectories: true)
        chmod(directory.path, 0o755)
        try populate(site)
        let base = """
            listen: ["127.0.0.1:0"]
            root: site
            pid_file: webserver.pid
            access_log: access.log

            """
        try (base + config).write(to: configFile, atomically: true, encoding: .utf8)
        if launcher.isEmpty {
            process.executableURL = URL(fileURLWithPath: webserverBinary)
            process.arguments = ["serve", "--config", configFile.path] + flags
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = launcher + [webserverBinary, "serve", "--config", configFile.path] + flags
        }
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.currentDirectoryURL = directory
        _ = FileManager.default.createFile(atPath: errorLog.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: errorLog)
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
    }

    static func defaultSite(_ site: URL) throws {
        try "<!doctype html><title>test</title><p>hello</p>\n".write(to: site.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
    }

    /// Starts the server and waits until it logs that it is serving.
    @discardableResult
    func start() throws -> TestServer {
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let text = log()
            if text.contains("webserver started"), let port = TestServer.port(in: text) {
                self.port = port
                // Wait until a worker is up, so the first request does not race the pool's start.
                if waitForLog("worker 1 started", seconds: 10) { return self }
            }
            if !process.isRunning { break }
            usleep(20_000)
        }
        throw TestFailure("server did not start; its log:\n\(log())")
    }

    static func port(in log: String) -> Int? {
        guard let range = log.range(of: "listening on http://127.0.0.1:") else { return nil }
        return Int(log[range.upperBound...].prefix { $0.isNumber })
    }

    func log() -> String { (try? String(contentsOf: errorLog, encoding: .utf8)) ?? "" }

    /// Polls the error log for `text`.
    func waitForLog(_ text: String, seconds: Double = 10, count: Int = 1) -> Bool {
        waitUntil(seconds: seconds) { self.log().components(separatedBy: text).count - 1 >= count }
    }

    /// Sends SIGTERM and waits for the whole tree to exit; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning {
            kill(pid, SIGTERM)
            if !waitUntil(seconds: 40, { !self.process.isRunning }) {
                for child in descendants(of: pid) { kill(child, SIGKILL) }
                kill(pid, SIGKILL)
            }
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    /// Live processes of `role` below the supervisor, from their command lines.
    func pids(of role: String) -> [Int32] {
        descendants(of: pid).filter { commandLine(of: $0).hasPrefix("webserver: \(role)") }
    }

    var url: String { "http://127.0.0.1:\(port)" }

    deinit {
        if process.isRunning {
            for child in descendants(of: pid) { kill(child, SIGKILL) }
            kill(pid, SIGKILL)
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

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
func run(_ executable: String, _ arguments: [String], directory: URL? = nil) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/env")
    process.arguments = executable.hasPrefix("/") ? arguments : [executable] + arguments
    if let directory { process.currentDirectoryURL = directory }
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

/// curl with `arguments`; returns its standard output.
func curl(_ arguments: [String]) throws -> String {
    try run("curl", ["-s", "--max-time", "20"] + arguments).output
}

/// Status code of a request made with curl.
func status(_ url: String, _ extra: [String] = []) throws -> Int {
    Int(try curl(["-o", "/dev/null", "-w", "%{http_code}"] + extra + [url])) ?? -1
}

/// A raw TCP exchange: sends `request`, reads until the server closes or `timeout` passes.
func exchange(port: Int, _ request: [UInt8], timeout: Double = 5, shutdownWrite: Bool = false) throws -> [UInt8] {
    try exchangeNotingClose(port: port, request, timeout: timeout, shutdownWrite: shutdownWrite).0
}

/// `exchange`, also saying whether the server closed the connection (rather than the read timing out).
func exchangeNotingClose(port: Int, _ request: [UInt8], timeout: Double, shutdownWrite: Bool = false) throws -> ([UInt8], Bool) {
    let fd = try openConnection(port)
    defer { close(fd) }
    var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var sent = 0
    while sent < request.count {
        let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if count <= 0 { break }
        sent += count
    }
    if shutdownWrite { shutdown(fd, Int32(SHUT_WR)) }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        if count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { return (received, true) }
        if count < 0 { return (received, false) }  // timed out: the connection is still open
        received += buffer[0..<count]
    }
}

func exchange(port: Int, _ request: String, timeout: Double = 5) throws -> String {
    String(decoding: try exchange(port: port, Array(request.utf8), timeout: timeout), as: UTF8.self)
}

/// Status codes of every response in a raw byte stream, in order.
func statusCodes(_ text: String) -> [Int] {
    let pattern = try! Regex(#"HTTP/1\.1 (\d{3}) "#)
    return text.matches(of: pattern).compactMap { ($0.output[1].substring).flatMap { Int($0) } }
}

/// Result of a bounded load run by Fixtures/load.py.
struct LoadResult: Decodable {
    let ok: Int
    let failed: Int
    let perClient: [Int]
    let errors: [String]
    let ports: [Int]
}

/// Starts the load generator as a second process; `finish()` waits for it and decodes its result.
final class LoadRun: @unchecked Sendable {
    let process = Process()
    let output = Pipe()

    init(port: Int, clients: Int, seconds: Double, mode: String, path: String, expectedLength: Int, source: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures/load.py").path,
            "\(port)", "\(clients)", "\(seconds)", mode, path, "\(expectedLength)",
        ] + (source.map { [$0] } ?? [])
        process.standardOutput = output
        try process.run()
    }

    func finish() throws -> LoadResult {
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return try JSONDecoder().decode(LoadResult.self, from: data)
    }
}

/// A raw TLS exchange (Fixtures/tls_exchange.py, Python's ssl) started as a second process: sends
/// `request` (escapes such as \r\n written out as backslash sequences), reads until the server closes
/// or `timeout` passes; `finish()` waits for it and returns what came back.
final class TLSExchange: @unchecked Sendable {
    let process = Process()
    let output = Pipe()

    init(port: Int, _ request: String, timeout: Double) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", packageRoot.appendingPathComponent("Tests/IntegrationTests/Fixtures/tls_exchange.py").path,
            "\(port)", request, "\(timeout)",
        ]
        process.standardOutput = output
        try process.run()
    }

    func finish() throws -> String {
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
