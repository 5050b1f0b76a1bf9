/// Content-Type by file extension: a current table (the web's formats as of 2026), text types in UTF-8.
enum MediaTypes {
    static let fallback: StaticString = "application/octet-stream"

    static let table: [(StaticString, StaticString)] = [
        ("html", "text/html; charset=utf-8"), ("htm", "text/html; charset=utf-8"),
        ("css", "text/css; charset=utf-8"), ("js", "text/javascript; charset=utf-8"),
        ("mjs", "text/javascript; charset=utf-8"), ("json", "application/json"),
        ("map", "application/json"), ("webmanifest", "application/manifest+json"),
        ("txt", "text/plain; charset=utf-8"), ("md", "text/markdown; charset=utf-8"),
        ("csv", "text/csv; charset=utf-8"), ("xml", "application/xml"), ("rss", "application/rss+xml"),
        ("atom", "application/atom+xml"), ("svg", "image/svg+xml"), ("png", "image/png"),
        ("jpg", "image/jpeg"), ("jpeg", "image/jpeg"), ("gif", "image/gif"), ("webp", "image/webp"),
        ("avif", "image/avif"), ("ico", "image/vnd.microsoft.icon"), ("bmp", "image/bmp"),
        ("woff", "font/woff"), ("woff2", "font/woff2"), ("ttf", "font/ttf"), ("otf", "font/otf"),
        ("wasm", "application/wasm"), ("pdf", "application/pdf"), ("zip", "application/zip"),
        ("gz", "application/gzip"), ("tar", "application/x-tar"), ("mp4", "video/mp4"),
        ("webm", "video/webm"), ("mp3", "audio/mpeg"), ("ogg", "audio/ogg"), ("wav", "audio/wav"),
        ("flac", "audio/flac"), ("m4a", "audio/mp4"), ("ics", "text/calendar; charset=utf-8"),
        ("jsonld", "application/ld+json"), ("yaml", "application/yaml"), ("yml", "application/yaml"),
    ]

    /// The media type for the file name ending at `end` in `path`; the fallback when unknown.
    static func forPath(_ path: UnsafePointer<UInt8>, length: Int) -> StaticString {
        var dot = length - 1
        while dot >= 0 && path[dot] != 46 && path[dot] != 47 { dot -= 1 }
        guard dot >= 0, path[dot] == 46 else { return fallback }
        let extensionLength = length - dot - 1
        guard extensionLength > 0, extensionLength <= 11 else { return fallback }
        for (name, type) in table where name.utf8CodeUnitCount == extensionLength {
            var matches = true
            for offset in 0..<extensionLength where path[dot + 1 + offset] | 0x20 != name.utf8Start[offset] {
                matches = false
                break
            }
            if matches { return type }
        }
        return fallback
    }
}
