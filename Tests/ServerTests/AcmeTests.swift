import COpenSSL
import Foundation
import Testing

@testable import Server

/// The ACME client's parts that need no CA: its configuration, JWS ES256 and the JWK thumbprint, the
/// certificate request, the TLS-ALPN-01 certificate, RFC 9773's certificate identifier, Retry-After.
@Suite struct AcmeConfigTests {
    static let acme = """
        acme:
          directory: https://acme-staging-v02.api.letsencrypt.org/directory
          email: ops@example.com
          agree_terms: true
          state: acme-state

        """

    @Test func sitesStartFromTheTopLevelAcmeAndACertOfTheirOwnWins() throws {
        let config = try loadConfig("""
            listen: ["127.0.0.1:0"]
            tls: {listen: ["127.0.0.1:0"]}
            \(AcmeConfigTests.acme)
            sites:
              - names: [example.com, www.example.com]
                root: site
              - names: [other.example.com]
                acme: {challenges: [tls-alpn-01], email: off}
            """)
        let first = try #require(config.sites[0].acme)
        #expect(first.directory == "https://acme-staging-v02.api.letsencrypt.org/directory")
        #expect(first.email == "ops@example.com" && first.agreeTerms && first.challenges == [.http01, .tlsALPN01])
        #expect(first.state.hasSuffix("/acme-state"))
        let second = try #require(config.sites[1].acme)
        #expect(second.challenges == [.tlsALPN01] && second.email == nil && second.directory == first.directory)
        #expect(config.acmeCertificates.map(\.names) == [["example.com", "www.example.com"], ["other.example.com"]])
        #expect(config.acmeCertificates[0].site == 1 && !config.acmeCertificates[0].issued)
        #expect(config.acmeCertificates[0].pair.certificate.hasSuffix("/acme-state/certificates/example.com/certificate.pem"))
        // Where the certificate will be written is watched before it exists.
        #expect(config.watchedCertificateFiles.contains(config.acmeCertificates[0].pair.certificate))
        // `acme: off` leaves a site with neither: over TLS it needs a certificate from somewhere.
        let off = issues("""
            listen: ["127.0.0.1:0"]
            tls: {listen: ["127.0.0.1:0"]}
            \(AcmeConfigTests.acme)
            sites:
              - names: [example.com]
              - names: [quiet.example.com]
                acme: off
            """).map(\.description)
        #expect(off.contains { $0.contains("site quiet.example.com") && $0.contains("has no cert and key of its own") }, "\(off)")
    }

