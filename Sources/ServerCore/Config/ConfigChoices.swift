public import Logging

/// A configuration value with a fixed set of choices. The valid values, and the error for any other,
/// come from the type: a choice is written once, here, and read as the enum everywhere else.
public protocol ConfigChoice: RawRepresentable<String>, CaseIterable, Codable, Sendable, Equatable {}

extension ConfigChoice {
    /// The choices as a sentence: "a, b or c".
    package static var choicesText: String {
        let names = allCases.map(\.rawValue)
        return names.count > 1 ? names.dropLast().joined(separator: ", ") + " or " + names.last! : names.joined()
    }
}

/// `symlinks`: how a symlink beneath the root is followed (never out of the root, whatever the policy).
public enum SymlinkPolicy: String, ConfigChoice {
    /// Follow them while they stay beneath the root.
    case follow
    /// Follow one only when the link and what it points to have the same owner (Apache's
    /// SymLinksIfOwnerMatch), so a user cannot publish another user's files by linking to them.
    case ownerMatch = "owner-match"
    /// Never follow one (403).
    case never
}

/// `encoded_slash`: what `%2F` in a path is.
public enum EncodedSlash: String, ConfigChoice {
    /// A separator, as nginx takes it.
    case decode
    /// 404, as Apache answers by default.
    case reject
}

/// `access_log_format`.
public enum AccessLogFormat: String, ConfigChoice {
    /// Apache's and nginx's combined format.
    case combined
    /// One JSON object per line, with the client's port; every string escaped.
    case json
}

/// `tls.min_version`: the lowest TLS version accepted.
public enum TLSVersion: String, ConfigChoice {
    case tls12 = "1.2"
    case tls13 = "1.3"
}

/// `proxy.forwarded_header`: which header's hops name the client behind a trusted proxy. Only one is
/// read: a proxy that appends to one usually passes the other on from the client untouched, where
/// anyone could have written it.
public enum ForwardedHeader: String, ConfigChoice {
    case xForwardedFor = "x-forwarded-for"
    /// RFC 7239 Forwarded's `for=`.
    case forwarded
    case none
}

/// `log_level`: swift-log's levels, by their names.
extension Logger.Level: ConfigChoice {}
