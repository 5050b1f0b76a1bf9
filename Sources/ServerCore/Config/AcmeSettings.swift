import Glibc

/// `acme`: certificates from an ACME CA (RFC 8555), obtained and renewed by the server's ACME process.
/// Written at the top level (the default for every site) or in a site (over the top-level values); a
/// site with names, no `cert` of its own and `acme` gets its names' certificate. `acme: off` in a site
/// turns the top-level one off for it.
public struct AcmeSettings: Codable, Sendable, Equatable {
    /// The CA's directory URL (Let's Encrypt: https://acme-v02.api.letsencrypt.org/directory).
    public var directory: String = ""
    /// The account's contact address (mailto:), or none.
    public var email: String? = nil
    /// Whether the operator agrees to the CA's terms of service (required: the CA asks for it).
    public var agreeTerms = false
    /// The challenge types offered, in order of preference.
    public var challenges: [AcmeChallenge] = [.http01, .tlsALPN01]
    /// Where the account, the certificates and the challenge responses are kept.
    public var state: String = AcmeSettings.defaultState
    /// PEM file of CAs to trust for the ACME server's HTTPS (a private CA's), instead of the system's.
    public var caBundle: String? = nil
    /// External account binding (RFC 8555 section 7.3.4), which ZeroSSL, Google and some private CAs
    /// require: the key identifier and the base64url MAC key the CA gave.
    public var eab: ExternalAccount? = nil
    /// Where it was written (`file:line`), for what is said about it.
    public var place: String = ""

    /// `/var/lib/webserver/acme` for a server started as root; under systemd, `acme` in the unit's
    /// StateDirectory (`$STATE_DIRECTORY`: /var/lib/webserver for the shipped unit); else
    /// `$XDG_DATA_HOME/webserver/acme` (`~/.local/share/webserver/acme`), as Caddy keeps its own.
    public static var defaultState: String {
        if geteuid() == 0 { return "/var/lib/webserver/acme" }
        if let state = getenv("STATE_DIRECTORY").map({ String(cString: $0) }), let first = state.split(separator: ":").first, first.hasPrefix("/") {
            return "\(first)/acme"
        }
        if let data = getenv("XDG_DATA_HOME").map({ String(cString: $0) }), data.hasPrefix("/") { return "\(data)/webserver/acme" }
        let home = getenv("HOME").map { String(cString: $0) } ?? (getpwuid(getuid()).map { String(cString: $0.pointee.pw_dir) } ?? "/tmp")
        return "\(home)/.local/share/webserver/acme"
    }

    public init() {}

    /// The directory of one certificate's files, named after the site's first name.
    public func certificateDirectory(for name: String) -> String { "\(state)/certificates/\(name)" }
    /// The key and the certificate chain (leaf first) in one PEM file (0600), as the ACME process writes
    /// them: one rename replaces both, so nothing ever reads a new key with an old certificate.
    public func certificatePair(for name: String, origin: String) -> CertificatePair {
        let file = "\(certificateDirectory(for: name))/certificate.pem"
        return CertificatePair(certificate: file, key: file, origin: origin)
    }
    /// HTTP-01 key authorizations, one file per token.
    public var http01Directory: String { "\(state)/challenges/http-01" }
    /// TLS-ALPN-01 certificates (certificate and key in one PEM), one file per name.
    public var tlsALPN01Directory: String { "\(state)/challenges/tls-alpn-01" }
    /// What the ACME process last did for each certificate, for `status` and /metrics.
    public var statusFile: String { "\(state)/status.json" }
}

/// `acme.eab`: the external account an ACME account is bound to.
public struct ExternalAccount: Codable, Sendable, Equatable {
    public var keyID: String
    /// The MAC key as the CA gives it (base64url).
    public var macKey: String

    public init(keyID: String, macKey: String) {
        self.keyID = keyID
        self.macKey = macKey
    }
}

/// `acme.challenges`: how the CA checks that the server controls a name.
public enum AcmeChallenge: String, ConfigChoice {
    /// A file at http://NAME/.well-known/acme-challenge/TOKEN (port 80), answered by the workers.
    case http01 = "http-01"
    /// A TLS handshake on port 443 with ALPN acme-tls/1 presenting a certificate made for it (RFC 8737).
    case tlsALPN01 = "tls-alpn-01"
}

/// A site whose certificate comes from ACME: its names, its settings, where its files are.
public struct AcmeCertificate: Codable, Sendable, Equatable {
    public var names: [String]
    public var settings: AcmeSettings
    /// The index of the site (`ServerConfig.allSites`).
    public var site: Int
    public var pair: CertificatePair
    /// Whether the certificate and key are on disk (else TLS clients asking for these names are refused
    /// until they arrive).
    public var issued: Bool
}

extension ServerConfig {
    /// Every site that gets its certificate by ACME, in site order.
    public var acmeCertificates: [AcmeCertificate] {
        sites.enumerated().compactMap { position, site in
            guard let settings = site.acme, !site.names.isEmpty else { return nil }
            let pair = settings.certificatePair(for: site.names[0], origin: "sites[\(position)].acme")
            return AcmeCertificate(names: site.names, settings: settings, site: position + 1, pair: pair, issued: site.acmeIssued)
        }
    }
}
