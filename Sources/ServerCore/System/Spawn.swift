import CSystemShims
import Glibc

/// A started child process: its pid and a pidfd that becomes readable when it exits.
///
/// Owns the pidfd. Signals go through the pidfd, so a recycled pid is never signalled by mistake.
public final class ChildProcess {
    public let pid: Int32
    /// The pidfd; owned by this object.
    public private(set) var pidfd: Int32

    package init(pid: Int32, pidfd: Int32) {
        self.pid = pid
        self.pidfd = pidfd
    }

    deinit { if pidfd >= 0 { closeDescriptor(pidfd) } }

    /// Sends `signal` through the pidfd. The corresponding C function is `pidfd_send_signal`.
    public func signal(_ signal: Int32) {
        if pidfd >= 0 { _ = cs_pidfd_send_signal(pidfd, signal) } else { _ = kill(pid, signal) }
    }

    /// Releases the pidfd once the child is reaped.
    package func closePidfd() {
        if pidfd >= 0 { closeDescriptor(pidfd) }
        pidfd = -1
    }
}

/// Starts the roles of the server as new processes: of this same executable, or of one the caller holds
/// open (the supervisor holds webserver-core for the listener and the manager; the manager holds the
/// server for its workers).
///
/// posix_spawn, never fork: fork without exec is unsafe once Swift has threads. The child gets `fds` at
/// slots 3, 4, 5, ... (everything else is close-on-exec), an empty signal mask with default
/// dispositions, and argv `[displayName, "--role=ROLE", arguments...]` so `ps` shows its role.
public enum Spawner {
    /// The first fd slot a child receives.
    public static let firstSlot: Int32 = 3

    /// What children run: /proc/self/exe, the very binary this process runs even if the file was
    /// replaced on disk since, so a tree never mixes versions. `WEBSERVER_EXECUTABLE` overrides it for
    /// profiling, where /proc/self/exe is the profiler (`valgrind --trace-children=yes`).
    package static let executable: String = {
        if let path = getenv("WEBSERVER_EXECUTABLE") { return String(cString: path) }
        return "/proc/self/exe"
    }()

    /// Starts `role` with `fds` in slots 3, 4, ... (build the list with the role's `*Slots.arrange`),
    /// from this executable or from `image`: an fd of an executable file (O_PATH will do).
    package static func spawn(role: Role, arguments: [String] = [], fds: [Int32], image: Int32? = nil) throws(SystemError) -> ChildProcess {
        guard let image else { return try spawn(role: role.rawValue, displayName: role.displayName, arguments: arguments, fds: fds) }
        // The image rides in the slot after the last, where the child's own start-up closes it, and is
        // executed by its /proc/self/fd path (the fds are in place by then; exec opens it before it
        // closes anything).
        let slot = firstSlot + Int32(fds.count)
        return try spawn(role: role.rawValue, displayName: role.displayName, arguments: arguments, fds: fds + [image],
                         executable: "/proc/self/fd/\(slot)")
    }

    /// Starts this executable (or `path`) with argv `[displayName, --role=ROLE (when given), arguments...]`.
    public static func spawn(
        role: String?, displayName: String, arguments: [String] = [], fds: [Int32],
        extraEnvironment: [String] = [],
        newSession: Bool = false, standardStreams: (Int32, Int32, Int32)? = nil, executable path: String? = nil
    ) throws(SystemError) -> ChildProcess {
        var temporaries: [Int32] = []
        defer { for fd in temporaries { closeDescriptor(fd) } }
        var sources: [(Int32, Int32)] = []
        if let (input, output, error) = standardStreams {
            for (fd, slot) in [(input, Int32(0)), (output, 1), (error, 2)] {
                let copy = try syscall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 100) }
                temporaries.append(copy)
                sources.append((copy, slot))
            }
        }
        for (index, fd) in fds.enumerated() {
            let copy = try syscall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 100) }
            temporaries.append(copy)
            sources.append((copy, firstSlot + Int32(index)))
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (source, slot) in sources { posix_spawn_file_actions_adddup2(&actions, source, slot) }
        // Nothing else: an fd this process inherited without close-on-exec (a shell's, a test
        // harness's) must not reach a child, least of all a new supervisor that outlives us.
        _ = cs_posix_spawn_file_actions_addclosefrom(&actions, firstSlot + Int32(fds.count))

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        let flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if newSession {
            _ = cs_posix_spawnattr_setflags_setsid(&attributes, flags)
        } else {
            posix_spawnattr_setflags(&attributes, flags)
        }

        let argv = [displayName] + (role.map { ["--role=\($0)"] } ?? []) + arguments
        var environment: [String] = []
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            if !text.hasPrefix("SWIFT_BACKTRACE=") { environment.append(text) }
            index += 1
        }
        environment.append("SWIFT_BACKTRACE=enable=no")
        environment += extraEnvironment

        var pid: pid_t = 0
        let result = withCStrings(argv) { argvPointer in
            withCStrings(environment) { environmentPointer in
                posix_spawn(&pid, path ?? executable, &actions, &attributes, argvPointer, environmentPointer)
            }
        }
        if result != 0 { throw SystemError(call: "posix_spawn(\(role ?? displayName))", errno: result) }
        let pidfd = cs_pidfd_open(pid, 0)  // pidfds are always close-on-exec
        return ChildProcess(pid: pid, pidfd: pidfd)
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Called first in a child: names the process, asks for SIGTERM when the parent dies, closes every fd
    /// above the inherited slots and marks the slots close-on-exec (the manager's workers get only what
    /// it passes them explicitly). Returns false when the parent is already gone.
    public static func prepareChild(name: String, slots: Int32, parent: Int32) -> Bool {
        _ = cs_prctl_set_name(name)
        _ = cs_prctl_set_pdeathsig(SIGTERM)
        _ = cs_close_range(UInt32(firstSlot + slots), UInt32.max, 0)
        for slot in firstSlot..<(firstSlot + slots) { _ = fcntl(slot, F_SETFD, FD_CLOEXEC) }
        return getppid() == parent
    }
}
