import CCurl
import Glibc

/// HTTPS requests for the ACME process, through libcurl (opened at run time; Sources/CCurl says why):
/// HTTPS only, the CA's certificate checked (against `acme.ca_bundle` when set, else the system's
/// store), proxies from the environment (`https_proxy`), timeouts, no redirects (ACME has none to
/// follow). While a transfer runs, `progress` is called about once a second, so the process keeps
/// sending heartbeats; it returns false to abort the transfer (shutdown).
final class AcmeHTTP {
    struct Reply {
        var status: Int
        /// Header fields by lowercased name (the last of a repeated one), and every Link field.
        var headers: [String: String]
        var links: [String]
        var body: [UInt8]

        var text: String { String(decoding: body, as: UTF8.self) }
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private var api = ccurl_api()
    private let handle: UnsafeMutableRawPointer
    let caBundle: String?
    var progress: () -> Bool = { true }

    /// What a transfer collects, handed to curl's callbacks as their context.
    private final class Collector {
        var headers: [String: String] = [:]
        var links: [String] = []
        var body: [UInt8] = []
        var progress: () -> Bool = { true }
        static let bodyLimit = 4 << 20
    }

    init(caBundle: String?) throws(Failure) {
        var error = [CChar](repeating: 0, count: 256)
        guard ccurl_load(&api, &error, error.count) == 0 else {
            throw Failure(description: "cannot use libcurl (install libcurl4): \(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
        guard let handle = api.easy_init() else { throw Failure(description: "curl_easy_init failed") }
        self.handle = handle
        self.caBundle = caBundle
        version = ccurl_version(&api).map { String(cString: $0) } ?? "?"
    }

    deinit { api.easy_cleanup(handle) }

    /// libcurl's version, for the User-Agent (RFC 8555 section 6.1 asks clients to send one).
    private(set) var version = "?"

    func get(_ url: String) throws(Failure) -> Reply { try perform(url, method: "GET", body: nil) }
    func head(_ url: String) throws(Failure) -> Reply { try perform(url, method: "HEAD", body: nil) }
    /// A JWS POST; `accept` is what the answer should be (a certificate chain is PEM, RFC 8555 section 7.4.2).
    func post(_ url: String, jose body: String, accept: String = "application/json") throws(Failure) -> Reply {
        try perform(url, method: "POST", body: body, accept: accept)
    }

    private func perform(_ url: String, method: String, body: String?, accept: String = "application/json") throws(Failure) -> Reply {
        api.easy_reset(handle)
        let collector = Collector()
        collector.progress = progress
        let context = Unmanaged.passUnretained(collector).toOpaque()
        var headers: UnsafeMutablePointer<curl_slist>? = nil
        defer { if let headers { api.slist_free_all(headers) } }
        headers = api.slist_append(headers, "Accept: \(accept)")
        if body != nil { headers = api.slist_append(headers, "Content-Type: application/jose+json") }
        let bodyBytes = Array((body ?? "").utf8)
        var error = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE))
        let code: CURLcode = bodyBytes.withUnsafeBufferPointer { bytes in
            error.withUnsafeMutableBufferPointer { errorBuffer in
                ccurl_setopt_string(&api, handle, CURLOPT_URL, url)
                ccurl_setopt_string(&api, handle, CURLOPT_PROTOCOLS_STR, "https")
                ccurl_setopt_long(&api, handle, CURLOPT_NOSIGNAL, 1)
                ccurl_setopt_long(&api, handle, CURLOPT_CONNECTTIMEOUT, 15)
                ccurl_setopt_long(&api, handle, CURLOPT_TIMEOUT, 60)
                ccurl_setopt_long(&api, handle, CURLOPT_FOLLOWLOCATION, 0)
                ccurl_setopt_string(&api, handle, CURLOPT_USERAGENT, "webserver/\(Libraries.version) (ACME) libcurl/\(version)")
                ccurl_setopt_list(&api, handle, CURLOPT_HTTPHEADER, headers)
                ccurl_setopt_pointer(&api, handle, CURLOPT_ERRORBUFFER, errorBuffer.baseAddress)
                if let caBundle { ccurl_setopt_string(&api, handle, CURLOPT_CAINFO, caBundle) }
                switch method {
                case "HEAD": ccurl_setopt_long(&api, handle, CURLOPT_NOBODY, 1)
                case "POST":
                    ccurl_setopt_long(&api, handle, CURLOPT_POST, 1)
                    ccurl_setopt_long(&api, handle, CURLOPT_POSTFIELDSIZE, bytes.count)
                    ccurl_setopt_pointer(&api, handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress))
                default: ccurl_setopt_long(&api, handle, CURLOPT_HTTPGET, 1)
                }
                ccurl_setopt_pointer(&api, handle, CURLOPT_WRITEDATA, context)
                ccurl_setopt_data_callback(&api, handle, CURLOPT_WRITEFUNCTION) { data, size, count, context in
                    let collector = Unmanaged<AcmeHTTP.Collector>.fromOpaque(context!).takeUnretainedValue()
                    let length = size * count
                    guard collector.body.count + length <= Collector.bodyLimit, let data else { return 0 }
                    data.withMemoryRebound(to: UInt8.self, capacity: length) { collector.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: length)) }
                    return length
                }
                ccurl_setopt_pointer(&api, handle, CURLOPT_HEADERDATA, context)
                ccurl_setopt_data_callback(&api, handle, CURLOPT_HEADERFUNCTION) { data, size, count, context in
                    let collector = Unmanaged<AcmeHTTP.Collector>.fromOpaque(context!).takeUnretainedValue()
                    let length = size * count
                    guard let data else { return length }
                    let line = data.withMemoryRebound(to: UInt8.self, capacity: length) { String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self) }
                    if line.hasPrefix("HTTP/") {
                        // A new response (after 100 Continue): its fields only.
                        collector.headers = [:]
                        collector.links = []
                    } else if let colon = line.firstIndex(of: ":") {
                        let name = line[..<colon].lowercased()
                        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
                        collector.headers[name] = value
                        if name == "link" { collector.links.append(value) }
                    }
                    return length
                }
                ccurl_setopt_long(&api, handle, CURLOPT_NOPROGRESS, 0)
                ccurl_setopt_pointer(&api, handle, CURLOPT_XFERINFODATA, context)
                ccurl_setopt_progress_callback(&api, handle) { context, _, _, _, _ in
                    let collector = Unmanaged<AcmeHTTP.Collector>.fromOpaque(context!).takeUnretainedValue()
                    return collector.progress() ? 0 : 1
                }
                return api.easy_perform(handle)
            }
        }
        guard code == CURLE_OK else {
            let detail = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw Failure(description: "\(method) \(url): \(detail.isEmpty ? api.easy_strerror(code).map { String(cString: $0) } ?? "error \(code.rawValue)" : detail)")
        }
        return Reply(status: ccurl_response_code(&api, handle), headers: collector.headers, links: collector.links, body: collector.body)
    }
}
