import Glibc
import Yams

/// `acme`, at the top level (defaults for every site) and in a site (over them).
extension DocumentReader {
    /// Reads `acme` from `section` over `current`: nil when it is absent (the current value stays),
    /// `.some(nil)` for `acme: off`.
    func acme(_ section: Section, _ current: AcmeSettings?) -> AcmeSettings?? {
        guard let node = section.peek("acme") else { return nil }
        let key = section.full("acme")
        if let text = node.scalar?.string {
            _ = section.take("acme")
            if ["off", "false", "no"].contains(text.lowercased()) { return .some(nil) }
            issue(node, key: key, "expected off or {directory: URL, email: ..., agree_terms: true}")
            return nil
        }
        guard let acme = section.section("acme") else { return nil }
        var settings = current ?? AcmeSettings()
        settings.place = "\(file):\(node.mark?.line ?? 0)"
        if let (value, node) = acme.string("directory") {
            if value.hasPrefix("https://") && value.count > 8 { settings.directory = value } else {
                issue(node, key: "\(key).directory", "'\(value)' is not an https:// URL (an ACME directory, such as https://acme-v02.api.letsencrypt.org/directory)")
            }
        }
        if let (value, node) = acme.string("email") {
            if value.isEmpty || value == "off" {
                settings.email = nil
            } else if value.contains("@") && !value.contains(" ") && !value.contains(",") {
                settings.email = value.hasPrefix("mailto:") ? String(value.dropFirst(7)) : value
            } else {
                issue(node, key: "\(key).email", "'\(value)' is not an email address")
            }
        }
        if let value = acme.boolean("agree_terms") { settings.agreeTerms = value }
        if let node = acme.take("challenges") {
            let items: [Node]
            if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
            var challenges: [AcmeChallenge] = []
            for item in items {
                let text = item.scalar?.string ?? ""
                if let challenge = AcmeChallenge(rawValue: text.lowercased()) {
                    if !challenges.contains(challenge) { challenges.append(challenge) }
                } else {
                    issue(item, key: "\(key).challenges", "'\(text)' is not one of \(AcmeChallenge.choicesText)\(text.lowercased() == "dns-01" ? " (DNS-01 needs a DNS provider's API; give a wildcard site a cert instead)" : "")")
                }
            }
            if items.isEmpty { issue(node, key: "\(key).challenges", "needs at least one of \(AcmeChallenge.choicesText)") }
            if !challenges.isEmpty { settings.challenges = challenges }
        }
        if let (value, _) = acme.string("state") { settings.state = ConfigLoader.absolute(value, base: base) }
        if let (value, node) = acme.string("ca_bundle") {
            let full = ConfigLoader.absolute(value, base: base)
            if access(full, R_OK) == 0 { settings.caBundle = full } else {
                issue(node, key: "\(key).ca_bundle", "'\(value)' is not a readable file (the PEM CA certificates to trust for the ACME server's HTTPS)")
            }
        }
        if let node = acme.peek("eab"), node.scalar?.string == "off" {
            _ = acme.take("eab")
            settings.eab = nil
        } else if let eab = acme.section("eab") {
            let keyID = eab.string("key_id")
            let macKey = eab.string("mac_key")
            eab.finish()
            if let (id, _) = keyID, let (mac, macNode) = macKey, !id.isEmpty {
                if AcmeCrypto.base64urlDecode(mac).map({ $0.count >= 16 }) == true {
                    settings.eab = ExternalAccount(keyID: id, macKey: mac)
                } else {
                    issue(macNode, key: "\(key).eab.mac_key", "is not a base64url MAC key of at least 16 bytes (the CA's 'HMAC key' or 'EAB HMAC key')")
                }
            } else {
                issue(acme.peek("eab") ?? node, key: "\(key).eab", "needs key_id and mac_key, as the CA gives them")
            }
        }
        acme.finish()
        if settings.directory.isEmpty {
            issue(node, key: "\(key).directory", "is needed: the CA's ACME directory URL, such as https://acme-v02.api.letsencrypt.org/directory")
        }
        if !settings.agreeTerms {
            issue(node, key: "\(key).agree_terms", "must be true: the CA issues certificates only to accounts that agree to its terms of service (read them, then set agree_terms: true)")
        }
        return .some(settings)
    }

    /// The checks of a site that gets its certificate by ACME: names a CA can validate over HTTP or TLS.
    func checkAcmeSite(_ site: SiteSettings, node: Node, key: String) {
        for name in site.names {
            if name.hasPrefix("*.") {
                issue(node, key: "\(key).names", "'\(name)': a wildcard certificate needs the DNS-01 challenge, which this server does not do; give the site a cert, or list its names")
            } else if SiteNames.isAddress(name) {
                issue(node, key: "\(key).names", "'\(name)': ACME certificates here are for DNS names; give the site a cert for an address")
            }
        }
    }
}
