/// The request methods the parser knows. Others are syntactically valid but answered with 501.
public enum HTTPMethod: UInt8, Sendable {
    case get, head, post, put, delete, connect, options, trace, patch
}
