import COpenSSL
import Foundation
import Glibc

/// Development certificates: a local certificate authority made once, limited by name constraints to
/// names and addresses that only reach this machine or a private network (localhost, *.localhost,
/// *.test, *.local, *.internal, *.home.arpa, 127.0.0.0/8, ::1, 10.0.0.0/8, 172.16.0.0/12,
/// 192.168.0.0/16, fc00::/7), and a leaf it signs for localhost, 127.0.0.1, ::1 and any further such
/// names (a LAN address lets a phone on the same network test the site). Made with OpenSSL's API; keys
/// are written 0600 and atomically (a temporary file renamed into place).
public enum DevCertificates {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// What was made or found, for the report.
    public struct Result {
        public var caCertificate: String
        public var certificate: String
        public var key: String
        public var caCreated: Bool
        public var caFingerprint: String
        public var fingerprint: String
        public var caExpiry: Int64
        public var expiry: Int64
        public var names: [String]
        /// The leaf was already there and kept (`reissue: false`).
        public var kept: Bool
    }

    /// The CA's files beside the leaf: `dev-ca.pem` and `dev-ca-key.pem` in the leaf certificate's directory.
    public static func caPaths(besideCertificate certificate: String) -> (String, String) {
        let directory = URL(fileURLWithPath: certificate).deletingLastPathComponent().path
        return (directory + "/dev-ca.pem", directory + "/dev-ca-key.pem")
    }

    /// The domains the CA may sign names in (each with its subdomains): reserved for local or private
    /// use (RFC 6761 localhost and test, RFC 6762 local, RFC 8375 home.arpa, ICANN's internal).
    static let localDomains = ["localhost", "test", "local", "internal", "home.arpa"]

    /// The CA's name constraints: `localDomains`, loopback, and the private address ranges (RFC 1918,
    /// RFC 4193), so trusting it can never let a leaked key impersonate a public site.
    static let nameConstraints = "critical," + (localDomains.map { "permitted;DNS:\($0)" } + [
        "permitted;IP:127.0.0.0/255.0.0.0",
        "permitted;IP:10.0.0.0/255.0.0.0",
        "permitted;IP:172.16.0.0/255.240.0.0",
        "permitted;IP:192.168.0.0/255.255.0.0",
        "permitted;IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF",
        "permitted;IP:FC00:0:0:0:0:0:0:0/FE00:0:0:0:0:0:0:0",
    ]).joined(separator: ",")

    /// Whether `name` is inside the CA's name constraints.
    public static func isLocal(_ name: String) -> Bool {
        let lower = name.lowercased()
        if localDomains.contains(where: { lower == $0 || lower.hasSuffix("." + $0) }) { return true }
        guard let bytes = addressBytes(lower) else { return false }
        if bytes.count == 4 {
            return bytes[0] == 127 || bytes[0] == 10 || (bytes[0] == 172 && bytes[1] & 0xF0 == 16) || (bytes[0] == 192 && bytes[1] == 168)
        }
        return bytes == [UInt8](repeating: 0, count: 15) + [1] || bytes[0] & 0xFE == 0xFC
    }

