import Server

// Children are this same executable (or webserver-core, for the listener and the manager) started with
// "--role=ROLE"; they never reach the command line parser.
if CommandLine.arguments.count > 1 && CommandLine.arguments[1].hasPrefix("--role=") {
    ChildMain.run(arguments: CommandLine.arguments, otherRoles: FullRoles.run)
}
blockAllSignals()
WebServerCommand.main()
