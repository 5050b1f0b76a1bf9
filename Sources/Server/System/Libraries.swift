import CBrotli
import COpenSSL
import CZlib
import CZstd

/// The versions of the system libraries the server links: OpenSSL (TLS), zlib (gzip), brotli and zstd.
public enum Libraries {
    public static let version = "0.1.0"

    /// `OpenSSL 3.0.19 27 Jan 2026`, as the linked library reports it (not the headers).
    public static var openSSL: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }

    /// `1.2.13`, as the linked library reports it.
    public static var zlib: String { String(cString: zlibVersion()) }

    /// `1.0.9`, as the linked library reports it (MAJOR << 24 | MINOR << 12 | PATCH).
    public static var brotli: String {
        let number = BrotliEncoderVersion()
        return "\(number >> 24).\((number >> 12) & 0xFFF).\(number & 0xFFF)"
    }

    /// `1.5.4`, as the linked library reports it.
    public static var zstd: String { String(cString: ZSTD_versionString()) }

    /// The line `webserver --version` prints.
    public static var versionLine: String { "webserver \(version) (\(openSSL), zlib \(zlib), brotli \(brotli), zstd \(zstd))" }
}
