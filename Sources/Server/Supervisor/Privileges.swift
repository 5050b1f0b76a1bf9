import Glibc

/// What the supervisor sets up for the whole tree as root, before it gives root up.
enum Privileges {
    /// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it), and warns when
    /// `max_connections` cannot fit: a worker at its fd limit would lose connections passed to it.
    static func raiseDescriptorLimit(for config: ServerConfig) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        // Each connection costs its worker one fd (a second one only while a file is being sent).
        let needed = UInt64(config.maxConnections) + 256
        if UInt64(limit.rlim_cur) < needed {
            log.warning("the open-file limit (\(limit.rlim_cur)) is low for max_connections \(config.maxConnections): raise LimitNOFILE/ulimit -n to \(needed) or lower max_connections")
        }
    }

    /// Becomes the configured `user` (its uid, gid and only that group) when started as root, once the
    /// sockets are bound and the logs open, or `nobody` when none is set: no request is ever served as
    /// root. The logs are given to that user, so it can write them on.
    static func drop(to config: ServerConfig, logs: ServerLogs) throws {
        guard let name = config.effectiveUser else { return }
        if name == "root" {
            log.warning("running as root, as 'user: root' asks: every request is served with root's rights")
            return
        }
        guard let entry = getpwnam(name) else {
            throw StartupError(config.user == nil
                ? "no 'user' is set and the default, '\(name)', does not exist: set 'user' to the account the server should run as"
                : "user '\(name)' does not exist")
        }
        let uid = entry.pointee.pw_uid
        let gid = entry.pointee.pw_gid
        logs.give(to: uid, gid)
        try syscall("setgroups") { setgroups(1, [gid]) }
        try syscall("setgid") { setgid(gid) }
        try syscall("setuid") { setuid(uid) }
        if config.user == nil {
            log.notice("running as user \(name) (no 'user' is set; set one to choose another)")
        } else {
            log.info("running as user \(name)")
        }
    }
}
