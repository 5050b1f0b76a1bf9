/// The roles only the full server runs (TLS, HTTP, files, the ACME client), for `ChildMain`.
public enum FullRoles {
    public static func run(_ start: ChildMain.Start) throws -> Int32 {
        switch start.role {
        case .worker:
            let worker = try Worker(id: start.id, config: start.config, hasAccessLog: start.hasAccessLog)
            ResidentPages.trimAfterStartup()
            return worker.run()
        case .acme:
            return try AcmeProcess(config: start.config).run()
        case .listener, .manager:
            preconditionFailure("ChildMain runs the \(start.role)")
        }
    }
}
