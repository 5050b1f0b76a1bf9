import Foundation
import Glibc

// The sites tests serve.

/// A site with the files the request-path rules need.
func richSite(_ site: URL) throws {
    let files: [(String, String)] = [
        ("index.html", "<!doctype html><p>home</p>\n"),
        ("docs/index.html", "<p>docs</p>\n"),
        ("empty/.keep", ""),
        ("app.mjs", "export const x = 1;\n"),
        ("module.wasm", "\0asm"),
        ("photo.webp", "RIFF"),
        ("photo.avif", "avif"),
        ("font.woff2", "wOF2"),
        ("style.css", "body{}\n"),
        ("zero.txt", ""),
        (".env", "SECRET=1\n"),
        (".git/config", "[core]\n"),
        (".well-known/security.txt", "Contact: mailto:x@example.invalid\n"),
        ("a b.txt", "space\n"),
        ("secret.txt", "locked\n"),
    ]
    for (name, content) in files {
        let url = site.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try content.write(to: url, atomically: true, encoding: .utf8)
    }
    chmod(site.appendingPathComponent("secret.txt").path, 0)
    symlink("/etc/hostname", site.appendingPathComponent("escape").path)
    symlink("index.html", site.appendingPathComponent("inside-link.html").path)
    mkfifo(site.appendingPathComponent("fifo").path, 0o644)
    var big = [UInt8](repeating: 0, count: 5 * 1024 * 1024 + 17)
    for index in big.indices { big[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 13) }
    _ = FileManager.default.createFile(atPath: site.appendingPathComponent("big.bin").path, contents: Data(big))
}

/// Text that compresses like source code: words from a small vocabulary in a random order.
func sourceLikeText(bytes count: Int, seed: UInt64 = 1) -> [UInt8] {
    let words = ["function", "return", "const", "let", "=>", "{", "}", "(", ")", "value", "index", "if", "else", "\n", "  "]
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var text: [UInt8] = []
    text.reserveCapacity(count + 16)
    while text.count < count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        text += Array(words[Int(state % UInt64(words.count))].utf8)
        text.append(32)
    }
    return Array(text.prefix(count))
}

func gzipSite(_ site: URL) throws {
    try Data(sourceLikeText(bytes: 100 * 1024)).write(to: site.appendingPathComponent("app.js"))
    try Data(sourceLikeText(bytes: 100)).write(to: site.appendingPathComponent("small.txt"))
    try Data(sourceLikeText(bytes: 300)).write(to: site.appendingPathComponent("page.html"))
    try Data(repeating: 7, count: 4096).write(to: site.appendingPathComponent("photo.png"))
    // A precompressed pair: the sidecar made by gzip(1), not by us.
    let styled = site.appendingPathComponent("style.css")
    try Data(sourceLikeText(bytes: 50_000, seed: 9)).write(to: styled)
    _ = try run("gzip", ["-k", "-9", styled.path])
    // A sidecar older than its file (a stale build): ignored.
    let stale = site.appendingPathComponent("stale.js")
    try Data(sourceLikeText(bytes: 20_000, seed: 3)).write(to: stale)
    _ = try run("gzip", ["-k", stale.path])
    var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000_000, tv_nsec: 0)]
    utimensat(AT_FDCWD, stale.path + ".gz", &times, 0)
}
