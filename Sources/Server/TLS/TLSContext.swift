import CSystemShims
import CTicketKeys
import COpenSSL
import Glibc

/// A TLS server context from a certificate chain and its key: what every TLS connection in a worker is
/// made from. TLS 1.2 and 1.3 only by default, X25519 and P-256, ALPN h2 (unless HTTP/2 is off) and http/1.1, no renegotiation, no
/// compression, partial writes and buffers released while a connection is idle.
public final class TLSContext: @unchecked Sendable {
    let context: OpaquePointer
    /// The stapled OCSP response (DER), owned here; the callback copies it for each handshake.
    var staple: UnsafeMutablePointer<cossl_ocsp_staple>?

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// A context presenting every certificate of `site`: one per key type, so an ECDSA and an RSA
    /// certificate for the same names sit side by side and OpenSSL picks the one the client's signature
    /// algorithms allow; and its OCSP response, when it has one.
    public init(site: TLSSite, settings: ServerConfig.TLSSettings, http2: Bool = false) throws(Failure) {
        guard let context = SSL_CTX_new(TLS_server_method()) else { throw Failure(description: TLSContext.lastError("SSL_CTX_new")) }
        self.context = context
        let resumption = settings.sessionResumption
        _ = cossl_SSL_CTX_set_min_proto_version(context, settings.minVersion == .tls13 ? cossl_TLS1_3_VERSION : cossl_TLS1_2_VERSION)
        guard SSL_CTX_set_cipher_list(context, settings.ciphers) == 1 else {
            throw Failure(description: TLSContext.lastError("tls.ciphers '\(settings.ciphers)' names no usable TLS 1.2 cipher"))
        }
        guard SSL_CTX_set_ciphersuites(context, settings.ciphersuites) == 1 else {
            throw Failure(description: TLSContext.lastError("tls.ciphersuites '\(settings.ciphersuites)' names no usable TLS 1.3 suite"))
        }
        guard cossl_SSL_CTX_set1_groups_list(context, settings.groups) == 1 else {
            throw Failure(description: TLSContext.lastError("tls.groups '\(settings.groups)' names no usable group"))
        }
        _ = cossl_SSL_CTX_set_options(context, cossl_SSL_OP_NO_RENEGOTIATION | cossl_SSL_OP_NO_COMPRESSION | cossl_SSL_OP_CIPHER_SERVER_PREFERENCE)
        _ = cossl_SSL_CTX_set_mode(context, cossl_SSL_MODE_ENABLE_PARTIAL_WRITE | cossl_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | cossl_SSL_MODE_RELEASE_BUFFERS)
        if resumption {
            _ = cossl_SSL_CTX_set_session_cache_mode(context, cossl_SSL_SESS_CACHE_SERVER)
            // Tickets under the keys every worker shares (from the supervisor), so resumption works on
            // whichever worker a client reaches.
            cs_use_shared_ticket_keys(UnsafeMutableRawPointer(context))
        } else {
            _ = cossl_SSL_CTX_set_session_cache_mode(context, 0)
            _ = cossl_SSL_CTX_set_options(context, cossl_SSL_OP_NO_TICKET)
            _ = SSL_CTX_set_num_tickets(context, 0)
        }
        cossl_use_alpn(context, http2 ? 1 : 0)
        for pair in site.certificates {
            let (certificate, key) = (pair.certificate, pair.key)
            try TLSContext.check(certificate: certificate, key: key)
            guard SSL_CTX_use_certificate_chain_file(context, certificate) == 1 else {
                throw Failure(description: TLSContext.lastError("cannot read the certificate \(certificate)"))
            }
            guard SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) == 1 else {
                let detail = TLSContext.lastError("cannot read the key \(key)")
                if detail.contains("key values mismatch") {
                    throw Failure(description: "the key \(key) does not match the certificate \(certificate)")
                }
                throw Failure(description: detail)
            }
            guard SSL_CTX_check_private_key(context) == 1 else {
                throw Failure(description: "the key \(key) does not match the certificate \(certificate)")
            }
        }
        if let ocsp = site.ocsp { try useOCSPResponse(ocsp) }
    }

    /// Whether a certificate of this context is valid for `name` (SAN, wildcards of one label).
    func serves(_ name: UnsafePointer<CChar>) -> Bool {
        guard let certificate = SSL_CTX_get0_certificate(context) else { return false }
        return X509_check_host(certificate, name, 0, 0, nil) == 1
    }

    deinit {
        SSL_CTX_free(context)
        if let staple {
            staple.pointee.der?.deallocate()
            staple.deallocate()
        }
    }

    /// Staples the OCSP response in `path` (DER, as `openssl ocsp -respout` writes it) to every
    /// handshake that asks for one. The response must parse and say "successful".
    func useOCSPResponse(_ path: String) throws(Failure) {
        guard let file = fopen(path, "rb") else { throw Failure(description: "the OCSP response \(path) is not readable") }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        fclose(file)
        let status: Int32 = bytes.withUnsafeBufferPointer { buffer in
            var pointer: UnsafePointer<UInt8>? = buffer.baseAddress
            guard let response = d2i_OCSP_RESPONSE(nil, &pointer, buffer.count) else { return -1 }
            defer { OCSP_RESPONSE_free(response) }
            return OCSP_response_status(response)
        }
        guard status >= 0 else { throw Failure(description: "the OCSP response \(path) is not a DER OCSP response") }
        guard status == OCSP_RESPONSE_STATUS_SUCCESSFUL else {
            throw Failure(description: "the OCSP response \(path) is not successful (status \(status))")
        }
        let der = UnsafeMutablePointer<UInt8>.allocate(capacity: bytes.count)
        der.initialize(from: bytes, count: bytes.count)
        let staple = UnsafeMutablePointer<cossl_ocsp_staple>.allocate(capacity: 1)
        staple.initialize(to: cossl_ocsp_staple(der: der, length: bytes.count))
        self.staple = staple
        cossl_use_ocsp_staple(context, staple)
    }

    /// Checks the files before OpenSSL reads them, for errors an operator can act on, in words rather
    /// than OpenSSL's ("DECODER routines::unsupported"): missing, unreadable, a directory, a certificate
    /// where the key belongs (or the other way), no PEM at all, or a key protected by a passphrase (the
    /// server cannot ask for one).
    static func check(certificate: String, key: String) throws(Failure) {
        for (what, path) in [("certificate", certificate), ("key", key)] {
            guard access(path, F_OK) == 0 else { throw Failure(description: "the \(what) \(path) does not exist") }
            var info = stat()
            if stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR {
                throw Failure(description: "the \(what) \(path) is a directory; it should be a PEM file")
            }
            guard access(path, R_OK) == 0 else { throw Failure(description: "the \(what) \(path) is not readable") }
        }
        let keyLabels = pemLabels(key)
        let certificateLabels = pemLabels(certificate)
        if keyLabels.contains(where: { $0.hasPrefix("ENCRYPTED PRIVATE KEY") }) || keyLabels.contains("PROC-TYPE: 4,ENCRYPTED") {
            throw Failure(description: "the key \(key) is protected by a passphrase; the server cannot ask for it (remove it with: openssl pkey -in \(key) -out plain.pem)")
        }
        if !keyLabels.contains(where: { $0.hasSuffix("PRIVATE KEY") }) {
            let swapped = keyLabels.contains("CERTIFICATE") && certificateLabels.contains(where: { $0.hasSuffix("PRIVATE KEY") })
            throw Failure(description: keyLabels.contains("CERTIFICATE")
                ? "the key \(key) holds a certificate, not a private key\(swapped ? " (cert and key have traded places)" : "")"
                : "the key \(key) holds no PEM private key (a -----BEGIN PRIVATE KEY----- block)")
        }
        if !certificateLabels.contains("CERTIFICATE") {
            throw Failure(description: certificateLabels.contains(where: { $0.hasSuffix("PRIVATE KEY") })
                ? "the certificate \(certificate) holds a private key, not a certificate"
                : "the certificate \(certificate) holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)")
        }
    }

    /// The labels of the PEM blocks in a file (`CERTIFICATE`, `PRIVATE KEY`, `EC PRIVATE KEY` ...), and
    /// `PROC-TYPE: 4,ENCRYPTED` for an old-style encrypted key; read line by line, the first 1 MiB.
    static func pemLabels(_ path: String) -> [String] {
        guard let file = fopen(path, "r") else { return [] }
        defer { fclose(file) }
        var labels: [String] = []
        var buffer = [CChar](repeating: 0, count: 256)
        var read = 0
        while read < 1_048_576, fgets(&buffer, Int32(buffer.count), file) != nil {
            let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            read += line.utf8.count
            if line.hasPrefix("-----BEGIN "), let end = line.range(of: "-----", range: line.index(line.startIndex, offsetBy: 11)..<line.endIndex) {
                labels.append(String(line[line.index(line.startIndex, offsetBy: 11)..<end.lowerBound]))
            } else if line.hasPrefix("Proc-Type: 4,ENCRYPTED") {
                labels.append("PROC-TYPE: 4,ENCRYPTED")
            }
        }
        return labels
    }

    /// The expiry of the leaf certificate in `path`, as seconds since the epoch, if it can be read.
    public static func expiry(ofCertificate path: String) -> Int64? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        guard let certificate = PEM_read_X509(file, nil, nil, nil) else { return nil }
        defer { X509_free(certificate) }
        guard let notAfter = X509_get0_notAfter(certificate) else { return nil }
        var time = tm()
        guard ASN1_TIME_to_tm(notAfter, &time) == 1 else { return nil }
        return Int64(timegm(&time))
    }

    /// The oldest error on OpenSSL's queue, prefixed with what was being done; clears the queue.
    static func lastError(_ doing: String) -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return doing }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return "\(doing): \(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))"
    }
}

