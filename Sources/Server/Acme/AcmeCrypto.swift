import COpenSSL
import Foundation
import Glibc

/// The cryptography of ACME, through OpenSSL: the account's ECDSA P-256 key and its JWK, JWS ES256
/// signatures (RFC 7515, 7518), the JWK thumbprint (RFC 7638), certificate keys and signing requests,
/// TLS-ALPN-01 certificates (RFC 8737), and what is read back from an issued certificate.
enum AcmeCrypto {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// base64url without padding (RFC 7515 section 2).
    static func base64url(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func base64url(_ text: String) -> String { base64url(Array(text.utf8)) }

    /// Whether `byte` is in the base64url alphabet (A-Z, a-z, 0-9, '-', '_'): an ACME token's, so one
    /// can only name a file in the challenge directory.
    @inline(__always)
    static func isBase64url(_ byte: UInt8) -> Bool {
        (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x2D || byte == 0x5F
    }

    /// base64url (padded or not) to bytes; nil when it is not base64url.
    static func base64urlDecode(_ text: String) -> [UInt8]? {
        guard text.utf8.allSatisfy({ AcmeCrypto.isBase64url($0) || $0 == UInt8(ascii: "=") }) else { return nil }
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/").replacingOccurrences(of: "=", with: "")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map(Array.init)
    }

    /// The external account binding of a newAccount request (RFC 8555 section 7.3.4): a JWS with HS256
    /// under the CA's MAC key, naming its key identifier and the newAccount URL, over the account's JWK.
    static func externalAccountBinding(_ account: ExternalAccount, url: String, key: Key) throws(Failure) -> String {
        guard let macKey = base64urlDecode(account.macKey) else { throw Failure(description: "acme.eab.mac_key is not base64url") }
        let protected = base64url("{\"alg\":\"HS256\",\"kid\":\(json(account.keyID)),\"url\":\(json(url))}")
        let payload = base64url(key.jwk)
        let input = Array("\(protected).\(payload)".utf8)
        var mac = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard HMAC(EVP_sha256(), macKey, Int32(macKey.count), input, input.count, &mac, &length) != nil else {
            throw Failure(description: TLSContext.lastError("HMAC"))
        }
        return "{\"protected\":\"\(protected)\",\"payload\":\"\(payload)\",\"signature\":\"\(base64url(mac.prefix(Int(length))))\"}"
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        _ = bytes.withUnsafeBufferPointer { SHA256($0.baseAddress, $0.count, &digest) }
        return digest
    }

    /// An ECDSA P-256 key, owned (freed with it).
    final class Key {
        let pkey: OpaquePointer

        init(pkey: OpaquePointer) { self.pkey = pkey }
        deinit { EVP_PKEY_free(pkey) }

        /// A new P-256 key.
        static func generate() throws(Failure) -> Key {
            guard let pkey = cossl_EVP_EC_gen_P256() else { throw Failure(description: TLSContext.lastError("making a P-256 key")) }
            return Key(pkey: pkey)
        }

        /// The key in `path` (PEM), or a new one written there (0600, atomically) when there is none.
        static func load(orCreate path: String) throws(Failure) -> (key: Key, created: Bool) {
            if access(path, F_OK) == 0 {
                guard let pkey = DevCertificates.readKey(path) else { throw Failure(description: "\(path) holds no readable private key") }
                guard EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC else {
                    EVP_PKEY_free(pkey)
                    throw Failure(description: "\(path) is not an ECDSA key")
                }
                return (Key(pkey: pkey), false)
            }
            let key = try generate()
            try key.write(to: path)
            return (key, true)
        }

        func write(to path: String) throws(Failure) {
            do { try DevCertificates.writeKey(pkey, to: path) } catch { throw Failure(description: error.description) }
        }

        /// The key as PEM text (for a TLS-ALPN-01 file, beside its certificate).
        var pem: String {
            guard let bio = BIO_new(BIO_s_mem()) else { return "" }
            defer { BIO_free(bio) }
            PEM_write_bio_PrivateKey(bio, pkey, nil, nil, 0, nil, nil)
            return AcmeCrypto.drain(bio)
        }

        /// The public point's coordinates (32 bytes each).
        var coordinates: (x: [UInt8], y: [UInt8]) {
            var point = [UInt8](repeating: 0, count: 65)
            var length = 0
            _ = EVP_PKEY_get_octet_string_param(pkey, "pub", &point, point.count, &length)
            guard length == 65, point[0] == 4 else { return ([], []) }
            return (Array(point[1..<33]), Array(point[33..<65]))
        }

        /// The public JWK, members in lexicographic order (RFC 7638's form, so it is also the thumbprint's
        /// input).
        var jwk: String {
            let (x, y) = coordinates
            return "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"\(AcmeCrypto.base64url(x))\",\"y\":\"\(AcmeCrypto.base64url(y))\"}"
        }

        /// The JWK thumbprint (RFC 7638), base64url: the account's part of every key authorization.
        var thumbprint: String { AcmeCrypto.base64url(AcmeCrypto.sha256(Array(jwk.utf8))) }

        /// ES256: ECDSA P-256 over SHA-256, as the 64 bytes r ‖ s (RFC 7518 section 3.4), not DER.
        func sign(_ message: [UInt8]) throws(Failure) -> [UInt8] {
            guard let context = EVP_MD_CTX_new() else { throw Failure(description: "EVP_MD_CTX_new failed") }
            defer { EVP_MD_CTX_free(context) }
            guard EVP_DigestSignInit(context, nil, EVP_sha256(), nil, pkey) == 1 else {
                throw Failure(description: TLSContext.lastError("signing"))
            }
            var length = 0
            guard EVP_DigestSign(context, nil, &length, message, message.count) == 1 else { throw Failure(description: TLSContext.lastError("signing")) }
            var der = [UInt8](repeating: 0, count: length)
            guard EVP_DigestSign(context, &der, &length, message, message.count) == 1 else { throw Failure(description: TLSContext.lastError("signing")) }
            var pointer: UnsafePointer<UInt8>? = der.withUnsafeBufferPointer { $0.baseAddress }
            let signature: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
                pointer = buffer.baseAddress
                return d2i_ECDSA_SIG(nil, &pointer, length)
            }
            guard let signature else { throw Failure(description: "unreadable ECDSA signature") }
            defer { ECDSA_SIG_free(signature) }
            var raw = [UInt8](repeating: 0, count: 64)
            raw.withUnsafeMutableBufferPointer { buffer in
                _ = BN_bn2binpad(ECDSA_SIG_get0_r(signature), buffer.baseAddress, 32)
                _ = BN_bn2binpad(ECDSA_SIG_get0_s(signature), buffer.baseAddress! + 32, 32)
            }
            return raw
        }
    }

    /// A flattened JWS (RFC 7515 section 7.2.2) of `payload` ("" for POST-as-GET) with ES256, whose
    /// protected header names the account (`kid`) or, before there is one, carries the key (`jwk`).
    static func jws(payload: String, url: String, nonce: String, key: Key, kid: String?) throws(Failure) -> String {
        let identity = kid.map { "\"kid\":\(json($0))" } ?? "\"jwk\":\(key.jwk)"
        let header = "{\"alg\":\"ES256\",\(identity),\"nonce\":\(json(nonce)),\"url\":\(json(url))}"
        let protected = base64url(header)
        let body = payload.isEmpty ? "" : base64url(payload)
        let signature = try key.sign(Array("\(protected).\(body)".utf8))
        return "{\"protected\":\"\(protected)\",\"payload\":\"\(body)\",\"signature\":\"\(base64url(signature))\"}"
    }

    /// A JSON string literal.
    static func json(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }

    /// A certificate signing request (DER) for `names` with `key`: the names as subjectAltName (the
    /// first also as the subject's CN, which CAs ignore but some tools show).
    static func csr(names: [String], key: Key) throws(Failure) -> [UInt8] {
        guard let request = X509_REQ_new() else { throw Failure(description: "X509_REQ_new failed") }
        defer { X509_REQ_free(request) }
        X509_REQ_set_version(request, 0)
        let subject = X509_REQ_get_subject_name(request)
        _ = names[0].withCString { value in
            X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, UnsafeRawPointer(value).assumingMemoryBound(to: UInt8.self), -1, -1, 0)
        }
        X509_REQ_set_pubkey(request, key.pkey)
        let alternatives = names.map { "DNS:\($0)" }.joined(separator: ",")
        guard let extensionValue = X509V3_EXT_conf_nid(nil, nil, NID_subject_alt_name, alternatives) else {
            throw Failure(description: TLSContext.lastError("subjectAltName \(alternatives)"))
        }
        defer { X509_EXTENSION_free(extensionValue) }
        guard cossl_X509_REQ_add_extension(request, extensionValue) == 1, X509_REQ_sign(request, key.pkey, EVP_sha256()) > 0 else {
            throw Failure(description: TLSContext.lastError("signing the request"))
        }
        var der: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_X509_REQ(request, &der)
        guard length > 0, let der else { throw Failure(description: "encoding the request failed") }
        defer { CRYPTO_free(der, #file, #line) }
        return Array(UnsafeBufferPointer(start: der, count: Int(length)))
    }

    /// The TLS-ALPN-01 certificate for `name` (RFC 8737 section 3): self-signed, the name as its only
    /// subjectAltName, and the critical acmeIdentifier extension holding SHA-256 of the key
    /// authorization. PEM, certificate then key.
    static func tlsALPNCertificate(name: String, keyAuthorization: String) throws(Failure) -> String {
        let key = try Key.generate()
        guard let certificate = X509_new() else { throw Failure(description: "X509_new failed") }
        defer { X509_free(certificate) }
        DevCertificates.start(certificate, days: 7)
        X509_set_pubkey(certificate, key.pkey)
        let subject = X509_get_subject_name(certificate)
        _ = name.withCString { value in
            X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, UnsafeRawPointer(value).assumingMemoryBound(to: UInt8.self), -1, -1, 0)
        }
        X509_set_issuer_name(certificate, subject)
        guard let alternative = X509V3_EXT_conf_nid(nil, nil, NID_subject_alt_name, "DNS:\(name)") else {
            throw Failure(description: TLSContext.lastError("subjectAltName"))
        }
        X509_add_ext(certificate, alternative, -1)
        X509_EXTENSION_free(alternative)
        let digest = sha256(Array(keyAuthorization.utf8))
        guard let identifier = digest.withUnsafeBufferPointer({ cossl_acme_identifier_extension($0.baseAddress) }) else {
            throw Failure(description: TLSContext.lastError("acmeIdentifier"))
        }
        X509_add_ext(certificate, identifier, -1)
        X509_EXTENSION_free(identifier)
        guard X509_sign(certificate, key.pkey, EVP_sha256()) > 0 else { throw Failure(description: TLSContext.lastError("signing")) }
        guard let bio = BIO_new(BIO_s_mem()) else { throw Failure(description: "BIO_new failed") }
        defer { BIO_free(bio) }
        PEM_write_bio_X509(bio, certificate)
        return drain(bio) + key.pem
    }

    static func drain(_ bio: OpaquePointer) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = BIO_read(bio, &chunk, Int32(chunk.count))
            if count <= 0 { break }
            bytes += chunk[0..<Int(count)]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// What the server needs to know of an issued certificate: its validity, the names it covers, its
    /// issuer, and its ACME Renewal Information identifier (RFC 9773 section 4.1).
    struct Issued: Equatable {
        var notBefore: Int64
        var notAfter: Int64
        var names: [String]
        var issuer: String
        var serial: String
        /// base64url(authority key identifier) "." base64url(serial number), or "" without an AKI.
        var renewalID: String
    }

    /// RFC 9773 section 4.1: base64url of the authority key identifier, a dot, base64url of the serial
    /// number's DER content octets (`serial` is its magnitude, so a leading 0x00 is put back when the
    /// high bit is set).
    static func renewalIdentifier(keyIdentifier: [UInt8], serial: [UInt8]) -> String {
        let content = (serial.first ?? 0) & 0x80 != 0 ? [0] + serial : serial
        return base64url(keyIdentifier) + "." + base64url(content)
    }

    /// Reads the leaf (the first certificate) of a PEM chain.
    static func issued(pem: String) -> Issued? {
        let bytes = Array(pem.utf8)
        guard let bio = bytes.withUnsafeBufferPointer({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }) else { return nil }
        defer { BIO_free(bio) }
        guard let certificate = PEM_read_bio_X509(bio, nil, nil, nil) else { return nil }
        defer { X509_free(certificate) }
        return issued(certificate)
    }

    static func issued(file: String) -> Issued? {
        guard let certificate = DevCertificates.readCertificate(file) else { return nil }
        defer { X509_free(certificate) }
        return issued(certificate)
    }

    static func issued(_ certificate: OpaquePointer) -> Issued {
        func seconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int64 {
            var value = tm()
            guard let time, ASN1_TIME_to_tm(time, &value) == 1 else { return 0 }
            return Int64(timegm(&value))
        }
        var names: [String] = []
        if let general = X509_get_ext_d2i(certificate, NID_subject_alt_name, nil, nil) {
            let list = OpaquePointer(general)
            for index in 0..<OPENSSL_sk_num(list) {
                guard let entry = OPENSSL_sk_value(list, index)?.assumingMemoryBound(to: GENERAL_NAME.self) else { continue }
                if entry.pointee.type == GEN_DNS, let text = entry.pointee.d.dNSName {
                    names.append(String(decoding: UnsafeBufferPointer(start: ASN1_STRING_get0_data(text), count: Int(ASN1_STRING_length(text))), as: UTF8.self).lowercased())
                }
            }
            GENERAL_NAMES_free(list)
        }
        var issuer = ""
        if let name = X509_get_issuer_name(certificate) {
            var buffer = [CChar](repeating: 0, count: 512)
            X509_NAME_oneline(name, &buffer, Int32(buffer.count))
            // "/C=US/O=Let's Encrypt/CN=R11" as "C=US, O=Let's Encrypt, CN=R11".
            issuer = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                .split(separator: "/").joined(separator: ", ")
        }
        var serialBytes: [UInt8] = []
        if let serial = X509_get_serialNumber(certificate) {
            serialBytes = Array(UnsafeBufferPointer(start: ASN1_STRING_get0_data(serial), count: Int(ASN1_STRING_length(serial))))
        }
        var renewalID = ""
        if let identifier = X509_get0_authority_key_id(certificate) {
            let keyID = Array(UnsafeBufferPointer(start: ASN1_STRING_get0_data(identifier), count: Int(ASN1_STRING_length(identifier))))
            renewalID = renewalIdentifier(keyIdentifier: keyID, serial: serialBytes)
        }
        return Issued(
            notBefore: seconds(X509_get0_notBefore(certificate)), notAfter: seconds(X509_get0_notAfter(certificate)), names: names,
            issuer: issuer, serial: serialBytes.map { String(format: "%02x", $0) }.joined(), renewalID: renewalID)
    }
}