    /// The address's bytes when `name` is an IPv4 or IPv6 address (brackets allowed), else nil.
    static func addressBytes(_ name: String) -> [UInt8]? {
        let bare = name.hasPrefix("[") && name.hasSuffix("]") ? String(name.dropFirst().dropLast()) : name
        var v4 = in_addr()
        if inet_pton(AF_INET, bare, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, bare, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// The CA beside a leaf, as the trust stores name it.
    public struct Authority {
        public var certificate: String
        public var fingerprint: String
        public init(certificate: String, fingerprint: String) {
            self.certificate = certificate
            self.fingerprint = fingerprint
        }
        /// The fingerprint's first 16 hex digits, lower case: the CA's name in trust stores.
        public var shortFingerprint: String {
            String(fingerprint.filter { $0 != ":" }.prefix(16)).lowercased()
        }
    }

    /// The CA whose files are beside `certificate`, if there is one.
    public static func authority(besideCertificate certificate: String) -> Authority? {
        let (path, _) = caPaths(besideCertificate: certificate)
        guard let ca = readCertificate(path) else { return nil }
        defer { X509_free(ca) }
        return Authority(certificate: path, fingerprint: fingerprint(ca))
    }

    /// Makes the CA if its files are missing, then a new leaf for localhost, 127.0.0.1, ::1 and `names`.
    /// Gives `paths` to `user` (owner and group), for a server that runs as that user to read what root
    /// made; nothing when the user does not exist or this process cannot change owners.
    public static func give(_ paths: [String], to user: String) {
        guard let entry = getpwnam(user) else { return }
        for path in paths { _ = chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) }
    }

    /// Makes the CA if its files are missing, then a new leaf for localhost, 127.0.0.1, ::1 and `names`
    /// (with `reissue: false`, a leaf already there is kept and reported as it is).
    public static func make(certificate: String, key: String, names: [String] = [], days: Int = 397, reissue: Bool = true) throws(Failure) -> Result {
        let extra = names.filter { !["localhost", "127.0.0.1", "::1"].contains($0.lowercased()) }
        for name in extra where !isLocal(name) {
            throw Failure(description: "'\(name)' is not a local or private name: the development CA can only sign localhost and names under .localhost, .test, .local, .internal and .home.arpa, loopback addresses and private ones (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7)")
        }
        let (caCertPath, caKeyPath) = caPaths(besideCertificate: certificate)
        let directory = URL(fileURLWithPath: certificate).deletingLastPathComponent().path
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw Failure(description: "cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        var caCreated = false
        var caKey: OpaquePointer
        var caCert: OpaquePointer
        if access(caCertPath, R_OK) == 0 && access(caKeyPath, R_OK) == 0 {
            guard let loadedKey = readKey(caKeyPath), let loadedCert = readCertificate(caCertPath) else {
                throw Failure(description: "cannot read the development CA in \(caCertPath) and \(caKeyPath)")
            }
            caKey = loadedKey
            caCert = loadedCert
        } else {
            guard let newKey = cossl_EVP_EC_gen_P256() else { throw Failure(description: TLSContext.lastError("EC key generation")) }
            caKey = newKey
            caCert = try build(subject: "WebServer development CA (\(hostName()))", key: caKey, issuer: nil, issuerKey: caKey, days: 3650,
                               extensions: [
                                (NID_basic_constraints, "critical,CA:TRUE,pathlen:0"),
                                (NID_key_usage, "critical,keyCertSign,cRLSign"),
                                (NID_subject_key_identifier, "hash"),
                                (NID_name_constraints, nameConstraints),
                               ])
            try writeKey(caKey, to: caKeyPath)
            try writeCertificate(caCert, to: caCertPath)
            caCreated = true
        }
        defer {
            EVP_PKEY_free(caKey)
            X509_free(caCert)
        }
        if !reissue && extra.isEmpty && !caCreated, access(key, R_OK) == 0, let kept = readCertificate(certificate) {
            defer { X509_free(kept) }
            return Result(caCertificate: caCertPath, certificate: certificate, key: key, caCreated: false,
                          caFingerprint: fingerprint(caCert), fingerprint: fingerprint(kept),
                          caExpiry: notAfter(caCert), expiry: notAfter(kept), names: [], kept: true)
        }
        guard let leafKey = cossl_EVP_EC_gen_P256() else { throw Failure(description: TLSContext.lastError("EC key generation")) }
        defer { EVP_PKEY_free(leafKey) }
        var alternatives = ["DNS:localhost", "IP:127.0.0.1", "IP:0:0:0:0:0:0:0:1"]
        for name in extra {
            let bare = name.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            alternatives.append(addressBytes(bare) != nil ? "IP:\(bare)" : "DNS:\(bare)")
        }
        let leaf = try build(subject: "localhost", key: leafKey, issuer: caCert, issuerKey: caKey, days: days,
                             extensions: [
                                (NID_basic_constraints, "critical,CA:FALSE"),
                                (NID_key_usage, "critical,digitalSignature"),
                                (NID_ext_key_usage, "serverAuth"),
                                (NID_subject_key_identifier, "hash"),
                                (NID_authority_key_identifier, "keyid"),
                                (NID_subject_alt_name, alternatives.joined(separator: ",")),
                             ])
        defer { X509_free(leaf) }
        // A CA made before private addresses and .local names were allowed cannot sign them: say so
        // before anything is written, instead of leaving a certificate no client accepts.
        if let problem = verify(leaf, signedBy: caCert) {
            throw Failure(description: """
                the development CA in \(caCertPath) cannot sign \(extra.joined(separator: ", ")) (\(problem)): it was made \
                with narrower name constraints. Make a new one: webserver cert dev --uninstall --dir \(directory), \
                delete \(caCertPath) and \(caKeyPath), then run this again
                """)
        }
        try writeKey(leafKey, to: key)
        try writeCertificate(leaf, to: certificate)
        return Result(caCertificate: caCertPath, certificate: certificate, key: key, caCreated: caCreated,
                      caFingerprint: fingerprint(caCert), fingerprint: fingerprint(leaf),
                      caExpiry: notAfter(caCert), expiry: notAfter(leaf),
                      names: ["localhost", "127.0.0.1", "::1"] + extra, kept: false)
    }

    /// Why `leaf` does not verify against `ca` (OpenSSL's reason, name constraints included), or nil.
    static func verify(_ leaf: OpaquePointer, signedBy ca: OpaquePointer) -> String? {
        guard let store = X509_STORE_new(), let context = X509_STORE_CTX_new() else { return "out of memory" }
        defer {
            X509_STORE_CTX_free(context)
            X509_STORE_free(store)
        }
        X509_STORE_add_cert(store, ca)
        guard X509_STORE_CTX_init(context, store, leaf, nil) == 1 else { return "cannot verify" }
        if X509_verify_cert(context) == 1 { return nil }
        return String(cString: X509_verify_cert_error_string(Int(X509_STORE_CTX_get_error(context))))
    }

    static func build(
        subject: String, key: OpaquePointer, issuer: OpaquePointer?, issuerKey: OpaquePointer, days: Int,
        extensions: [(Int32, String)]
    ) throws(Failure) -> OpaquePointer {
        guard let certificate = X509_new() else { throw Failure(description: "X509_new failed") }
        start(certificate, days: days)
        X509_set_pubkey(certificate, key)
        let name = X509_get_subject_name(certificate)
        _ = subject.withCString { value in
            X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, UnsafeRawPointer(value).assumingMemoryBound(to: UInt8.self), -1, -1, 0)
        }
        _ = "WebServer development".withCString { value in
            X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, UnsafeRawPointer(value).assumingMemoryBound(to: UInt8.self), -1, -1, 0)
        }
        X509_set_issuer_name(certificate, issuer.map { X509_get_subject_name($0) } ?? name)
        var context = X509V3_CTX()
        X509V3_set_ctx(&context, issuer ?? certificate, certificate, nil, nil, 0)
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &context, nid, value) else {
                X509_free(certificate)
                throw Failure(description: TLSContext.lastError("certificate extension \(value)"))
            }
            X509_add_ext(certificate, ext, -1)
            X509_EXTENSION_free(ext)
        }
        guard X509_sign(certificate, issuerKey, EVP_sha256()) > 0 else {
            X509_free(certificate)
            throw Failure(description: TLSContext.lastError("signing the certificate"))
        }
        return certificate
    }

    /// Version 3, a random positive 128-bit serial, valid from an hour ago (clocks differ) for `days`.
    static func start(_ certificate: OpaquePointer, days: Int) {
        X509_set_version(certificate, 2)
        var serial = [UInt8](repeating: 0, count: 16)
        _ = RAND_bytes(&serial, Int32(serial.count))
        serial[0] &= 0x7F
        if let number = BN_bin2bn(serial, Int32(serial.count), nil) {
            BN_to_ASN1_INTEGER(number, X509_get_serialNumber(certificate))
            BN_free(number)
        }
        X509_gmtime_adj(X509_getm_notBefore(certificate), -3600)
        X509_gmtime_adj(X509_getm_notAfter(certificate), days * 86400)
    }

    static func readKey(_ path: String) -> OpaquePointer? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        return PEM_read_PrivateKey(file, nil, nil, nil)
    }

    static func readCertificate(_ path: String) -> OpaquePointer? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        return PEM_read_X509(file, nil, nil, nil)
    }

    /// Writes through a temporary file in the same directory, renamed into place: a reader never sees a
    /// half-written file, and a key is 0600 from its first byte.
    static func writeAtomically(_ path: String, mode: mode_t, _ write: (UnsafeMutablePointer<FILE>) -> Bool) throws(Failure) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
        fchmod(fd, mode)
        guard let file = fdopen(fd, "w") else {
            close(fd)
            throw Failure(description: "cannot write \(path)")
        }
        let written = write(file)
        let flushed = fflush(file) == 0 && fsync(fd) == 0
        fclose(file)
        guard written && flushed, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    static func writeKey(_ key: OpaquePointer, to path: String) throws(Failure) {
        try writeAtomically(path, mode: 0o600) { PEM_write_PrivateKey($0, key, nil, nil, 0, nil, nil) == 1 }
    }

    static func writeCertificate(_ certificate: OpaquePointer, to path: String) throws(Failure) {
        try writeAtomically(path, mode: 0o644) { PEM_write_X509($0, certificate) == 1 }
    }

    static func fingerprint(_ certificate: OpaquePointer) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        X509_digest(certificate, EVP_sha256(), &digest, &length)
        return digest.prefix(Int(length)).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    static func notAfter(_ certificate: OpaquePointer) -> Int64 {
        var time = tm()
        guard let value = X509_get0_notAfter(certificate), ASN1_TIME_to_tm(value, &time) == 1 else { return 0 }
        return Int64(timegm(&time))
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
