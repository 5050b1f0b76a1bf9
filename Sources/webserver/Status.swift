import ArgumentParser
import Foundation
import Glibc
import Server

/// `webserver status`: the running server's processes (from /proc) and, when it has an admin listener,
/// its figures (from /metrics: the same numbers, read as a table).
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the running server: its processes, pids, uptime, memory, connections per worker, and its figures.")

    @OptionGroup var options: ConfigOptions

    @Option(help: ArgumentHelp("The admin listener to read figures from (default: admin.listen in the config).", valueName: "addr:port"))
    var admin: String?

    func run() throws {
        let pid = try Control.pid(options)
        var config = ServerConfig()
        if let path = options.resolvedPath, let loaded = try? ConfigLoader.load(path: path) { config = loaded }
        let processes = [pid] + Supervisor.descendants(of: pid)
        print("PROCESS       PID      UPTIME     MEMORY  CONNECTIONS")
        let several = processes.filter { Status.role($0, supervisor: pid) == "listener" }.count > 1
        for process in processes {
            var name = Status.role(process, supervisor: pid)
            if several && name == "listener" { name += " " + Status.option("--index", of: process, default: 0).description }
            // A worker's sockets are its connections and its channels: to the manager, its connection
            // channel, and one release channel per listener.
            let channels = 2 + Status.option("--listeners", of: process, default: 1)
            let connections = name.hasPrefix("worker") ? String(max(0, Status.sockets(process) - channels)) : "-"
            print(Status.pad(name, 12) + Status.pad(String(process), 9, right: true) + Status.pad(Status.uptime(process), 12, right: true)
                  + Status.pad(Status.memory(process), 11, right: true) + Status.pad(connections, 13, right: true))
        }
        let certificates = CertificateReport.lines(config)
        if !certificates.isEmpty { print("\n" + certificates.joined(separator: "\n")) }
        guard let address = admin ?? config.adminListen else {
            print("\n(no admin listener: set admin.listen, or pass --admin, for the figures)")
            return
        }
        guard let text = Status.fetch(address, "/metrics") else {
            print("\n(the admin listener at \(address) does not answer)")
            return
        }
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            values[String(line[..<space])] = value
        }
        func number(_ key: String) -> String {
            guard let value = values[key] else { return "-" }
            return value.formatted(.number.grouping(.automatic).precision(.fractionLength(0)))
        }
        let ready = Status.fetch(address, "/readyz")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        print("""

            ready:        \(ready)
            connections:  \(number("webserver_connections_active")) open (reading \(number("webserver_connections_reading")), \
            writing \(number("webserver_connections_writing")), waiting \(number("webserver_connections_waiting"))); \
            \(number("webserver_connections_accepted_total")) accepted
            requests:     \(number("webserver_request_duration_seconds_count")) \
            (2xx \(number("webserver_responses_total{code=\"2xx\"}")), 3xx \(number("webserver_responses_total{code=\"3xx\"}")), \
            4xx \(number("webserver_responses_total{code=\"4xx\"}")), 5xx \(number("webserver_responses_total{code=\"5xx\"}")))
            sent:         \(number("webserver_sent_bytes_total")) bytes
            workers:      \(number("webserver_workers{state=\"busy\"}")) busy, \(number("webserver_workers{state=\"idle\"}")) idle
            restarts:     listener \(number("webserver_restarts_total{role=\"listener\"}")), \
            manager \(number("webserver_restarts_total{role=\"manager\"}")), worker \(number("webserver_restarts_total{role=\"worker\"}"))\
            \(config.acmeCertificates.isEmpty ? "" : ", acme \(number("webserver_restarts_total{role=\"acme\"}"))")
            """)
        if let success = values["webserver_last_reload_success"], let at = values["webserver_last_reload_time_seconds"] {
            print("last reload:  \(success == 1 ? "applied" : "refused") at \(Date(timeIntervalSince1970: at).formatted(.iso8601))")
        }
    }

    /// "supervisor", "listener", "manager", "worker N", from the command line the spawn set.
    static func role(_ pid: Int32, supervisor: Int32) -> String {
        if pid == supervisor { return "supervisor" }
        let line = commandLine(pid)
        if line.hasPrefix("webserver: worker"), let range = line.range(of: "--id ") {
            return "worker " + line[range.upperBound...].prefix { $0.isNumber }
        }
        if line.hasPrefix("webserver: ") { return String(line.dropFirst(11).prefix { $0 != " " }) }
        return "other"
    }

    static func commandLine(_ pid: Int32) -> String {
        let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
        return String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
    }

    /// A number the process was started with (`--listeners 2`), or `default`.
    static func option(_ name: String, of pid: Int32, default value: Int) -> Int {
        let words = commandLine(pid).split(separator: " ")
        guard let position = words.firstIndex(where: { $0 == name }), position + 1 < words.count else { return value }
        return Int(words[position + 1]) ?? value
    }

    /// Sockets the process holds: a worker's are its channels and one per connection.
    static func sockets(_ pid: Int32) -> Int {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return entries.filter { entry in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(entry)"))?.hasPrefix("socket:") == true
        }.count
    }

    static func uptime(_ pid: Int32) -> String {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")"),
              let uptime = (try? String(contentsOfFile: "/proc/uptime", encoding: .utf8))?.split(separator: " ").first.flatMap({ Double($0) })
        else { return "?" }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let start = Double(fields[19]) else { return "?" }
        let seconds = Int(uptime - start / Double(sysconf(Int32(_SC_CLK_TCK))))
        if seconds >= 86400 { return "\(seconds / 86400)d \(seconds % 86400 / 3600)h" }
        if seconds >= 3600 { return "\(seconds / 3600)h \(seconds % 3600 / 60)m" }
        if seconds >= 60 { return "\(seconds / 60)m \(seconds % 60)s" }
        return "\(seconds)s"
    }

    static func memory(_ pid: Int32) -> String {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { return "?" }
        return String(format: "%.1f MB", kib / 1024)
    }

    static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let padding = String(repeating: " ", count: max(1, width - text.count))
        return right ? padding + text : text + padding
    }

    /// One GET to the admin listener; its body, or nil.
    static func fetch(_ address: String, _ path: String) -> String? {
        guard let target = SocketAddress(parsing: address) else { return nil }
        let host = target.family == UInt8(AF_INET6) ? "[\(target.hostText)]" : target.hostText
        let fd = socket(Int32(target.family), Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = (try? target.withSockaddr { connect(fd, $0, $1) }) ?? -1
        guard connected == 0 else { return nil }
        let request = "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            data += buffer[0..<count]
        }
        guard let end = data.firstRange(of: [13, 10, 13, 10]) else { return nil }
        return String(decoding: data[end.upperBound...], as: UTF8.self)
    }
}
