import Yams

extension DocumentReader {
    /// `tls`: the sockets, the default site's certificates, more sites, and the protocol settings.
    func tls(_ section: Section, _ current: ServerConfig.TLSSettings) -> ServerConfig.TLSSettings {
        var tls = current
        if let node = section.take("listen") { tls.listen = listenSockets(node, key: "tls.listen", required: false) }
        tls.defaultSite.certificates = certificatePairs(section, key: "tls")
        if let (value, node) = section.string("ocsp") { tls.defaultSite.ocsp = path(value, node, key: "tls.ocsp") }
        if let node = section.take("sites") {
            if case .sequence(let items) = node {
                for (position, item) in items.enumerated() {
                    let key = "tls.sites[\(position)]"
                    guard let entry = Section(item, path: key, reader: self) else { continue }
                    var site = TLSSite(certificates: certificatePairs(entry, key: key))
                    if let (value, node) = entry.string("ocsp") { site.ocsp = path(value, node, key: "\(key).ocsp") }
                    if site.certificates.isEmpty { issue(item, key: key, "needs cert and key") } else { tls.sites.append(site) }
                    entry.finish()
                }
            } else {
                issue(node, key: "tls.sites", "expected a list of {cert: FILE, key: FILE}")
            }
        }
        if let value = section.choice("min_version", TLSVersion.self) { tls.minVersion = value }
        if let value = section.duration("handshake_timeout") { tls.handshakeMilliseconds = value }
        if let (value, _) = section.string("ciphers") { tls.ciphers = value }
        if let (value, _) = section.string("ciphersuites") { tls.ciphersuites = value }
        if let (value, _) = section.string("groups") { tls.groups = value }
        if let value = section.boolean("dev_certificate") { tls.devCertificate = value }
        if let value = section.boolean("session_resumption") { tls.sessionResumption = value }
        if let value = section.boolean("redirect_http") { tls.redirectHTTP = value }
        if let value = section.duration("ticket_key_rotation") { tls.ticketKeyRotationMilliseconds = value }
        if let (value, node) = section.string("hsts") {
            if value == "off" {
                tls.hsts = nil
            } else if value.hasPrefix("max-age="), value.utf8.allSatisfy({ $0 >= 32 && $0 < 127 }),
                      value.utf8.count <= ServerConfig.TLSSettings.hstsMaximumLength {
                tls.hsts = value
            } else {
                issue(node, key: "tls.hsts", "expected a Strict-Transport-Security value such as \"max-age=63072000; includeSubDomains\" (at most \(ServerConfig.TLSSettings.hstsMaximumLength) characters), or off")
            }
        }
        section.finish()
        return tls
    }

    /// `cert` and `key` in `section`, each a file or a list of files of the same length.
    func certificatePairs(_ section: Section, key: String) -> [CertificatePair] {
        func files(_ name: String) -> ([String], Node)? {
            guard let node = section.take(name) else { return nil }
            let items: [Node]
            if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
            var paths: [String] = []
            for item in items {
                guard let text = item.scalar?.string, !text.isEmpty else {
                    issue(item, key: "\(key).\(name)", "expected a file or a list of files")
                    continue
                }
                if let full = path(text, item, key: "\(key).\(name)") { paths.append(full) }
            }
            return (paths, node)
        }
        let certificates = files("cert")
        let keys = files("key")
        guard let (certificatePaths, certificateNode) = certificates, let (keyPaths, _) = keys else {
            if let (_, node) = certificates ?? keys { issue(node, key: key, "cert and key go together") }
            return []
        }
        guard certificatePaths.count == keyPaths.count else {
            issue(certificateNode, key: "\(key).cert", "\(certificatePaths.count) certificates but \(keyPaths.count) keys")
            return []
        }
        let line = certificateNode.mark?.line ?? 0
        return zip(certificatePaths, keyPaths).map { CertificatePair(certificate: $0, key: $1, line: line, origin: "\(key).cert") }
    }
}
