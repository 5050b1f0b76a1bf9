extension ServerConfig {
    /// Compression of responses with gzip (zlib), negotiated by Accept-Encoding.
    public struct GzipSettings: Codable, Sendable, Equatable {
        /// Compress compressible files on the fly (each version once, then from the cache).
        public var enabled = true
        /// zlib level, 1 (fastest) to 9 (smallest).
        public var level = 6
        /// Files shorter than this are sent as they are: the gzip header and trailer alone are 18 bytes.
        public var minLength = 256
        /// Media types compressed (`text/*` matches every text type; parameters are ignored).
        public var types: [String] = [
            "text/*", "application/javascript", "application/json", "application/*+json", "application/xml",
            "application/*+xml", "application/yaml", "application/wasm", "image/svg+xml", "image/bmp",
            "image/vnd.microsoft.icon", "font/ttf", "font/otf", "application/x-tar",
        ]
        /// Media types never compressed, even when `types` matches: formats that are compressed already.
        public var never: [String] = [
            "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "font/woff", "font/woff2",
            "application/zip", "application/gzip", "application/zstd", "application/x-bzip2", "application/x-xz",
            "application/x-7z-compressed", "application/x-rar-compressed", "application/pdf", "video/*", "audio/*",
        ]
        /// Serve `FILE.gz` beside `FILE` to clients that accept gzip, when it is not older than `FILE`.
        public var precompressed = true
        /// Memory each worker keeps for compressed bodies (least recently used dropped first); 0 keeps none.
        public var cacheBytes = 33_554_432
        /// Files up to this size are compressed whole and cached; larger ones stream through zlib with
        /// chunked transfer coding (HTTP/1.0 clients get them uncompressed).
        public var cacheFileMax = 1_048_576
        /// The codings offered, in the order that breaks a tie in the client's weights (the smallest
        /// body first): `compression.encodings`.
        public var encodings: [ContentCoding] = [.br, .zstd, .gzip]
        /// Brotli quality and zstd level of bodies compressed whole when first asked for (answered at
        /// once), and the levels a helper thread makes them at next, replacing them in the cache.
        public var brotliLevel = 4
        public var zstdLevel = 6
        public var brotliBestLevel = 11
        public var zstdBestLevel = 19
        /// Levels for files above `cacheFileMax`, compressed while they are sent (gzip: `level`).
        public var brotliStreamLevel = 4
        public var zstdStreamLevel = 3

        /// Everything at its default, or the first fields given (as the memberwise initializer would).
        package init(enabled: Bool = true, level: Int = 6, minLength: Int = 256, types: [String]? = nil, never: [String]? = nil,
                     precompressed: Bool = true, cacheBytes: Int = 33_554_432, cacheFileMax: Int = 1_048_576,
                     encodings: [ContentCoding] = [.br, .zstd, .gzip]) {
            self.enabled = enabled
            self.level = level
            self.minLength = minLength
            if let types { self.types = types }
            if let never { self.never = never }
            self.precompressed = precompressed
            self.cacheBytes = cacheBytes
            self.cacheFileMax = cacheFileMax
            self.encodings = encodings
        }

        /// The level a body in `coding` is compressed at while it is sent.
        public func streamLevel(_ coding: ContentCoding) -> Int {
            switch coding {
            case .br: return brotliStreamLevel
            case .zstd: return zstdStreamLevel
            case .gzip: return level
            }
        }

        /// The level a body in `coding` ends at in the cache (gzip: its one level).
        public func bestLevel(_ coding: ContentCoding) -> Int {
            switch coding {
            case .br: return brotliBestLevel
            case .zstd: return zstdBestLevel
            case .gzip: return level
            }
        }

        /// The level a form compressed here in `coding` is made at.
        public func level(_ coding: ContentCoding) -> Int {
            switch coding {
            case .br: return brotliLevel
            case .zstd: return zstdLevel
            case .gzip: return level
            }
        }

        /// Whether `contentType` (with or without parameters) is to be compressed.
        public func compresses(_ contentType: String) -> Bool {
            let type = String(contentType.prefix { $0 != ";" && $0 != " " }).lowercased()
            func matches(_ pattern: String) -> Bool {
                if pattern == "*/*" { return true }
                let pattern = pattern.lowercased()
                if let star = pattern.firstIndex(of: "*") {
                    // "text/*", or "application/*+json" (a structured-syntax suffix).
                    let prefix = pattern[..<star]
                    let suffix = pattern[pattern.index(after: star)...]
                    return type.count >= prefix.count + suffix.count && type.hasPrefix(prefix) && type.hasSuffix(suffix)
                }
                return type == pattern
            }
            return types.contains(where: matches) && !never.contains(where: matches)
        }
    }

}