/// One TLS connection's OpenSSL state, freed with it.
///
/// Its socket is OpenSSL's through `cossl_out` (Sources/COpenSSL/shim.h): the records one `write` makes
/// are gathered into the worker's `gather` buffer and leave in one send(2), where a socket BIO sends
/// each 16 KiB record on its own. Records the socket does not take wait here (`hasPendingOutput`) and
/// go first at the next `write` or `flushPending`; the connection counts them as queued output.
final class TLSSession {
    let ssl: OpaquePointer
    var handshakeDone = false
    private let out: UnsafeMutablePointer<cossl_out>

    init?(context: TLSContext, fd: Int32, gather: UnsafeMutableRawBufferPointer) {
        guard let ssl = SSL_new(context.context) else { return nil }
        out = .allocate(capacity: 1)
        out.initialize(to: cossl_out())
        out.pointee.fd = fd
        out.pointee.gather = gather.baseAddress!.assumingMemoryBound(to: UInt8.self)
        out.pointee.gatherCapacity = gather.count
        self.ssl = ssl
        guard cossl_out_attach(ssl, out) == 1 else {
            SSL_free(ssl)
            out.deallocate()
            return nil
        }
        SSL_set_accept_state(ssl)
    }

    deinit {
        SSL_free(ssl)
        cossl_out_release(out)
        out.deallocate()
    }

