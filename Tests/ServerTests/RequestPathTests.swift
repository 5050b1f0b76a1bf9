import Testing

@testable import Server

struct PathCase: CustomTestStringConvertible, Sendable {
    let rule: String
    let target: String
    /// The normalized path, "/" at the end for a directory; or a status.
    let expected: String
    init(_ rule: String, _ target: String, _ expected: String) {
        self.rule = rule
        self.target = target
        self.expected = expected
    }
    var testDescription: String { "\(rule): \(target)" }
}

func normalize(_ target: String) -> String {
    var bytes = Array(target.utf8)
    let output = UnsafeMutablePointer<UInt8>.allocate(capacity: bytes.count + 16)
    defer { output.deallocate() }
    let outcome = bytes.withUnsafeMutableBytes {
        RequestPath.normalize(UnsafeRawBufferPointer($0), target: ByteSpan(start: 0, end: $0.count), into: output)
    }
    switch outcome {
    case .path(let length, let directory, _):
        return String(decoding: UnsafeBufferPointer(start: output, count: length), as: UTF8.self) + (directory ? "/" : "")
    case .rejected(let status):
        return "\(status.rawValue)"
    }
}

@Suite struct RequestPathTests {
    static let cases: [PathCase] = [
        PathCase("root", "/", "./"),
        PathCase("file", "/index.html", "index.html"),
        PathCase("directory", "/docs/", "docs/"),
        PathCase("query is not the path", "/a.css?v=1", "a.css"),
        PathCase("RFC 3986 5.2.4 dot segments", "/a/./b/../c", "a/c"),
        PathCase("RFC 3986 5.2.4 trailing dot-dot names a directory", "/a/b/..", "a/"),
        PathCase("duplicate slashes", "//a///b", "a/b"),
        PathCase("dot-dot above the root", "/../etc/passwd", "400"),
        PathCase("encoded dot-dot above the root", "/%2e%2e/etc/passwd", "400"),
        PathCase("encoded slash is a separator", "/a%2Fb", "a/b"),
        PathCase("encoded slash cannot climb", "/a/..%2F..%2Fetc", "400"),
        PathCase("decoded once: %252e stays literal", "/%252e%252e/x", "%2e%2e/x"),
        PathCase("NUL", "/a%00b", "400"),
        PathCase("bad escape", "/a%zz", "400"),
        PathCase("truncated escape", "/a%2", "400"),
        PathCase("fragment", "/a#b", "400"),
        PathCase("dotfile", "/.env", "403"),
        PathCase("dot directory", "/.git/config", "403"),
        PathCase("nested dotfile", "/a/.htpasswd", "403"),
        PathCase("encoded dotfile", "/%2egit/config", "403"),
        PathCase("well-known", "/.well-known/acme-challenge/x", ".well-known/acme-challenge/x"),
        PathCase("well-known only at the top", "/a/.well-known/x", "403"),
        PathCase("dotfile removed by dot-dot", "/.git/../index.html", "index.html"),
        PathCase("RFC 9112 3.2.2 absolute-form", "http://example.com/a/b", "a/b"),
        PathCase("absolute-form without a path", "http://example.com", "./"),
        PathCase("absolute-form https", "HTTPS://example.com/x?q", "x"),
        PathCase("asterisk-form is not a path", "*", "400"),
    ]

    @Test(arguments: cases)
    func rule(_ row: PathCase) {
        #expect(normalize(row.target) == row.expected)
    }
}

extension RequestPathTests {
    /// Plain targets take the copy-free path and give the same answers as the segment walk.
    @Test(arguments: ["/index.html", "/a/b/c.css", "/docs/", "/a-b_c~d/e.f", "/x?q=/../y", "/a/b/?q"])
    func plainTargets(_ target: String) {
        let expected: [String: String] = [
            "/index.html": "index.html", "/a/b/c.css": "a/b/c.css", "/docs/": "docs/", "/a-b_c~d/e.f": "a-b_c~d/e.f",
            "/x?q=/../y": "x", "/a/b/?q": "a/b/",
        ]
        #expect(normalize(target) == expected[target])
    }
}
