import COpenSSL
import CZlib

/// The versions of the system libraries the server links: OpenSSL (TLS) and zlib (gzip).
public enum Libraries {
    public static let version = "0.1.0"

    /// `OpenSSL 3.0.19 27 Jan 2026`, as the linked library reports it (not the headers).
    public static var openSSL: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }

    /// `1.2.13`, as the linked library reports it.
    public static var zlib: String { String(cString: zlibVersion()) }

    /// The line `webserver --version` prints.
    public static var versionLine: String { "webserver \(version) (\(openSSL), zlib \(zlib))" }
}