    /// Records OpenSSL made that the socket has not taken yet.
    var hasPendingOutput: Bool { cossl_out_has_pending(out) != 0 }

    /// Sends the records that wait: `.done` when none is left, `.wantWrite` when the socket is full.
    func flushPending() -> Progress {
        switch cossl_out_flush(out) {
        case 1: return .done
        case 0: return .wantWrite
        default: return .failed
        }
    }

    enum Progress {
        case done
        case wantRead
        case wantWrite
        case failed
    }

    /// Advances the handshake without blocking.
    func handshake() -> Progress {
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            handshakeDone = true
            return .done
        }
        return progress(result)
    }

    func progress(_ result: Int32) -> Progress {
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        default:
            ERR_clear_error()
            return .failed
        }
    }

    /// Like read(2): bytes read, 0 at the end of the stream, -1 with errno EAGAIN when nothing is there yet.
    func read(_ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        let result = SSL_read(ssl, buffer, Int32(min(count, Int(Int32.max))))
        if result > 0 { return Int(result) }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            errno = EAGAIN
            return -1
        case SSL_ERROR_ZERO_RETURN:
            return 0
        default:
            ERR_clear_error()
            errno = ECONNRESET
            return -1
        }
    }

    /// Like send(2): bytes taken (maybe fewer), -1 with errno EAGAIN when the socket is full (records from
    /// before still wait). Past one record's worth, the records are gathered and leave in one send, and
    /// all of `count` is taken: what the socket does not take waits in `hasPendingOutput`.
    func write(_ buffer: UnsafeRawPointer, _ count: Int) -> Int {
        guard count > 0 else { return 0 }
        if hasPendingOutput, let failed = TLSSession.failure(flushPending()) { return failed }
        // One record: sent as it is made, as OpenSSL's socket BIO would (nothing to gather).
        if count <= Transport.recordSize {
            let result = SSL_write(ssl, buffer, Int32(count))
            return result > 0 ? Int(result) : TLSSession.failure(progress(result)) ?? -1
        }
        cossl_out_gather_begin(out)
        var taken = 0
        var stopped = Progress.done
        while taken < count {
            let result = SSL_write(ssl, buffer + taken, Int32(min(count - taken, Int(Int32.max))))
            guard result > 0 else {
                stopped = progress(result)
                break
            }
            taken += Int(result)
        }
        if cossl_out_gather_end(out) < 0 { return TLSSession.failure(.failed)! }
        return taken > 0 ? taken : TLSSession.failure(stopped) ?? 0
    }

    /// What a write that did not go on returns: -1 with errno EAGAIN (the socket is full) or EPIPE (the
    /// connection is over); nil when it did go on.
    private static func failure(_ progress: Progress) -> Int? {
        switch progress {
        case .done: return nil
        case .failed: errno = EPIPE
        case .wantRead, .wantWrite: errno = EAGAIN
        }
        return -1
    }

    /// Sends close_notify if it can go at once; the TCP close follows either way.
    func notifyClose() {
        if handshakeDone { _ = SSL_shutdown(ssl) }
        ERR_clear_error()
    }

    /// Whether the handshake was a TLS-ALPN-01 validation (ALPN acme-tls/1): nothing follows it.
    var choseACME: Bool { cossl_alpn_is_acme(ssl) != 0 }

    /// Whether the handshake chose h2 by ALPN.
    var choseHTTP2: Bool { cossl_alpn_is_h2(ssl) != 0 }

    /// Whether decrypted bytes are buffered inside OpenSSL (epoll cannot see them).
    var hasBufferedInput: Bool { SSL_pending(ssl) > 0 }
}

