import CSystemShims
import Glibc

/// The two executables the process tree runs, held open by the supervisor from its start, so a package
/// upgrade that replaces the files on disk never mixes two builds in one tree.
///
/// The listener and the manager run from webserver-core: a small executable without Foundation and
/// OpenSSL, so neither process maps, relocates and keeps resident what it never calls (about 1.5 MiB each
/// at rest: docs/performance-log.md, twelfth session). The supervisor, the workers and the ACME process
/// run from this executable, which the manager starts workers from (it gets an fd of it in
/// `ManagerSlot.server`). Without a webserver-core of this build, the listener and the manager run from
/// this executable too: the server works the same, with a warning.
struct Executables {
    /// This executable (O_PATH); owned.
    let server: Int32
    /// webserver-core (O_PATH), or nil when the listener and the manager run from `server`; owned.
    let core: Int32?
    /// Where the core was found, or why it was not.
    let coreDescription: String

    /// Where webserver-core is looked for, in order: beside this executable (a build directory,
    /// /usr/local/bin), then in ../libexec/webserver (the Debian package's /usr/libexec/webserver).
    static func candidates(beside executable: String) -> [String] {
        let directory = executable.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let base = directory.isEmpty ? "." : directory
        return ["\(base)/webserver-core", "\(base)/../libexec/webserver/webserver-core"]
    }

    static func open(executable: String = Upgrade.installedExecutable) throws(SystemError) -> Executables {
        let server = try syscall("open(\(Spawner.executable))") { Glibc.open(Spawner.executable, cs_O_PATH | O_CLOEXEC) }
        var reasons: [String] = []
        for path in candidates(beside: executable) {
            guard access(path, X_OK) == 0 else { continue }
            let answer = formatAnswer(of: path)
            guard answer == "\(CoreFormat.version)" else {
                reasons.append("\(path) is from another build (core format \(answer.isEmpty ? "unknown" : answer), this server's \(CoreFormat.version))")
                continue
            }
            let fd = Glibc.open(path, cs_O_PATH | O_CLOEXEC)
            if fd >= 0 { return Executables(server: server, core: fd, coreDescription: path) }
            reasons.append("\(path): \(SystemError(call: "open", errno: errno))")
        }
        if reasons.isEmpty { reasons.append("no webserver-core beside \(executable) or in its ../libexec/webserver") }
        return Executables(server: server, core: nil, coreDescription: reasons.joined(separator: "; "))
    }

    /// What `path --core-format` prints (trimmed), or "" when it does not run, or says nothing within ten
    /// seconds (it answers in a few milliseconds; under valgrind, in one or two seconds).
    static func formatAnswer(of path: String) -> String {
        var pipe: [Int32] = [-1, -1]
        guard cs_pipe2(&pipe, O_CLOEXEC) == 0 else { return "" }
        defer { closeDescriptor(pipe[0]) }
        let null = Glibc.open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if null >= 0 { closeDescriptor(null) } }
        let child: ChildProcess
        do {
            child = try Spawner.spawn(role: nil, displayName: path, arguments: [CoreFormat.argument], fds: [],
                                      standardStreams: (null, pipe[1], null), executable: path)
        } catch {
            closeDescriptor(pipe[1])
            return ""
        }
        closeDescriptor(pipe[1])
        var text: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64)
        let deadline = monotonicMilliseconds() + 10_000
        while text.count < 64 {
            var entry = pollfd(fd: pipe[0], events: Int16(POLLIN), revents: 0)
            let wait = Int32(max(0, deadline - monotonicMilliseconds()))
            guard poll(&entry, 1, wait) == 1 else { break }
            let count = buffer.withUnsafeMutableBytes { read(pipe[0], $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            text += buffer.prefix(count)
        }
        child.signal(SIGKILL)
        var status: Int32 = 0
        _ = waitpid(child.pid, &status, 0)
        child.closePidfd()
        return String(decoding: text, as: UTF8.self).split(whereSeparator: { $0 == "\n" || $0 == " " }).first.map(String.init) ?? ""
    }
}
