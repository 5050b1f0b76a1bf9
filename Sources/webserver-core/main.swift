import Glibc
import ServerCore

// The listener and the manager, without Foundation or OpenSSL (docs/ARCHITECTURE.md, "Two executables").
if CommandLine.arguments.count == 2 && CommandLine.arguments[1] == CoreFormat.argument {
    print(CoreFormat.version)
    exit(0)
}
ChildMain.run(arguments: CommandLine.arguments)