/// Every certificate a worker presents, chosen by the name the client sends (SNI) during the handshake:
/// a name a site claims (`sites[].names`, the same table requests are routed with) gets that site's
/// certificates, or the default ones when it has none of its own; another name gets the first
/// `tls.sites` entry whose certificate covers it, else the default (`tls.cert`). Without a default
/// certificate, a handshake for a name no site claims is refused (unrecognized_name), as nginx's
/// `ssl_reject_handshake`.
public final class TLSSites: @unchecked Sendable {
    public let defaultContext: TLSContext
    /// Whether `tls.cert` is set (else only the sites' names complete a handshake).
    let hasDefaultCertificate: Bool
    /// `tls.sites`: chosen by what their certificates cover.
    let sites: [TLSContext]
    /// By site index (`ServerConfig.allSites`): the site's own context, or nil (the default's).
    let siteContexts: [TLSContext?]
    let table: SiteTable
    /// Whether any site has its own certificate (else every handshake presents the default's).
    let siteCertificates: Bool
    /// By site index: the site gets its certificate by ACME and has none yet (its names' handshakes are
    /// refused until it arrives).
    let awaitingCertificate: [Bool]
    /// By site index: where the ACME process writes the site's TLS-ALPN-01 challenge certificates (nil:
    /// the site does not take that challenge).
    let tlsALPNChallenges: [String?]

