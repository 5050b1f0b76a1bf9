import Foundation
import Glibc

/// `webserver status`'s certificates: every certificate the configuration presents over TLS (its
/// names, issuer and expiry, read from the files) and, for those ACME gets, what the ACME process last
/// did (from the status it keeps beside each).
public enum CertificateReport {
    public static func lines(_ config: ServerConfig) -> [String] {
        let now = Int64(time(nil))
        guard !config.tls.listen.isEmpty else { return [] }
        var rows: [[String]] = []
        var notes: [String] = []
        var seen = Set<String>()
        let acme = Dictionary(config.acmeCertificates.map { ($0.pair.certificate, $0) }, uniquingKeysWith: { first, _ in first })
        let pairs = config.tls.allSites.flatMap(\.certificates) + config.sites.flatMap { $0.certificates?.certificates ?? [] }
            + config.acmeCertificates.filter { !$0.issued }.map(\.pair)
        for pair in pairs where seen.insert(pair.certificate).inserted {
            let managed = acme[pair.certificate]
            let source = managed.map { "acme \(URL(string: $0.settings.directory)?.host ?? $0.settings.directory)" } ?? "file"
            if let issued = AcmeCrypto.issued(file: pair.certificate) {
                let left = issued.notAfter - now
                let expires = AcmeProcess.date(issued.notAfter) + (left < 0 ? " (expired)" : " (in \(duration(left)))")
                rows.append([issued.names.joined(separator: ","), issued.issuer, expires, source])
            } else {
                rows.append([managed?.names.joined(separator: ",") ?? pair.certificate, "-", "not issued yet", source])
            }
            if let managed, let status = AcmeStatus.read("\(managed.settings.certificateDirectory(for: managed.names[0]))/status.json") {
                var note = "  \(managed.names[0]): \(status.orders) orders"
                if let next = status.nextAttempt { note += "; next order \(AcmeProcess.date(next))\(status.renewalInfo ? " (the CA's renewal window)" : "")" }
                if status.failures > 0, let error = status.lastError {
                    note += "; \(status.failures) failed in a row, last at \(AcmeProcess.date(status.lastErrorAt ?? 0)): \(error)"
                }
                notes.append(note)
            }
        }
        guard !rows.isEmpty else { return [] }
        let headers = ["CERTIFICATE", "ISSUER", "EXPIRES", "FROM"]
        let widths = (0..<headers.count).map { column in ([headers] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $1.padding(toLength: $0 == cells.count - 1 ? $1.count : widths[$0] + 2, withPad: " ", startingAt: 0) }.joined()
        }
        return [line(headers)] + rows.map(line) + notes
    }

    static func duration(_ seconds: Int64) -> String {
        if seconds >= 2 * 86400 { return "\(seconds / 86400) days" }
        if seconds >= 7200 { return "\(seconds / 3600) hours" }
        if seconds >= 120 { return "\(seconds / 60) minutes" }
        return "\(seconds) s"
    }
}
