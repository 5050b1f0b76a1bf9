import COpenSSL
import Foundation
import Glibc

/// The ACME process (`--role=acme`): gets and renews the certificates of the sites that ask for them
/// (`acme`), started and watched by the supervisor like the listener and the manager, as the server's
/// user. It serves nothing and holds nothing a worker needs: it writes each certificate (with its key)
/// into the state directory, where the supervisor's certificate watch sees it arrive and reloads, so new
/// workers take it up and old ones drain; and it writes the challenge responses there, which the
/// workers read (HTTP-01 tokens, TLS-ALPN-01 certificates). A CA that is slow, down or refusing only
/// delays this process: the serving ones never wait for it.
///
/// One certificate is worked on at a time, each a plan: when its next order is due (now, for a site
/// without one; a third of the lifetime before expiry, or the CA's renewal window, for an issued one;
/// the backoff after a failure).
public final class AcmeProcess {
    var config: ServerConfig
    let supervisor: Channel
    let poller: Poller
    let signals: SignalReader
    var lastHeartbeat: Int64 = 0
    var stopping = false
    /// One plan per certificate, by its first name.
    var plans: [String: Plan] = [:]
    /// One client per (directory, state): the account key and URL.
    var clients: [String: AcmeClient] = [:]
    /// The state directories locked by this process (flock), so two servers sharing one (an upgrade's
    /// old and new, for a moment) never order the same certificate twice.
    var locks: [String: Int32] = [:]

    struct Plan {
        var certificate: AcmeCertificate
        var status: AcmeStatus
        /// When the next order is placed, seconds since the epoch.
        var due: Int64
        /// When to ask the CA's renewal information again (RFC 9773 section 4.3: a CA may move the window
        /// earlier, after a mass revocation), or nil when it offers none.
        var renewalCheck: Int64?
        /// The earliest thing this plan has to do.
        var next: Int64 { min(due, renewalCheck ?? Int64.max) }
        var statusPath: String { "\(certificate.settings.certificateDirectory(for: certificate.names[0]))/status.json" }
    }

    /// Backoff after failures in a row: 1, 2, 5, 10, 30 minutes, 1, 3, then 6 hours (with ±10% jitter),
    /// or what the CA's Retry-After asks when it asks for longer.
    static let backoff: [Int64] = [60, 120, 300, 600, 1800, 3600, 10_800, 21_600]

    public init(config: ServerConfig) throws {
        self.config = config
        supervisor = Channel(fd: AcmeSlot.supervisor.fd)
        poller = try Poller()
        signals = try SignalReader([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGPIPE])
        try poller.add(supervisor.fd, events: Poller.readable)
        try poller.add(signals.fd, events: Poller.readable)
    }

    public func run() -> Int32 {
        log.info("ACME process started for \(config.acmeCertificates.map { $0.names.joined(separator: ",") }.joined(separator: "; "))")
        plan()
        sendHeartbeat()
        while !stopping {
            let wall = Int64(time(nil))
            let next = plans.values.map(\.next).min() ?? Int64.max
            let wait = max(0, min(Int64(config.supervisor.heartbeatIntervalMilliseconds), next == Int64.max ? Int64.max : (next - wall) * 1000))
            pause(milliseconds: Int(wait))
            if stopping { break }
            let now = Int64(time(nil))
            if let due = plans.values.filter({ $0.due <= now }).min(by: { $0.due < $1.due }) {
                work(due.certificate.names[0])
            } else if let check = plans.values.first(where: { ($0.renewalCheck ?? Int64.max) <= now }) {
                recheckRenewal(check.certificate.names[0])
            }
        }
        log.info("ACME process stopped")
        return 0
    }

    // MARK: The loop's parts

