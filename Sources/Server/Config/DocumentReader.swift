import Foundation
import Glibc
import Logging
import Yams

/// Walks one YAML document into a `ServerConfig`, collecting issues with their marks: the top-level
/// keys here, each section in its own reader (`SectionReaders`, `ListenReader`, `TLSReader`,
/// `ContentReaders`). Every key is taken once; what nobody takes is an "unknown key" issue.
final class DocumentReader {
    let file: String
    /// The file's directory: relative paths in it are relative to this.
    let base: String
    var issues: [ConfigIssue] = []
    /// Where `root` was written, for the issue if the directory turns out not to exist.
    var rootMark: (Int, Int)?
    /// Where each site's `root` was written (by its position in `sites`).
    var siteRootMarks: [Int: (Int, Int)] = [:]
    /// Whether the YAML parsed; when not, checks of the resulting values would only add noise.
    var parsed = false

    init(file: String) {
        self.file = file
        let cwd = FileManager.default.currentDirectoryPath
        base = URL(fileURLWithPath: file, relativeTo: URL(fileURLWithPath: cwd, isDirectory: true))
            .deletingLastPathComponent().standardizedFileURL.path
    }

    func issue(line: Int, column: Int, key: String, _ message: String) {
        issues.append(ConfigIssue(file: file, line: line, column: column, key: key, message: message))
    }

    func issue(_ node: Node, key: String, _ message: String) {
        issue(line: node.mark?.line ?? 0, column: node.mark?.column ?? 0, key: key, message)
    }

    func read(_ text: String, into config: inout ServerConfig) {
        let document: Node?
        do {
            document = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            if case .scanner(_, let problem, let mark, _) = error {
                issue(line: mark.line, column: mark.column, key: "", "YAML syntax: \(problem)")
            } else if case .parser(_, let problem, let mark, _) = error {
                issue(line: mark.line, column: mark.column, key: "", "YAML syntax: \(problem)")
            } else if case .composer(_, let problem, let mark, _) = error {
                issue(line: mark.line, column: mark.column, key: "", "YAML: \(problem)")
            } else if case .duplicatedKeysInMapping(let duplicates, let context) = error {
                for key in duplicates {
                    issue(line: context.mark.line, column: context.mark.column, key: key, "is set twice")
                }
            } else {
                issue(line: 0, column: 0, key: "", "YAML: \(error)")
            }
            return
        } catch {
            issue(line: 0, column: 0, key: "", "YAML: \(error)")
            return
        }
        parsed = true
        guard let document else { return }  // An empty file is all defaults.
        guard let top = Section(document, path: "", reader: self) else { return }

        if let node = top.take("listen") { config.listen = listenSockets(node, key: "listen", required: false) }
        readTopLevel(top, into: &config)
        if let section = top.section("error_pages") { config.errorPages = errorPages(section) }
        if let node = top.take("headers") { config.headers = headerRules(node) }
        if let section = top.section("workers") { config.workers = workers(section, config.workers) }
        if let section = top.section("keepalive") { config.keepalive = keepalive(section, config.keepalive) }
        if let section = top.section("timeouts") { config.timeouts = timeouts(section, config.timeouts) }
        if let section = top.section("limits") { config.limits = limits(section, config.limits) }
        if let section = top.section("file_cache") { config.fileCache = fileCache(section, config.fileCache) }
        if let section = top.section("admin") { config.adminListen = adminListen(section, config.adminListen) }
        if let section = top.section("proxy") { config.proxy = proxy(section, config.proxy) }
        if let section = top.section("gzip") { config.gzip = gzip(section, config.gzip) }
        if let section = top.section("compression") { config.gzip = compression(section, config.gzip) }
        if let node = top.peek("http2"), node.scalar != nil {
            if let value = top.boolean("http2") { config.http2.enabled = value }
        } else if let section = top.section("http2") {
            config.http2 = http2(section, config.http2)
        }
        if let section = top.section("tls") { config.tls = tls(section, config.tls) }
        if let section = top.section("supervisor") { config.supervisor = supervision(section, config.supervisor) }
        config.rules = rules(top, config.rules)
        if let value = top.choice("unmatched_host", UnmatchedHost.self) { config.unmatchedHost = value }
        let acmeNode = top.peek("acme")
        if let acme = acme(top, nil) { config.acme = acme }
        if let acmeNode, config.acme != nil, top.peek("sites") == nil {
            issue(acmeNode, key: "acme", "certificates are for names: put each site, with its names, under sites (the top-level acme is what they start from)")
        }
        // Last: every site starts from the top-level values.
        if let node = top.take("sites") { config.sites = sites(node, config) }
        top.finish()
    }

    /// The keys with a single value at the top of the file.
    private func readTopLevel(_ top: Section, into config: inout ServerConfig) {
        if let (value, node) = top.string("root") {
            config.root = ConfigLoader.absolute(value, base: base)
            rootMark = (node.mark?.line ?? 0, node.mark?.column ?? 0)
        }
        if let (value, node) = top.string("index") {
            if value.isEmpty || value.contains("/") || value.hasPrefix(".") {
                issue(node, key: "index", "must be a plain file name, got '\(value)'")
            } else { config.index = value }
        }
        if let value = top.choice("symlinks", SymlinkPolicy.self) { config.symlinks = value }
        if let value = top.choice("encoded_slash", EncodedSlash.self) { config.encodedSlash = value }
        if let value = top.boolean("autoindex") { config.autoindex = value }
        if let (value, node) = top.string("user") {
            if getpwnam(value) == nil { issue(node, key: "user", "no such user '\(value)'") } else { config.user = value }
        }
        if let (value, node) = top.string("pid_file") { config.pidFile = path(value, node, key: "pid_file") }
        if let value = top.choice("access_log_format", AccessLogFormat.self) { config.accessLogFormat = value }
        if let (value, node) = top.string("access_log") {
            config.accessLog = value == "off" || value == "false" ? nil : path(value, node, key: "access_log")
        }
        if let (value, node) = top.string("error_log") {
            config.errorLog = value == "stderr" ? nil : path(value, node, key: "error_log")
        }
        if let value = top.choice("log_level", Logger.Level.self) { config.logLevel = value }
        if let value = top.integer("max_connections", in: 1...10_000_000) { config.maxConnections = value }
        if let node = top.peek("listeners"), node.scalar?.string == "auto" {
            _ = top.take("listeners")
            config.listeners = 0
        } else if let value = top.integer("listeners", in: 1...ServerConfig.maxListeners) {
            config.listeners = value
        }
        if let value = top.integer("backlog", in: 1...65535) { config.backlog = value }
        if let value = top.offOr("defer_accept", off: 0, { top.duration($0) }) { config.deferAcceptMilliseconds = value }
        if let value = top.offOr("notsent_lowat", off: 0, { top.size($0, in: 1024...67_108_864) }) { config.notSentLowat = value }
    }

    /// A path from the file: absolute, relative to the file's directory; its directory must exist.
    func path(_ value: String, _ node: Node, key: String) -> String? {
        let full = ConfigLoader.absolute(value, base: base)
        if !ConfigLoader.parentExists(full) {
            issue(node, key: key, "the directory of '\(value)' does not exist")
            return nil
        }
        return full
    }
}
