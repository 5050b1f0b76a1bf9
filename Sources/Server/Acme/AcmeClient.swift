import Foundation
import Glibc

/// RFC 8555 over `AcmeHTTP`: the directory, nonces, the account, orders, authorizations and their
/// challenges, finalization and the certificate's download, and RFC 9773's renewal information. Every
/// POST is a JWS signed with the account key; a `badNonce` answer is retried with the nonce it carries.
/// An error the CA states is thrown as a `Problem` (RFC 7807, with Retry-After when sent), anything else
/// (network, a server that is down) as `AcmeHTTP.Failure`.
final class AcmeClient {
    let http: AcmeHTTP
    let directoryURL: String
    let key: AcmeCrypto.Key
    private(set) var directory: [String: Any] = [:]
    private var nonce: String?
    /// The account URL (the JWS `kid`), once there is an account.
    var account: String?

    struct Problem: Error, CustomStringConvertible {
        var type: String
        var detail: String
        var status: Int
        /// Seconds the CA asks to wait (Retry-After), if it said.
        var retryAfter: Int?

        var description: String {
            let short = type.hasPrefix("urn:ietf:params:acme:error:") ? String(type.dropFirst(27)) : type
            return "\(short.isEmpty ? "HTTP \(status)" : short): \(detail)"
        }
    }

    init(http: AcmeHTTP, directoryURL: String, key: AcmeCrypto.Key) {
        self.http = http
        self.directoryURL = directoryURL
        self.key = key
    }

    /// The directory's URL for `name` (newNonce, newAccount, newOrder, renewalInfo ...).
    func endpoint(_ name: String) throws -> String {
        if directory.isEmpty { try loadDirectory() }
        guard let url = directory[name] as? String else {
            throw Problem(type: "", detail: "the ACME directory \(directoryURL) has no \(name)", status: 0)
        }
        return url
    }