    /// Waits up to `milliseconds` for the supervisor or a signal, sending heartbeats meanwhile.
    func pause(milliseconds: Int) {
        let end = monotonicMilliseconds() + Int64(milliseconds)
        repeat {
            let left = Int(end - monotonicMilliseconds())
            poller.wait(timeoutMilliseconds: Int32(max(0, min(left, config.supervisor.heartbeatIntervalMilliseconds)))) { fd, _ in
                if fd == signals.fd {
                    for signal in signals.pending() where signal == SIGTERM || signal == SIGINT { stopping = true }
                } else if fd == supervisor.fd {
                    handleSupervisor()
                }
            }
            heartbeatIfDue()
        } while !stopping && monotonicMilliseconds() < end
    }

    func heartbeatIfDue() {
        if monotonicMilliseconds() - lastHeartbeat >= Int64(config.supervisor.heartbeatIntervalMilliseconds) { sendHeartbeat() }
    }

    func sendHeartbeat() {
        lastHeartbeat = monotonicMilliseconds()
        _ = try? supervisor.send(.heartbeat(Heartbeat()))
    }

    func handleSupervisor() {
        let open = supervisor.receiveAll(from: "supervisor") { message, fds in
            switch message {
            case .shutdown:
                stopping = true
            case .reload:
                if let newConfig = try? ConfigTransport.read(from: fds[0]) {
                    config = newConfig
                    plan()
                }
                closeDescriptor(fds[0])
            case .reopenLogs(let access, let error):
                adoptReopenedErrorLog(fds, access: access, error: error)
            default:
                Channel.reject(message, fds: fds, from: "supervisor")
            }
        }
        if !open {
            poller.remove(supervisor.fd)
            stopping = true
        }
    }

    // MARK: Planning

    /// A plan for every certificate of the configuration (kept for those it had, with their failures).
    func plan() {
        var next: [String: Plan] = [:]
        for certificate in config.acmeCertificates {
            let name = certificate.names[0]
            if var kept = plans[name], kept.certificate.names == certificate.names, kept.certificate.settings == certificate.settings {
                kept.certificate = certificate
                next[name] = kept
                continue
            }
            var plan = Plan(certificate: certificate, status: AcmeStatus(), due: Int64(time(nil)))
            plan.status = AcmeStatus.read(plan.statusPath) ?? AcmeStatus()
            plan.due = firstAttempt(&plan)
            next[name] = plan
            writeStatus(plan)
        }
        plans = next
    }

    /// When a certificate found at start (or after a reload) is next ordered: now when there is none,
    /// or it does not cover the names, or came from another CA; else at its renewal time (or the retry
    /// time of a failure that had been planned).
    func firstAttempt(_ plan: inout Plan) -> Int64 {
        let now = Int64(time(nil))
        let certificate = plan.certificate
        guard let issued = AcmeCrypto.issued(file: certificate.pair.certificate) else {
            log.notice("\(describe(certificate)): no certificate yet; ordering one from \(certificate.settings.directory) (TLS clients asking for these names are refused until it arrives)")
            plan.status.nextAttempt = retryTime(plan, now: now)
            return plan.status.nextAttempt!
        }
        record(issued, in: &plan.status)
        let retry = retryTime(plan, now: now)
        if !Set(certificate.names).isSubset(of: Set(issued.names)) {
            log.notice("\(describe(certificate)): the certificate on disk covers \(issued.names.joined(separator: ", ")); ordering one for the names configured")
            plan.status.nextAttempt = retry
            return retry
        }
        if !plan.status.directory.isEmpty && plan.status.directory != certificate.settings.directory {
            log.notice("\(describe(certificate)): the certificate on disk came from \(plan.status.directory); ordering one from \(certificate.settings.directory)")
            plan.status.nextAttempt = retry
            return retry
        }
        if plan.status.failures > 0 { return retry }
        let due = renewalTime(issued, plan: &plan)
        plan.status.nextAttempt = due
        log.info("\(describe(certificate)): certificate valid until \(AcmeProcess.date(issued.notAfter)); renewal planned at \(AcmeProcess.date(due))")
        return due
    }