    public init(config: ServerConfig) throws(TLSContext.Failure) {
        let settings = config.tls
        let http2 = config.http2.enabled
        defaultContext = try TLSContext(site: settings.defaultSite, settings: settings, http2: http2)
        hasDefaultCertificate = !settings.defaultSite.certificates.isEmpty
        var sites: [TLSContext] = []
        for site in settings.sites { sites.append(try TLSContext(site: site, settings: settings, http2: http2)) }
        self.sites = sites
        var siteContexts: [TLSContext?] = [nil]
        for site in config.sites {
            if let own = site.certificates, !own.certificates.isEmpty {
                do {
                    siteContexts.append(try TLSContext(site: own, settings: settings, http2: http2))
                } catch {
                    throw TLSContext.Failure(description: "site \(site.names.first ?? "") (\(site.place)): \(error.description)")
                }
            } else {
                siteContexts.append(nil)
            }
        }
        self.siteContexts = siteContexts
        siteCertificates = siteContexts.contains { $0 != nil }
        awaitingCertificate = config.allSites.map { $0.acme != nil && !$0.acmeIssued }
        tlsALPNChallenges = config.allSites.map { site in
            site.acme.flatMap { $0.challenges.contains(.tlsALPN01) ? $0.tlsALPN01Directory : nil }
        }
        table = SiteTable(config.allSites)
        if tlsALPNChallenges.contains(where: { $0 != nil }) {
            SSL_CTX_set_client_hello_cb(defaultContext.context, { ssl, alert, argument in
                guard let ssl, let argument, cossl_offers_acme_tls(ssl) == 1 else { return SSL_CLIENT_HELLO_SUCCESS }
                let sites = Unmanaged<TLSSites>.fromOpaque(argument).takeUnretainedValue()
                var name = [CChar](repeating: 0, count: 256)
                guard cossl_client_hello_server_name(ssl, &name, name.count) == 1,
                      let context = sites.challengeContext(for: name) else {
                    alert?.pointee = cossl_SSL_AD_UNRECOGNIZED_NAME
                    return SSL_CLIENT_HELLO_ERROR
                }
                _ = SSL_set_SSL_CTX(ssl, context)
                SSL_CTX_free(context)  // the handshake holds its own reference
                return SSL_CLIENT_HELLO_SUCCESS
            }, Unmanaged.passUnretained(self).toOpaque())
        }
        guard !sites.isEmpty || siteCertificates || !hasDefaultCertificate || awaitingCertificate.contains(true) else { return }
        cossl_SSL_CTX_set_servername_callback(defaultContext.context, { ssl, alert, argument in
            guard let ssl, let argument else { return cossl_SSL_TLSEXT_ERR_OK }
            let sites = Unmanaged<TLSSites>.fromOpaque(argument).takeUnretainedValue()
            // A TLS-ALPN-01 validation already has its challenge context (from the ClientHello callback).
            if SSL_get_SSL_CTX(ssl) != sites.defaultContext.context { return cossl_SSL_TLSEXT_ERR_OK }
            guard let name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else {
                if sites.hasDefaultCertificate { return cossl_SSL_TLSEXT_ERR_OK }
                alert?.pointee = cossl_SSL_AD_UNRECOGNIZED_NAME
                return cossl_SSL_TLSEXT_ERR_ALERT_FATAL
            }
            let site = sites.table.site(serverName: name)
            if site >= 0 {
                if let context = sites.siteContexts[site] {
                    _ = SSL_set_SSL_CTX(ssl, context.context)
                } else if sites.awaitingCertificate[site] {
                    alert?.pointee = cossl_SSL_AD_UNRECOGNIZED_NAME
                    return cossl_SSL_TLSEXT_ERR_ALERT_FATAL
                }
                return cossl_SSL_TLSEXT_ERR_OK
            }
            if let context = sites.sites.first(where: { $0.serves(name) }) {
                _ = SSL_set_SSL_CTX(ssl, context.context)
                return cossl_SSL_TLSEXT_ERR_OK
            }
            if sites.hasDefaultCertificate { return cossl_SSL_TLSEXT_ERR_OK }
            alert?.pointee = cossl_SSL_AD_UNRECOGNIZED_NAME
            return cossl_SSL_TLSEXT_ERR_ALERT_FATAL
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    /// A context presenting the TLS-ALPN-01 certificate the ACME process wrote for `name` (a name of a
    /// site taking that challenge), choosing ALPN acme-tls/1; nil when there is none. Made for each
    /// validation handshake (a CA makes a few per order), returned with one reference for the caller.
    func challengeContext(for name: UnsafePointer<CChar>) -> OpaquePointer? {
        let site = table.site(serverName: name)
        guard site >= 0, let directory = tlsALPNChallenges[site] else { return nil }
        let text = String(cString: name)
        guard let valid = SiteNames.valid(text), !valid.hasPrefix("*"), !valid.hasPrefix("[") else { return nil }
        let path = "\(directory)/\(valid).pem"
        guard access(path, R_OK) == 0, let context = SSL_CTX_new(TLS_server_method()) else { return nil }
        _ = cossl_SSL_CTX_set_min_proto_version(context, cossl_TLS1_2_VERSION)
        guard SSL_CTX_use_certificate_chain_file(context, path) == 1, SSL_CTX_use_PrivateKey_file(context, path, SSL_FILETYPE_PEM) == 1 else {
            ERR_clear_error()
            SSL_CTX_free(context)
            return nil
        }
        cossl_use_acme_alpn(context)
        return context
    }

    /// Which site's certificates a finished handshake presented: the index of the site the server name
    /// chose when that site has its own, else 0 (the default certificate, or a `tls.sites` one, both
    /// belonging to the default site). A request whose Host reaches a site with another certificate is
    /// misdirected (421).
    func certificateSite(of session: TLSSession) -> Int32 {
        guard siteCertificates, let name = SSL_get_servername(session.ssl, TLSEXT_NAMETYPE_host_name) else { return 0 }
        let site = table.site(serverName: name)
        return site > 0 && siteContexts[site] != nil ? Int32(site) : 0
    }
}