    func loadDirectory() throws {
        let reply = try http.get(directoryURL)
        guard reply.status == 200, let object = try? JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any] else {
            throw problem(reply, fallback: "\(directoryURL) is not an ACME directory")
        }
        directory = object
    }

    var termsOfService: String? { (directory["meta"] as? [String: Any])?["termsOfService"] as? String }

    // MARK: Requests

    private func freshNonce() throws -> String {
        if let nonce {
            self.nonce = nil
            return nonce
        }
        let reply = try http.head(try endpoint("newNonce"))
        guard let value = reply.headers["replay-nonce"] else { throw problem(reply, fallback: "no Replay-Nonce from newNonce") }
        return value
    }

    /// A signed POST (`payload` nil: POST-as-GET), retried on badNonce. Returns the reply of a 2xx.
    func post(_ url: String, payload: String?, withKey: Bool = false, accept: String = "application/json") throws -> AcmeHTTP.Reply {
        var attempts = 0
        while true {
            attempts += 1
            let body = try AcmeCrypto.jws(payload: payload ?? "", url: url, nonce: try freshNonce(), key: key, kid: withKey ? nil : account)
            let reply = try http.post(url, jose: body, accept: accept)
            if let next = reply.headers["replay-nonce"] { nonce = next }
            if (200..<300).contains(reply.status) { return reply }
            let failure = problem(reply, fallback: "POST \(url)")
            if failure.type == "urn:ietf:params:acme:error:badNonce" && attempts < 5 { continue }
            throw failure
        }
    }

    func problem(_ reply: AcmeHTTP.Reply, fallback: String) -> Problem {
        let object = (try? JSONSerialization.jsonObject(with: Data(reply.body))) as? [String: Any]
        var detail = object?["detail"] as? String ?? fallback
        if let subproblems = object?["subproblems"] as? [[String: Any]] {
            detail += subproblems.map { " [\(($0["identifier"] as? [String: Any])?["value"] as? String ?? ""): \($0["detail"] as? String ?? "")]" }.joined()
        }
        return Problem(type: object?["type"] as? String ?? "", detail: detail, status: reply.status, retryAfter: AcmeClient.retryAfter(reply))
    }

    /// Retry-After as seconds from now: delta-seconds or an HTTP-date.
    static func retryAfter(_ reply: AcmeHTTP.Reply) -> Int? {
        guard let value = reply.headers["retry-after"] else { return nil }
        if let seconds = Int(value) { return max(0, seconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        guard let date = formatter.date(from: value) else { return nil }
        return max(0, Int(date.timeIntervalSinceNow))
    }

    static func object(_ reply: AcmeHTTP.Reply) throws -> [String: Any] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any] else {
            throw Problem(type: "", detail: "the CA's answer is not a JSON object", status: reply.status)
        }
        return object
    }

    static func encode(_ value: Any) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data(), as: UTF8.self)
    }

    // MARK: Account, orders, authorizations

    /// The account for this key: found (onlyReturnExisting) or made, agreeing to the terms.
    func register(email: String?, externalAccount: ExternalAccount?) throws {
        let url = try endpoint("newAccount")
        var fields = ["\"termsOfServiceAgreed\":true"]
        if let email { fields.append("\"contact\":[\(AcmeCrypto.json("mailto:\(email)"))]") }
        if let externalAccount {
            fields.append("\"externalAccountBinding\":\(try AcmeCrypto.externalAccountBinding(externalAccount, url: url, key: key))")
        } else if (directory["meta"] as? [String: Any])?["externalAccountRequired"] as? Bool == true {
            throw Problem(type: "", detail: "the CA requires an external account binding: set acme.eab {key_id, mac_key} from your account with it", status: 0)
        }
        let reply = try post(url, payload: "{\(fields.joined(separator: ","))}", withKey: true)
        guard let location = reply.headers["location"] else { throw Problem(type: "", detail: "newAccount gave no account URL", status: reply.status) }
        let object = try AcmeClient.object(reply)
        if let status = object["status"] as? String, status != "valid" {
            throw Problem(type: "", detail: "the account \(location) is \(status)", status: reply.status)
        }
        account = location
    }

    struct Order {
        var url: String
        var status: String
        var authorizations: [String]
        var finalize: String
        var certificate: String?
        var error: String?
        var retryAfter: Int?

        init(url: String, object: [String: Any], retryAfter: Int?) {
            self.url = url
            status = object["status"] as? String ?? ""
            authorizations = object["authorizations"] as? [String] ?? []
            finalize = object["finalize"] as? String ?? ""
            certificate = object["certificate"] as? String
            if let error = object["error"] as? [String: Any] { self.error = "\(error["type"] as? String ?? ""): \(error["detail"] as? String ?? "")" }
            self.retryAfter = retryAfter
        }
    }

    /// A new order for `names`; `replaces` is the ARI identifier of the certificate it renews.
    func newOrder(names: [String], replaces: String?) throws -> Order {
        var payload: [String: Any] = ["identifiers": names.map { ["type": "dns", "value": $0] }]
        if let replaces, !replaces.isEmpty, directory["renewalInfo"] != nil { payload["replaces"] = replaces }
        let reply = try post(try endpoint("newOrder"), payload: AcmeClient.encode(payload))
        guard let location = reply.headers["location"] else { throw Problem(type: "", detail: "newOrder gave no order URL", status: reply.status) }
        return Order(url: location, object: try AcmeClient.object(reply), retryAfter: AcmeClient.retryAfter(reply))
    }

    func order(_ url: String) throws -> Order {
        let reply = try post(url, payload: nil)
        return Order(url: url, object: try AcmeClient.object(reply), retryAfter: AcmeClient.retryAfter(reply))
    }

    struct Challenge {
        var type: String
        var url: String
        var token: String
        var status: String
    }

    struct Authorization {
        var name: String
        var status: String
        var challenges: [Challenge]
        var error: String?
        var retryAfter: Int?
    }

    func authorization(_ url: String) throws -> Authorization {
        let reply = try post(url, payload: nil)
        let object = try AcmeClient.object(reply)
        let challenges = (object["challenges"] as? [[String: Any]] ?? []).map {
            Challenge(type: $0["type"] as? String ?? "", url: $0["url"] as? String ?? "", token: $0["token"] as? String ?? "", status: $0["status"] as? String ?? "")
        }
        let failed = (object["challenges"] as? [[String: Any]] ?? []).compactMap { $0["error"] as? [String: Any] }.first
        return Authorization(
            name: (object["identifier"] as? [String: Any])?["value"] as? String ?? "", status: object["status"] as? String ?? "",
            challenges: challenges, error: failed.map { "\($0["type"] as? String ?? ""): \($0["detail"] as? String ?? "")" },
            retryAfter: AcmeClient.retryAfter(reply))
    }

    /// Tells the CA the challenge is ready to be checked.
    func respond(to challenge: Challenge) throws {
        _ = try post(challenge.url, payload: "{}")
    }

    func finalize(_ order: Order, csr: [UInt8]) throws -> Order {
        let reply = try post(order.finalize, payload: "{\"csr\":\"\(AcmeCrypto.base64url(csr))\"}")
        return Order(url: order.url, object: try AcmeClient.object(reply), retryAfter: AcmeClient.retryAfter(reply))
    }

    /// The certificate chain, PEM (leaf first).
    func download(_ url: String) throws -> String {
        let reply = try post(url, payload: nil, accept: "application/pem-certificate-chain")
        let text = reply.text
        guard text.contains("-----BEGIN CERTIFICATE-----") else { throw Problem(type: "", detail: "the certificate at \(url) is not PEM", status: reply.status) }
        return text
    }

    /// The key authorization of a challenge token (RFC 8555 section 8.1).
    func keyAuthorization(_ token: String) -> String { "\(token).\(key.thumbprint)" }

    /// RFC 9773: the window the CA suggests for renewing the certificate `id`, and when to ask again;
    /// nil when the CA has no renewalInfo.
    func renewalWindow(_ id: String) throws -> (start: Int64, end: Int64, askAgain: Int?)? {
        if directory.isEmpty { try loadDirectory() }
        guard !id.isEmpty, let base = directory["renewalInfo"] as? String else { return nil }
        let reply = try http.get(base.hasSuffix("/") ? base + id : base + "/" + id)
        guard reply.status == 200 else { throw problem(reply, fallback: "renewalInfo") }
        let object = try AcmeClient.object(reply)
        guard let window = object["suggestedWindow"] as? [String: Any], let start = window["start"] as? String, let end = window["end"] as? String,
              let from = AcmeClient.timestamp(start), let to = AcmeClient.timestamp(end), to > from
        else { throw Problem(type: "", detail: "renewalInfo without a usable suggestedWindow", status: reply.status) }
        return (from, to, AcmeClient.retryAfter(reply))
    }

    /// An RFC 3339 time as seconds since the epoch.
    static func timestamp(_ text: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970) }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text).map { Int64($0.timeIntervalSince1970) }
    }
}