    /// After failures, the retry time they set stands (a restart does not hammer the CA), unless the
    /// configuration now asks for something else (another CA, other names): then now.
    func retryTime(_ plan: Plan, now: Int64) -> Int64 {
        guard plan.status.failures > 0, plan.status.failedFor == AcmeProcess.attempt(plan.certificate) else { return now }
        return max(now, plan.status.nextAttempt ?? now)
    }

    static func attempt(_ certificate: AcmeCertificate) -> String {
        "\(certificate.settings.directory) \(certificate.names.joined(separator: ","))"
    }

    func record(_ issued: AcmeCrypto.Issued, in status: inout AcmeStatus) {
        status.issuer = issued.issuer
        status.serial = issued.serial
        status.notBefore = issued.notBefore
        status.notAfter = issued.notAfter
    }

    /// When to renew: a random moment in the CA's suggested window when it offers renewal information
    /// (RFC 9773 section 4.2), else when a third of the lifetime is left, less a random twentieth of the
    /// lifetime (so certificates issued together do not all renew in the same second).
    func renewalTime(_ issued: AcmeCrypto.Issued, plan: inout Plan) -> Int64 {
        let lifetime = max(1, issued.notAfter - issued.notBefore)
        let own = issued.notAfter - lifetime / 3 - Int64.random(in: 0...max(0, lifetime / 20))
        plan.status.renewalInfo = false
        plan.renewalCheck = nil
        if !issued.renewalID.isEmpty, let client = try? client(for: plan.certificate.settings),
           let window = try? client.renewalWindow(issued.renewalID) {
            plan.status.renewalInfo = true
            // Asked again as the CA says (Retry-After), within an hour and a day; 6 hours when it does not say.
            plan.renewalCheck = Int64(time(nil)) + Int64(min(86_400, max(3600, window.askAgain ?? 21_600)))
            return AcmeProcess.moment(in: (window.start, window.end), now: Int64(time(nil)))
        }
        return own
    }

    /// A random moment of a renewal window that is still ahead (RFC 9773 section 4.2); now when the
    /// window has passed.
    static func moment(in window: (start: Int64, end: Int64), now: Int64) -> Int64 {
        if window.end <= now { return now }
        let start = max(window.start, now)
        return start + Int64.random(in: 0...max(0, window.end - start - 1))
    }

    /// Asks the CA's renewal information again for a certificate not yet due; the window may have moved.
    func recheckRenewal(_ name: String) {
        guard var plan = plans[name] else { return }
        plan.renewalCheck = nil
        if let issued = AcmeCrypto.issued(file: plan.certificate.pair.certificate) {
            let due = renewalTime(issued, plan: &plan)
            // Only a window that moved earlier changes the plan (a new random moment each time would not).
            if plan.status.failures == 0 && due < plan.due - 60 {
                log.info("\(describe(plan.certificate)): the CA's renewal window moved; renewal planned at \(AcmeProcess.date(due))")
                plan.due = due
                plan.status.nextAttempt = due
                writeStatus(plan)
            }
        }
        plans[name] = plan
    }

    // MARK: Ordering

