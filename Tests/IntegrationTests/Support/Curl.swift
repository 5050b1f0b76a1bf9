import Foundation

// curl, the tests' HTTP client, and what its responses parse into.

/// curl with `arguments`; returns its standard output.
func curl(_ arguments: [String]) throws -> String {
    try run("curl", ["-s", "--max-time", "20"] + arguments).output
}

/// Status code of a request made with curl.
func status(_ url: String, _ extra: [String] = []) throws -> Int {
    Int(try curl(["-o", "/dev/null", "-w", "%{http_code}"] + extra + [url])) ?? -1
}

/// Parses `curl -si` output into a status, lowercase header names and a body.
struct Response {
    let status: Int
    let headers: [String: String]
    let body: String

    init(_ raw: String) {
        let parts = raw.components(separatedBy: "\r\n\r\n")
        let lines = parts[0].components(separatedBy: "\r\n")
        status = Int(lines[0].split(separator: " ").dropFirst().first ?? "") ?? -1
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        self.headers = headers
        body = parts.dropFirst().joined(separator: "\r\n\r\n")
    }
}

func fetch(_ url: String, _ extra: [String] = []) throws -> Response {
    Response(try curl(["-i"] + extra + [url]))
}

func adminGet(_ port: Int, _ path: String) throws -> Response { try fetch("http://127.0.0.1:\(port)\(path)") }
