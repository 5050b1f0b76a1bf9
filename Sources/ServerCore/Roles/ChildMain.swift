import Glibc

/// Entry point of a child process: `argv = [display name, "--role=ROLE", options...]`.
///
/// Names the process, arms PR_SET_PDEATHSIG, closes stray fds, reads the configuration from its memfd
/// slot and runs the role's loop. Exits 78 when the configuration cannot be read (never restarted).
/// The listener and the manager run here; the worker and the ACME process need the full server, which
/// passes `otherRoles` (`webserver-core`, which has only these two, passes nothing).
public enum ChildMain {
    /// What a child exits with when it cannot read its configuration: the supervisor stops the server
    /// rather than restart it (EX_CONFIG).
    public static let configErrorExit: Int32 = 78

    /// What a role of the full server is started with.
    public struct Start {
        public let role: Role
        public let config: ServerConfig
        /// `--id`: the worker's number.
        public let id: Int
        public let hasAccessLog: Bool
    }

    public static func run(arguments: [String], otherRoles: ((Start) throws -> Int32)? = nil) -> Never {
        blockAllSignals()
        guard arguments.count >= 2, arguments[1].hasPrefix("--role=") else { exit(2) }
        guard let role = Role(rawValue: String(arguments[1].dropFirst("--role=".count))) else { exit(2) }
        var options: [String: String] = [:]
        var flags = Set<String>()
        var index = 2
        while index < arguments.count {
            let key = arguments[index]
            if index + 1 < arguments.count && !arguments[index + 1].hasPrefix("--") {
                options[key] = arguments[index + 1]
                index += 2
            } else {
                flags.insert(key)
                index += 1
            }
        }
        let parent = Int32(options["--parent"] ?? "") ?? 0
        let hasAccessLog = flags.contains("--access-log")
        let listeners = max(1, Int(options["--listeners"] ?? "") ?? 1)
        let configSlot: Int32
        let slots: Int32
        switch role {
        case .worker:
            configSlot = WorkerSlot.config.fd
            slots = WorkerSlot.kept(through: hasAccessLog ? .accessLog : .config, extra: listeners)
        case .listener:
            configSlot = ListenerSlot.config.fd
            slots = ListenerSlot.kept(through: .admissions, extra: Int(options["--sockets"] ?? "") ?? 0)
        case .manager:
            configSlot = ManagerSlot.config.fd
            slots = ManagerSlot.kept(through: hasAccessLog ? .accessLog : .server, extra: listeners)
        case .acme:
            configSlot = AcmeSlot.config.fd
            slots = AcmeSlot.kept(through: .config)
        }
        let parentAlive = Spawner.prepareChild(name: role.processName, slots: slots, parent: parent)
        let config: ServerConfig
        do {
            config = try ConfigTransport.read(from: configSlot)
        } catch {
            ErrorLogHandler.bootstrap(role: role.rawValue, level: "info")
            log.critical("cannot read the configuration passed by the parent: \(error)")
            exit(configErrorExit)
        }
        let id = Int(options["--id"] ?? "") ?? 0
        ErrorLogHandler.bootstrap(role: role == .worker ? "worker \(id)" : role.rawValue, level: config.logLevel.rawValue)
        if !parentAlive {
            log.warning("parent \(parent) exited before this \(role) started; exiting")
            exit(0)
        }
        do {
            switch role {
            // Each role is made, then the pages its start-up touched are given back before its loop runs.
            case .listener:
                let sockets = Int(options["--sockets"] ?? "") ?? 0
                let index = Int(options["--index"] ?? "") ?? 0
                let listener = try Listener(config: config, index: index, socketCount: sockets)
                ResidentPages.trimAfterStartup()
                exit(listener.run())
            case .manager:
                let manager = try Manager(config: config, hasAccessLog: hasAccessLog)
                ResidentPages.trimAfterStartup()
                exit(manager.run())
            case .worker, .acme:
                guard let otherRoles else {
                    log.critical("the \(role) runs from the webserver executable, not from this one")
                    exit(2)
                }
                exit(try otherRoles(Start(role: role, config: config, id: id, hasAccessLog: hasAccessLog)))
            }
        } catch {
            log.critical("\(role) failed: \(error)")
            exit(1)
        }
    }
}