    /// Orders the certificate `name`, installs it and plans its renewal; on failure, plans the retry.
    func work(_ name: String) {
        guard var plan = plans[name] else { return }
        let certificate = plan.certificate
        guard lock(certificate.settings.state) else {
            plan.due = Int64(time(nil)) + 5
            plans[name] = plan
            return
        }
        let started = monotonicMilliseconds()
        do {
            let chain = try order(certificate, replacing: plan.status.serial == nil ? nil : AcmeCrypto.issued(file: certificate.pair.certificate)?.renewalID, plan: &plan)
            guard let issued = AcmeCrypto.issued(pem: chain.certificates) else { throw AcmeHTTP.Failure(description: "the CA's certificate cannot be read") }
            try AcmeFiles.write(certificate.pair.certificate, chain.key + chain.certificates, mode: 0o600)
            _ = try? supervisor.send(.certificateInstalled)
            record(issued, in: &plan.status)
            plan.status.directory = certificate.settings.directory
            plan.status.lastSuccess = Int64(time(nil))
            plan.status.failures = 0
            plan.status.failedFor = nil
            plan.due = renewalTime(issued, plan: &plan)
            plan.status.nextAttempt = plan.due
            log.notice(
                "\(describe(certificate)): certificate obtained in \(monotonicMilliseconds() - started) ms from \(certificate.settings.directory): issuer \(issued.issuer), valid until \(AcmeProcess.date(issued.notAfter)); renewal planned at \(AcmeProcess.date(plan.due))\(plan.status.renewalInfo ? " (the CA's renewal window)" : "")")
        } catch {
            if stopping { return }
            // Failures of another configuration's orders do not count toward this one's backoff.
            if plan.status.failedFor != AcmeProcess.attempt(certificate) { plan.status.failures = 0 }
            plan.status.failures += 1
            plan.status.failedFor = AcmeProcess.attempt(certificate)
            plan.status.lastError = "\(error)"
            plan.status.lastErrorAt = Int64(time(nil))
            let step = AcmeProcess.backoff[min(plan.status.failures - 1, AcmeProcess.backoff.count - 1)]
            var delay = Int64(Double(step) * Double.random(in: 0.9...1.1))
            if let problem = error as? AcmeClient.Problem, let retry = problem.retryAfter { delay = max(delay, Int64(retry)) }
            plan.due = Int64(time(nil)) + delay
            plan.status.nextAttempt = plan.due
            let serving = plan.status.notAfter.map {
                $0 > Int64(time(nil)) ? "the current certificate keeps serving (valid until \(AcmeProcess.date($0)))"
                    : "the current certificate keeps serving, though it expired at \(AcmeProcess.date($0))"
            } ?? "TLS clients asking for these names are refused until it arrives"
            log.error("\(describe(certificate)): ordering the certificate failed (attempt \(plan.status.failures)): \(error); \(serving); next attempt at \(AcmeProcess.date(plan.due))")
            clients[clientKey(certificate.settings)]?.account = nil
        }
        // A reload while the order ran (its waits answer the supervisor) may have removed or changed the
        // site: its new plan stands.
        if let current = plans[name], current.certificate.names == certificate.names, current.certificate.settings == certificate.settings {
            plans[name] = plan
        }
        writeStatus(plan)
    }

    /// One order from start to chain: account, order, each authorization's challenge, finalize with a
    /// fresh key's request, download. Returns the chain and its key, PEM.
    func order(_ certificate: AcmeCertificate, replacing: String?, plan: inout Plan) throws -> (certificates: String, key: String) {
        let settings = certificate.settings
        let client = try client(for: settings)
        if client.account == nil { try client.register(email: settings.email, externalAccount: settings.eab) }
        var order: AcmeClient.Order
        do {
            order = try client.newOrder(names: certificate.names, replaces: replacing)
        } catch let problem as AcmeClient.Problem where replacing != nil && problem.type.hasSuffix(":alreadyReplaced") {
            // RFC 9773 section 5: the CA saw that certificate replaced already (an order lost in a crash).
            order = try client.newOrder(names: certificate.names, replaces: nil)
        }
        plan.status.orders += 1
        writeStatus(plan)
        log.info("\(describe(certificate)): order \(order.url) is \(order.status)")
        var written: [String] = []
        defer { for path in written { unlink(path) } }
        // Every challenge is answered first, then the CA's checks are awaited together (it runs them
        // in parallel: two names take as long as one).
        var waiting: [(url: String, type: String, authorization: AcmeClient.Authorization)] = []
        for url in order.authorizations {
            let authorization = try client.authorization(url)
            if authorization.status == "valid" { continue }
            guard authorization.status == "pending" else {
                throw AcmeHTTP.Failure(description: "the authorization for \(authorization.name) is \(authorization.status)\(authorization.error.map { ": \($0)" } ?? "")")
            }
            guard let challenge = settings.challenges.lazy.compactMap({ type in authorization.challenges.first { $0.type == type.rawValue } }).first else {
                throw AcmeHTTP.Failure(description: "the CA offers \(authorization.challenges.map(\.type).joined(separator: ", ")) for \(authorization.name), none of acme.challenges")
            }
            let keyAuthorization = client.keyAuthorization(challenge.token)
            if challenge.type == AcmeChallenge.http01.rawValue {
                guard challenge.token.utf8.allSatisfy({ AcmeCrypto.isBase64url($0) }), !challenge.token.isEmpty else {
                    throw AcmeHTTP.Failure(description: "the CA's token \(challenge.token) is not base64url")
                }
                let path = "\(settings.http01Directory)/\(challenge.token)"
                try AcmeFiles.write(path, keyAuthorization, mode: 0o644)
                written.append(path)
            } else {
                let path = "\(settings.tlsALPN01Directory)/\(authorization.name).pem"
                try AcmeFiles.write(path, try AcmeCrypto.tlsALPNCertificate(name: authorization.name, keyAuthorization: keyAuthorization), mode: 0o600)
                written.append(path)
            }
            log.info("\(describe(certificate)): answering \(challenge.type) for \(authorization.name)")
            try client.respond(to: challenge)
            waiting.append((url, challenge.type, authorization))
        }
        let deadline = monotonicMilliseconds() + 300_000
        var round = 0
        while let index = waiting.firstIndex(where: { $0.authorization.status == "pending" || $0.authorization.status == "processing" }) {
            guard monotonicMilliseconds() < deadline else {
                throw AcmeHTTP.Failure(description: "the CA did not check \(waiting[index].authorization.name) within 5 minutes")
            }
            try wait(round: round, retryAfter: waiting[index].authorization.retryAfter)
            round += 1
            for position in waiting.indices where ["pending", "processing"].contains(waiting[position].authorization.status) {
                waiting[position].authorization = try client.authorization(waiting[position].url)
            }
        }
        if let failed = waiting.first(where: { $0.authorization.status != "valid" }) {
            throw AcmeHTTP.Failure(description: "\(failed.type) for \(failed.authorization.name) failed: \(failed.authorization.error ?? failed.authorization.status)")
        }
        order = try poll(order, client: client, while: ["pending"])
        guard order.status == "ready" || order.status == "valid" else {
            throw AcmeHTTP.Failure(description: "the order is \(order.status)\(order.error.map { ": \($0)" } ?? "")")
        }
        let key = try AcmeCrypto.Key.generate()
        if order.status == "ready" { order = try client.finalize(order, csr: try AcmeCrypto.csr(names: certificate.names, key: key)) }
        order = try poll(order, client: client, while: ["processing", "ready"])
        guard order.status == "valid", let url = order.certificate else {
            throw AcmeHTTP.Failure(description: "the order is \(order.status) after finalizing\(order.error.map { ": \($0)" } ?? "")")
        }
        let chain = try client.download(url)
        try AcmeProcess.check(chain: chain, key: key, names: certificate.names)
        return (chain, key.pem)
    }

    func poll(_ order: AcmeClient.Order, client: AcmeClient, while states: Set<String>) throws -> AcmeClient.Order {
        var order = order
        let deadline = monotonicMilliseconds() + 300_000
        var round = 0
        while states.contains(order.status) {
            guard monotonicMilliseconds() < deadline else { throw AcmeHTTP.Failure(description: "the order stayed \(order.status) for 5 minutes") }
            try wait(round: round, retryAfter: order.retryAfter)
            round += 1
            order = try client.order(order.url)
        }
        return order
    }

    /// Waits before asking the CA again: as its Retry-After says (within 1 to 10 seconds), else a
    /// quarter second doubling each round up to 8 (a quick CA answers quickly, a slow one is not
    /// polled hard); the supervisor is answered meanwhile. Throws when the process is stopping.
    func wait(round: Int, retryAfter: Int?) throws {
        pause(milliseconds: retryAfter.map { min(10, max(1, $0)) * 1000 } ?? (250 << min(round, 5)))
        if stopping { throw AcmeHTTP.Failure(description: "stopping") }
    }

    /// The chain's leaf belongs to the key and covers the names.
    static func check(chain: String, key: AcmeCrypto.Key, names: [String]) throws {
        let bytes = Array(chain.utf8)
        guard let bio = bytes.withUnsafeBufferPointer({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }) else { throw AcmeHTTP.Failure(description: "out of memory") }
        defer { BIO_free(bio) }
        guard let leaf = PEM_read_bio_X509(bio, nil, nil, nil) else { throw AcmeHTTP.Failure(description: "the CA's certificate is not PEM") }
        defer { X509_free(leaf) }
        guard X509_check_private_key(leaf, key.pkey) == 1 else {
            ERR_clear_error()
            throw AcmeHTTP.Failure(description: "the CA's certificate is not for the key it was asked for")
        }
        let covered = Set(AcmeCrypto.issued(leaf).names)
        let missing = names.filter { !covered.contains($0) }
        guard missing.isEmpty else { throw AcmeHTTP.Failure(description: "the CA's certificate does not cover \(missing.joined(separator: ", "))") }
    }

    // MARK: Accounts and state

    func clientKey(_ settings: AcmeSettings) -> String { "\(settings.state)\n\(settings.directory)" }

    /// The client for a CA and state directory: its account key (made once, 0600) under
    /// `state/accounts/<the directory URL as a name>/`, and the account's URL once it has one.
    func client(for settings: AcmeSettings) throws -> AcmeClient {
        if let client = clients[clientKey(settings)] { return client }
        let http = try AcmeHTTP(caBundle: settings.caBundle)
        http.progress = { [unowned self] in
            heartbeatIfDue()
            return !stopping
        }
        let directory = "\(settings.state)/accounts/\(AcmeProcess.fileName(settings.directory))"
        try AcmeFiles.makeDirectory(directory)
        let (key, created) = try AcmeCrypto.Key.load(orCreate: "\(directory)/account.key")
        if created { log.notice("made the ACME account key \(directory)/account.key") }
        let client = AcmeClient(http: http, directoryURL: settings.directory, key: key)
        clients[clientKey(settings)] = client
        return client
    }

    /// Holds `state/lock` (flock) for the life of the process; false while another process holds it.
    func lock(_ state: String) -> Bool {
        if locks[state] != nil { return true }
        let fd = open("\(state)/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            log.error("cannot open \(state)/lock: \(String(cString: strerror(errno)))")
            return false
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            closeDescriptor(fd)
            log.info("another webserver holds \(state)/lock; waiting for it")
            return false
        }
        locks[state] = fd
        return true
    }

    func writeStatus(_ plan: Plan) {
        var status = plan.status
        status.names = plan.certificate.names
        if status.directory.isEmpty { status.directory = plan.certificate.settings.directory }
        do { try status.write(plan.statusPath) } catch { log.error("cannot write \(plan.statusPath): \(error)") }
    }

    func describe(_ certificate: AcmeCertificate) -> String { certificate.names.joined(separator: ", ") }

    /// A directory URL as a file name: `acme-v02.api.letsencrypt.org_directory`.
    static func fileName(_ url: String) -> String {
        var text = Substring(url)
        if text.hasPrefix("https://") { text = text.dropFirst(8) }
        return String(text.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" })
    }

    static func date(_ seconds: Int64) -> String {
        Date(timeIntervalSince1970: TimeInterval(seconds)).formatted(.iso8601.year().month().day().dateTimeSeparator(.space).time(includingFractionalSeconds: false)) + " UTC"
    }
}
