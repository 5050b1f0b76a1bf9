/// The response statuses the server sends, with their reason phrases (RFC 9110 section 15).
public enum HTTPStatus: UInt16, Sendable {
    case `continue` = 100
    case ok = 200
    case noContent = 204
    case partialContent = 206
    case movedPermanently = 301
    case found = 302
    case seeOther = 303
    case notModified = 304
    case temporaryRedirect = 307
    case permanentRedirect = 308
    case badRequest = 400
    case unauthorized = 401
    case forbidden = 403
    case notFound = 404
    case methodNotAllowed = 405
    case notAcceptable = 406
    case requestTimeout = 408
    case preconditionFailed = 412
    case contentTooLarge = 413
    case uriTooLong = 414
    case rangeNotSatisfiable = 416
    case expectationFailed = 417
    case misdirectedRequest = 421
    case tooManyRequests = 429
    case headerFieldsTooLarge = 431
    case internalServerError = 500
    case notImplemented = 501
    case serviceUnavailable = 503
    case versionNotSupported = 505

    /// The status line, from "HTTP/1.1" to the CRLF.
    package var statusLine: StaticString {
        switch self {
        case .continue: return "HTTP/1.1 100 Continue\r\n"
        case .ok: return "HTTP/1.1 200 OK\r\n"
        case .noContent: return "HTTP/1.1 204 No Content\r\n"
        case .partialContent: return "HTTP/1.1 206 Partial Content\r\n"
        case .movedPermanently: return "HTTP/1.1 301 Moved Permanently\r\n"
        case .found: return "HTTP/1.1 302 Found\r\n"
        case .seeOther: return "HTTP/1.1 303 See Other\r\n"
        case .notModified: return "HTTP/1.1 304 Not Modified\r\n"
        case .temporaryRedirect: return "HTTP/1.1 307 Temporary Redirect\r\n"
        case .permanentRedirect: return "HTTP/1.1 308 Permanent Redirect\r\n"
        case .badRequest: return "HTTP/1.1 400 Bad Request\r\n"
        case .unauthorized: return "HTTP/1.1 401 Unauthorized\r\n"
        case .forbidden: return "HTTP/1.1 403 Forbidden\r\n"
        case .notFound: return "HTTP/1.1 404 Not Found\r\n"
        case .methodNotAllowed: return "HTTP/1.1 405 Method Not Allowed\r\n"
        case .notAcceptable: return "HTTP/1.1 406 Not Acceptable\r\n"
        case .requestTimeout: return "HTTP/1.1 408 Request Timeout\r\n"
        case .preconditionFailed: return "HTTP/1.1 412 Precondition Failed\r\n"
        case .contentTooLarge: return "HTTP/1.1 413 Content Too Large\r\n"
        case .uriTooLong: return "HTTP/1.1 414 URI Too Long\r\n"
        case .rangeNotSatisfiable: return "HTTP/1.1 416 Range Not Satisfiable\r\n"
        case .expectationFailed: return "HTTP/1.1 417 Expectation Failed\r\n"
        case .misdirectedRequest: return "HTTP/1.1 421 Misdirected Request\r\n"
        case .tooManyRequests: return "HTTP/1.1 429 Too Many Requests\r\n"
        case .headerFieldsTooLarge: return "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        case .internalServerError: return "HTTP/1.1 500 Internal Server Error\r\n"
        case .notImplemented: return "HTTP/1.1 501 Not Implemented\r\n"
        case .serviceUnavailable: return "HTTP/1.1 503 Service Unavailable\r\n"
        case .versionNotSupported: return "HTTP/1.1 505 HTTP Version Not Supported\r\n"
        }
    }

    /// A short HTML body for error responses.
    package var errorBody: StaticString {
        switch self {
        case .badRequest: return "<html><body><h1>400 Bad Request</h1></body></html>\n"
        case .unauthorized: return "<html><body><h1>401 Unauthorized</h1></body></html>\n"
        case .forbidden: return "<html><body><h1>403 Forbidden</h1></body></html>\n"
        case .notFound: return "<html><body><h1>404 Not Found</h1></body></html>\n"
        case .methodNotAllowed: return "<html><body><h1>405 Method Not Allowed</h1></body></html>\n"
        case .notAcceptable: return "<html><body><h1>406 Not Acceptable</h1></body></html>\n"
        case .requestTimeout: return "<html><body><h1>408 Request Timeout</h1></body></html>\n"
        case .preconditionFailed: return "<html><body><h1>412 Precondition Failed</h1></body></html>\n"
        case .contentTooLarge: return "<html><body><h1>413 Content Too Large</h1></body></html>\n"
        case .uriTooLong: return "<html><body><h1>414 URI Too Long</h1></body></html>\n"
        case .rangeNotSatisfiable: return "<html><body><h1>416 Range Not Satisfiable</h1></body></html>\n"
        case .expectationFailed: return "<html><body><h1>417 Expectation Failed</h1></body></html>\n"
        case .misdirectedRequest: return "<html><body><h1>421 Misdirected Request</h1><p>This connection's certificate is not for this host.</p></body></html>\n"
        case .tooManyRequests: return "<html><body><h1>429 Too Many Requests</h1></body></html>\n"
        case .headerFieldsTooLarge: return "<html><body><h1>431 Request Header Fields Too Large</h1></body></html>\n"
        case .internalServerError: return "<html><body><h1>500 Internal Server Error</h1></body></html>\n"
        case .notImplemented: return "<html><body><h1>501 Not Implemented</h1></body></html>\n"
        case .serviceUnavailable: return "<html><body><h1>503 Service Unavailable</h1></body></html>\n"
        case .versionNotSupported: return "<html><body><h1>505 HTTP Version Not Supported</h1></body></html>\n"
        case .continue, .ok, .noContent, .partialContent, .movedPermanently, .found, .seeOther, .notModified, .temporaryRedirect,
             .permanentRedirect:
            return ""
        }
    }
}
