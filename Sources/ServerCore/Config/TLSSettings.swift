/// A certificate chain (PEM: the leaf, then intermediates) and its unencrypted private key.
public struct CertificatePair: Codable, Sendable, Equatable {
    public var certificate: String
    public var key: String
    /// The line of the file that named it (0: a flag, or unknown), and the key it was written under
    /// (`tls.cert`, `sites[2].cert`): where an issue about its files points. Not part of the pair.
    public var line = 0
    public var origin = "tls.cert"

    public init(certificate: String, key: String, line: Int = 0, origin: String = "tls.cert") {
        self.certificate = certificate
        self.key = key
        self.line = line
        self.origin = origin
    }

    public static func == (a: CertificatePair, b: CertificatePair) -> Bool { a.certificate == b.certificate && a.key == b.key }
}

/// A site's certificates (an ECDSA and an RSA one may stand side by side; OpenSSL picks by what the
/// client supports) and the OCSP response stapled for it.
public struct TLSSite: Codable, Sendable, Equatable {
    public var certificates: [CertificatePair] = []
    /// A DER OCSP response the operator keeps fresh, or nil.
    public var ocsp: String? = nil

    package init(certificates: [CertificatePair] = [], ocsp: String? = nil) {
        self.certificates = certificates
        self.ocsp = ocsp
    }
}

extension ServerConfig {
    /// HTTPS: the sockets that speak TLS, and the certificates they present.
    public struct TLSSettings: Codable, Sendable, Equatable {
        /// Sockets that speak TLS, written like `listen`.
        public var listen: [ListenSocket] = []
        /// `tls.cert`, `tls.key` (lists for several key types) and `tls.ocsp`: what a name no other
        /// site claims gets.
        public var defaultSite = TLSSite()
        /// `tls.sites`: more sites on the same sockets, chosen by SNI.
        public var sites: [TLSSite] = []
        /// Lowest protocol version.
        public var minVersion = TLSVersion.tls12
        /// TLS 1.2 cipher list (OpenSSL syntax): forward-secret AEAD suites only, as Mozilla's
        /// "intermediate" profile without the DHE ones (no CBC, so no LUCKY13 class of attacks).
        public var ciphers: String = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
        /// TLS 1.3 cipher suites.
        public var ciphersuites: String = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
        /// Key exchange groups, in order of preference.
        public var groups: String = "X25519:P-256"
        /// Time a client has to finish the TLS handshake, in milliseconds.
        public var handshakeMilliseconds: Int = 10_000
        /// Answer requests on the plain sockets with a redirect to the first TLS socket (301 for GET and
        /// HEAD, 308 for the rest), except ACME HTTP-01 challenges beneath /.well-known/acme-challenge/.
        public var redirectHTTP = false
        /// The port of the first TLS socket as bound (port 0 resolved), set by the supervisor for redirects.
        public var redirectPort: Int = 0
        /// The Strict-Transport-Security value sent on TLS responses (nil: none); never for localhost,
        /// 127.0.0.1 or ::1, which a browser would otherwise pin for every local project. At most
        /// `hstsMaximumLength` bytes, so a response head always has room for it.
        public var hsts: String? = nil
        public static let hstsMaximumLength = 512
        /// Session resumption (tickets, and the worker's session cache); off makes every connection a full
        /// handshake, as the benchmark's row (f) needs.
        public var sessionResumption = true
        /// How often the supervisor makes a new session ticket key (the previous one still decrypts).
        public var ticketKeyRotationMilliseconds: Int = 43_200_000
        /// When the default site's certificate and key are both missing, make them with the local
        /// development CA (`webserver cert dev`).
        public var devCertificate = false
        /// Set by the loader when it just made the development certificate: the CA to tell the user about.
        public var madeDevCertificate: String? = nil

        public init() {}

        /// Every site: the default first.
        public var allSites: [TLSSite] { [defaultSite] + sites }

        /// Every certificate, key and OCSP file the TLS sockets read (what the supervisor watches and a
        /// reload checks).
        public var files: [String] {
            allSites.flatMap { site in site.certificates.flatMap { [$0.certificate, $0.key] } + (site.ocsp.map { [$0] } ?? []) }
        }
    }
}
