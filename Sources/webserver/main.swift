import Server

// Children are this same executable started with "--role=ROLE"; they never reach the command line parser.
if CommandLine.arguments.count > 1 && CommandLine.arguments[1].hasPrefix("--role=") {
    ChildMain.run(arguments: CommandLine.arguments)
}
blockAllSignals()
WebServerCommand.main()
