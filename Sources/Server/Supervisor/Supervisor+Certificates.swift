import Foundation
import Glibc

/// Certificates and session ticket keys: expiry warnings and figures, and the keys the supervisor
/// makes, rotates and sends to the manager for every worker. (Files replaced on disk are watched by
/// `CertificateWatch`, and reloaded from `tick`.)
extension Supervisor {
    /// The certificates of every site with their notAfter, for /metrics.
    func noteCertificateExpiries() {
        certificateExpiries = []
        guard !config.tls.listen.isEmpty else { return }
        for pair in (config.tls.allSites + config.sites.compactMap(\.certificates)).flatMap(\.certificates) {
            if let expiry = TLSContext.expiry(ofCertificate: pair.certificate) { certificateExpiries.append((pair.certificate, expiry)) }
        }
    }

    /// A warning with the date for a certificate that has expired or expires within two weeks.
    func warnAboutExpiringCertificates() {
        for (path, expiry) in certificateExpiries {
            let date = ISO8601DateFormatter.string(
                from: Date(timeIntervalSince1970: TimeInterval(expiry)), timeZone: TimeZone(identifier: "UTC")!,
                formatOptions: [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime])
            let days = (expiry - Int64(time(nil))) / 86400
            if expiry < Int64(time(nil)) {
                log.warning("the certificate \(path) expired on \(date) UTC; clients will refuse it")
            } else if days < 14 {
                log.warning("the certificate \(path) expires on \(date) UTC (in \(days == 1 ? "1 day" : "\(days) days"))")
            }
        }
    }

    /// Makes a new current ticket key (the previous one still decrypts) and sends both to the manager.
    func rotateTicketKeys() {
        let first = ticketKeys.isEmpty
        ticketKeys.rotate(now: now)
        if !first { log.info("TLS session ticket keys rotated; the previous key still resumes sessions until the next rotation") }
        if let channel = manager.channel, case .running = manager.state { _ = try? channel.send(.ticketKeys(ticketKeys.bytes)) }
    }
}
