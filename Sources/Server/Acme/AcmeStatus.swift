import Foundation
import Glibc

/// What the ACME process last did for one certificate, kept beside it (`status.json` in the
/// certificate's directory): the ACME process plans from it after a restart, `webserver status` and
/// /metrics read it.
public struct AcmeStatus: Codable, Sendable, Equatable {
    public var names: [String] = []
    /// The directory URL the certificate came from (another one in the config means a new order).
    public var directory: String = ""
    public var issuer: String?
    public var serial: String?
    public var notBefore: Int64?
    public var notAfter: Int64?
    /// When the next order is planned (renewal, or the retry after a failure), seconds since the epoch.
    public var nextAttempt: Int64?
    /// Whether `nextAttempt` came from the CA's renewal information (RFC 9773).
    public var renewalInfo = false
    public var lastSuccess: Int64?
    public var lastError: String?
    public var lastErrorAt: Int64?
    /// Failures since the last success (the backoff's step).
    public var failures = 0
    /// What the failing orders asked for (the directory URL and the names): a configuration that asks for
    /// something else is not held to their backoff.
    public var failedFor: String?
    /// Orders placed for this certificate since its state was made.
    public var orders = 0

    public init() {}

    public static func read(_ path: String) -> AcmeStatus? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try? decoder.decode(AcmeStatus.self, from: data)
    }

    func write(_ path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        try AcmeFiles.write(path, String(decoding: try encoder.encode(self), as: UTF8.self) + "\n", mode: 0o644)
    }
}

/// The state directory's files, written atomically (a temporary file renamed into place).
enum AcmeFiles {
    static func write(_ path: String, _ text: String, mode: mode_t) throws {
        do {
            try DevCertificates.writeAtomically(path, mode: mode) { file in
                text.utf8.withContiguousStorageIfAvailable { fwrite($0.baseAddress, 1, $0.count, file) == $0.count }
                    ?? (fputs(text, file) >= 0)
            }
        } catch {
            throw AcmeHTTP.Failure(description: error.description)
        }
    }

    /// Makes `path` (0700) and the directories above it (0755).
    static func makeDirectory(_ path: String) throws {
        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, prefix == path ? 0o700 : 0o755) != 0 && errno != EEXIST {
                throw AcmeHTTP.Failure(description: "cannot make \(prefix): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// The directories every ACME certificate needs, made (and given to the server's user) by the
    /// supervisor before it drops privileges, so the ACME process and the certificate watch find them.
    public static func prepare(_ config: ServerConfig) throws {
        let account = config.effectiveUser.flatMap { getpwnam($0)?.pointee }
        for certificate in config.acmeCertificates {
            let settings = certificate.settings
            for directory in [settings.state, "\(settings.state)/certificates", settings.certificateDirectory(for: certificate.names[0]),
                              "\(settings.state)/challenges", settings.http01Directory, settings.tlsALPN01Directory, "\(settings.state)/accounts"] {
                do { try makeDirectory(directory) } catch {
                    throw AcmeHTTP.Failure(description: "acme.state (\(settings.place)): \(error); set acme.state to a directory the server can write")
                }
                if geteuid() == 0, let account { chown(directory, account.pw_uid, account.pw_gid) }
            }
        }
    }
}