    @Test func mistakesAreNamedWithTheirKeyAndLine() {
        func messages(_ yaml: String) -> [String] {
            issues("listen: [\"127.0.0.1:0\"]\ntls: {listen: [\"127.0.0.1:0\"]}\n" + yaml).map { "\($0.line) \($0.key): \($0.message)" }
        }
        #expect(messages("""
            acme: {directory: http://ca.example/dir, agree_terms: false}
            sites: [{names: [a.example.com], root: site}]
            """).contains { $0.hasPrefix("3 acme.directory: 'http://ca.example/dir' is not an https:// URL") })
        #expect(messages("""
            acme: {email: ops@example.com}
            sites: [{names: [a.example.com], root: site}]
            """).contains { $0.hasPrefix("3 acme.directory: is needed") })
        #expect(messages("""
            acme: {directory: https://ca.example/dir}
            sites: [{names: [a.example.com], root: site}]
            """).contains { $0.hasPrefix("3 acme.agree_terms: must be true") })
        #expect(messages("""
            acme: {directory: https://ca.example/dir, agree_terms: true, challenges: [dns-01]}
            sites: [{names: [a.example.com], root: site}]
            """).contains { $0.contains("acme.challenges: 'dns-01' is not one of http-01 or tls-alpn-01 (DNS-01 needs") })
        #expect(messages("""
            acme: {directory: https://ca.example/dir, agree_terms: true}
            sites:
              - names: ["*.example.com"]
                root: site
            """).contains { $0.contains("sites[0].names: '*.example.com': a wildcard certificate needs the DNS-01 challenge") })
        #expect(messages("""
            acme: {directory: https://ca.example/dir, agree_terms: true, ca_bundle: /nonexistent.pem}
            sites: [{names: [a.example.com], root: site}]
            """).contains { $0.contains("acme.ca_bundle: '/nonexistent.pem' is not a readable file") })
        #expect(messages("""
            acme: {directory: https://ca.example/dir, agree_terms: true}
            root: site
            """).contains { $0.contains("acme: certificates are for names: put each site") })
        #expect(messages("""
            acme: {directory: https://ca.example/dir, agree_terms: true, tls_alpn: true}
            sites: [{names: [a.example.com], root: site}]
            """).contains { $0.contains("acme.tls_alpn: unknown key") })
        let noTLS = issues("""
            listen: ["127.0.0.1:0"]
            \(AcmeConfigTests.acme)
            sites: [{names: [a.example.com], root: site}]
            """).map(\.description)
        #expect(noTLS.contains { $0.contains("gets its certificate by ACME, but there is no TLS socket to serve it on (tls.listen)") }, "\(noTLS)")
    }

    @Test func externalAccountBindingIsReadAndChecked() throws {
        let config = try loadConfig("""
            listen: ["127.0.0.1:0"]
            tls: {listen: ["127.0.0.1:0"]}
            \(AcmeConfigTests.acme)
            sites:
              - names: [a.example.com]
                acme: {eab: {key_id: kid-1, mac_key: zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W}}
            """)
        #expect(config.sites[0].acme?.eab == ExternalAccount(keyID: "kid-1", macKey: "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"))
        let found = issues("""
            listen: ["127.0.0.1:0"]
            tls: {listen: ["127.0.0.1:0"]}
            acme: {directory: https://ca.example/dir, agree_terms: true, eab: {key_id: k, mac_key: "not base64!"}}
            sites: [{names: [a.example.com], root: site}]
            """).map { "\($0.line) \($0.key): \($0.message)" }
        #expect(found.contains { $0.hasPrefix("3 acme.eab.mac_key: is not a base64url MAC key") }, "\(found)")
    }

    @Test func aSiteWithItsOwnCertAndAcmeIsAMistake() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-acme-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let found = issues("""
            listen: ["127.0.0.1:0"]
            tls: {listen: ["127.0.0.1:0"]}
            sites:
              - names: [a.example.com]
                cert: \(directory.path)/cert.pem
                key: \(directory.path)/key.pem
                acme: {directory: https://ca.example/dir, agree_terms: true}
            """).map(\.description)
        #expect(found.contains { $0.contains("sites[0].acme: the site has its own cert and key; give it one or the other") }, "\(found)")
    }
}

@Suite struct AcmeCryptoTests {
    @Test func jwsES256VerifiesWithTheAccountKeyAndNamesItByJWKOrKid() throws {
        let key = try AcmeCrypto.Key.generate()
        let jwk = key.jwk
        #expect(jwk.hasPrefix("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\""))
        #expect(key.thumbprint == AcmeCrypto.base64url(AcmeCrypto.sha256(Array(jwk.utf8))) && key.thumbprint.count == 43)
        let body = try AcmeCrypto.jws(payload: "{\"a\":1}", url: "https://ca.example/new-order", nonce: "n0nce", key: key, kid: nil)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: String])
        let protected = try #require(decode(object["protected"]!))
        let header = try #require(try JSONSerialization.jsonObject(with: Data(protected)) as? [String: Any])
        #expect(header["alg"] as? String == "ES256" && header["nonce"] as? String == "n0nce" && header["url"] as? String == "https://ca.example/new-order")
        #expect(header["jwk"] != nil && header["kid"] == nil)
        #expect(String(decoding: try #require(decode(object["payload"]!)), as: UTF8.self) == "{\"a\":1}")
        let signature = try #require(decode(object["signature"]!))
        #expect(signature.count == 64)
        #expect(verify(Array("\(object["protected"]!).\(object["payload"]!)".utf8), signature: signature, key: key))
        #expect(!verify(Array("\(object["protected"]!).x".utf8), signature: signature, key: key))
        // After the account exists: kid, and POST-as-GET has an empty payload.
        let asGet = try AcmeCrypto.jws(payload: "", url: "https://ca.example/order/1", nonce: "n", key: key, kid: "https://ca.example/acct/7")
        let second = try #require(try JSONSerialization.jsonObject(with: Data(asGet.utf8)) as? [String: String])
        #expect(second["payload"] == "")
        let secondHeader = try #require(try JSONSerialization.jsonObject(with: Data(decode(second["protected"]!)!)) as? [String: Any])
        #expect(secondHeader["kid"] as? String == "https://ca.example/acct/7" && secondHeader["jwk"] == nil)
    }

    /// RFC 8555 section 7.3.4: HS256 under the CA's MAC key, over the account's JWK.
    @Test func theExternalAccountBindingIsAnHS256JWSOverTheAccountKey() throws {
        let key = try AcmeCrypto.Key.generate()
        let macKey: [UInt8] = Array(0..<32)
        let binding = try AcmeCrypto.externalAccountBinding(
            ExternalAccount(keyID: "kid-1", macKey: AcmeCrypto.base64url(macKey)), url: "https://ca.example/new-account", key: key)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(binding.utf8)) as? [String: String])
        let header = try #require(try JSONSerialization.jsonObject(with: Data(decode(object["protected"]!)!)) as? [String: String])
        #expect(header == ["alg": "HS256", "kid": "kid-1", "url": "https://ca.example/new-account"])
        #expect(String(decoding: try #require(decode(object["payload"]!)), as: UTF8.self) == key.jwk)
        var mac = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let input = Array("\(object["protected"]!).\(object["payload"]!)".utf8)
        _ = HMAC(EVP_sha256(), macKey, 32, input, input.count, &mac, &length)
        #expect(decode(object["signature"]!) == mac)
    }

    @Test func theCertificateRequestNamesEveryName() throws {
        let key = try AcmeCrypto.Key.generate()
        let der = try AcmeCrypto.csr(names: ["example.com", "www.example.com"], key: key)
        let request = try #require(der.withUnsafeBufferPointer { buffer -> OpaquePointer? in
            var pointer: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_X509_REQ(nil, &pointer, buffer.count)
        })
        defer { X509_REQ_free(request) }
        #expect(X509_REQ_verify(request, key.pkey) == 1)
        let text = try #require(print(request))
        #expect(text.contains("DNS:example.com, DNS:www.example.com"), "\(text)")
    }

    @Test func theTLSALPN01CertificateCarriesTheKeyAuthorizationDigest() throws {
        let pem = try AcmeCrypto.tlsALPNCertificate(name: "example.com", keyAuthorization: "token.thumb")
        #expect(pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"))
        let bytes = Array(pem.utf8)
        let bio = try #require(bytes.withUnsafeBufferPointer { BIO_new_mem_buf($0.baseAddress, Int32($0.count)) })
        defer { BIO_free(bio) }
        let certificate = try #require(PEM_read_bio_X509(bio, nil, nil, nil))
        defer { X509_free(certificate) }
        #expect(AcmeCrypto.issued(certificate).names == ["example.com"])
        let oid = try #require(OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1))
        defer { ASN1_OBJECT_free(oid) }
        let index = X509_get_ext_by_OBJ(certificate, oid, -1)
        #expect(index >= 0)
        let ext = try #require(X509_get_ext(certificate, index))
        #expect(X509_EXTENSION_get_critical(ext) == 1)
        let data = try #require(X509_EXTENSION_get_data(ext))
        let value = Array(UnsafeBufferPointer(start: ASN1_STRING_get0_data(data), count: Int(ASN1_STRING_length(data))))
        #expect(value == [0x04, 0x20] + AcmeCrypto.sha256(Array("token.thumb".utf8)))
    }

    /// RFC 9773 section 4.1's example.
    @Test func theRenewalIdentifierIsRFC9773s() {
        let keyID: [UInt8] = [0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4]
        #expect(AcmeCrypto.renewalIdentifier(keyIdentifier: keyID, serial: [0x87, 0x65, 0x43, 0x21]) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
    }

    @Test func aRenewalWindowGivesAMomentStillAhead() {
        for _ in 0..<100 {
            let moment = AcmeProcess.moment(in: (start: 1000, end: 2000), now: 500)
            #expect((1000..<2000).contains(moment))
            let open = AcmeProcess.moment(in: (start: 1000, end: 2000), now: 1500)
            #expect((1500..<2000).contains(open))
        }
        #expect(AcmeProcess.moment(in: (start: 1000, end: 2000), now: 2500) == 2500)
    }

    @Test func retryAfterIsSecondsOrAnHTTPDate() {
        func reply(_ value: String) -> AcmeHTTP.Reply { AcmeHTTP.Reply(status: 429, headers: ["retry-after": value], links: [], body: []) }
        #expect(AcmeClient.retryAfter(reply("120")) == 120)
        let later = Date().addingTimeInterval(600)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let seconds = AcmeClient.retryAfter(reply(formatter.string(from: later))) ?? -1
        #expect((598...600).contains(seconds))
        #expect(AcmeClient.retryAfter(reply("soon")) == nil)
        #expect(AcmeClient.timestamp("2025-01-02T04:00:00Z") == 1_735_790_400)
        #expect(AcmeClient.timestamp("2025-01-02T04:00:00.5Z") == 1_735_790_400)
        #expect(AcmeProcess.fileName("https://acme-v02.api.letsencrypt.org/directory") == "acme-v02.api.letsencrypt.org_directory")
    }

    func decode(_ text: String) -> [UInt8]? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map(Array.init)
    }

    /// ES256 r ‖ s checked with OpenSSL against the key (as DER, the form EVP wants).
    func verify(_ message: [UInt8], signature: [UInt8], key: AcmeCrypto.Key) -> Bool {
        guard let sig = ECDSA_SIG_new() else { return false }
        defer { ECDSA_SIG_free(sig) }
        ECDSA_SIG_set0(sig, BN_bin2bn(signature, 32, nil), BN_bin2bn(Array(signature[32...]), 32, nil))
        var der: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_ECDSA_SIG(sig, &der)
        defer { CRYPTO_free(der, #file, #line) }
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, EVP_sha256(), nil, key.pkey) == 1 else { return false }
        return EVP_DigestVerify(context, der, Int(length), message, message.count) == 1
    }

    func print(_ request: OpaquePointer) -> String? {
        guard let bio = BIO_new(BIO_s_mem()) else { return nil }
        defer { BIO_free(bio) }
        X509_REQ_print(bio, request)
        return AcmeCrypto.drain(bio)
    }
}
