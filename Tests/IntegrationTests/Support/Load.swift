import Foundation

// Bounded load from a second process (Fixtures/load.py), and the access log it leaves.

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

    /// `host` is the Host header the requests carry (127.0.0.1 unless said).
    init(
        port: Int, clients: Int, seconds: Double, mode: String, path: String, expectedLength: Int, source: String? = nil,
        host: String? = nil, tlsCA: String? = nil
    ) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var environment: [String: String] = [:]
        if let host { environment["LOAD_HOST"] = host }
        if let tlsCA { environment["LOAD_TLS_CA"] = tlsCA }
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
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

/// Lines of the access log once `count` are there.
func accessLines(_ server: TestServer, count: Int) -> [String] {
    var lines: [String] = []
    _ = waitUntil(seconds: 5) {
        lines = ((try? String(contentsOf: server.accessLog, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        return lines.count >= count
    }
    return lines
}
