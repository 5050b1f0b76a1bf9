import Foundation
import Glibc

/// One problem found in a configuration, with where it is: file, line, column and the key's full name.
public struct ConfigIssue: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var line: Int
    public var column: Int
    public var key: String
    public var message: String

    public var description: String {
        let place = line > 0 ? (column > 0 ? "\(file):\(line):\(column)" : "\(file):\(line)") : file
        return key.isEmpty ? "\(place): \(message)" : "\(place): \(key): \(message)"
    }
}

/// Every problem found in one configuration; `check` prints them all, `serve` refuses to start.
public struct ConfigErrors: Error, CustomStringConvertible, Sendable {
    public var issues: [ConfigIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// Reads `webserver.yaml` into a `ServerConfig`, checking every key, type and value: the file
/// (`DocumentReader` and its section readers), then the command line's flags (`ConfigOverrides`), then
/// the checks that need the final values (`ConfigValidation`).
///
/// Relative paths in a file are taken relative to the file's directory (so a config works from any
/// working directory); relative paths given as flags are taken relative to the working directory.
public enum ConfigLoader {
    /// Loads `path` (nil: no file, defaults only) and applies `overrides`. Throws `ConfigErrors`. With
    /// `makeDevCertificate`, a missing development certificate (`tls.dev_certificate`) is made here, so
    /// that `serve` and a reload find it; `check` only says it will be.
    public static func load(
        path: String?, overrides: ConfigOverrides = ConfigOverrides(), makeDevCertificate: Bool = false
    ) throws(ConfigErrors) -> ServerConfig {
        var config = ServerConfig()
        var issues: [ConfigIssue] = []
        var rootPlace: ConfigIssue? = nil
        if let path {
            let reader = DocumentReader(file: path)
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                reader.read(text, into: &config)
                if let (line, column) = reader.rootMark { rootPlace = ConfigIssue(file: path, line: line, column: column, key: "root", message: "") }
                if !reader.parsed { throw ConfigErrors(issues: reader.issues) }
            } else {
                // Nothing else is worth saying about a file that is not there.
                reader.issue(line: 0, column: 0, key: "", "cannot read the file: \(String(cString: strerror(errno)))")
                throw ConfigErrors(issues: reader.issues)
            }
            // In file order (the readers go section by section).
            issues += reader.issues.enumerated().sorted {
                ($0.element.line, $0.element.column, $0.offset) < ($1.element.line, $1.element.column, $1.offset)
            }.map(\.element)
        }
        issues += overrides.apply(to: &config)
        if overrides.root != nil { rootPlace = ConfigIssue(file: "command line", line: 0, column: 0, key: "--root", message: "") }
        issues += ConfigValidation(file: path ?? "command line", overrides: overrides, rootPlace: rootPlace)
            .check(&config, makeDevCertificate: makeDevCertificate, previousIssues: issues.count)
        if !issues.isEmpty { throw ConfigErrors(issues: issues) }
        return config
    }

    /// `path` made absolute against `base`, with `.` and `..` resolved.
    static func absolute(_ path: String, base: String) -> String {
        let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: base, isDirectory: true))
        return url.standardizedFileURL.path
    }

    /// Whether the directory `path` would be created in exists.
    static func parentExists(_ path: String) -> Bool {
        var info = stat()
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return stat(parent, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }
}
