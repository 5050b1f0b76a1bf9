import CSystemShims
import Glibc

/// `serve --daemon`: starts the server again as a detached process in its own session, waits until it
/// says it is ready (or why it could not start), and returns the exit status for this process.
public enum Daemon {
    public static func start(arguments: [String]) -> Int32 {
        var pipeFDs: [Int32] = [-1, -1]
        guard cs_pipe2(&pipeFDs, cs_O_CLOEXEC) == 0 else {
            log.critical("pipe2 failed: \(SystemError(call: "pipe2", errno: errno))")
            return 1
        }
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { closeDescriptor(null) }
        let childArguments = arguments.filter { $0 != "--daemon" }
        do {
            _ = try Spawner.spawn(
                role: nil, displayName: "webserver", arguments: childArguments, fds: [pipeFDs[1]],
                extraEnvironment: ["WEBSERVER_READY_FD=3"], newSession: true, standardStreams: (null, null, null))
        } catch {
            print("webserver: cannot start in the background: \(error)")
            return 1
        }
        closeDescriptor(pipeFDs[1])
        var buffer = [UInt8](repeating: 0, count: 4096)
        var message: [UInt8] = []
        while true {
            let count = read(pipeFDs[0], &buffer, buffer.count)
            if count > 0 { message += buffer.prefix(count) } else if count < 0 && errno == EINTR { continue } else { break }
        }
        closeDescriptor(pipeFDs[0])
        let text = String(decoding: message, as: UTF8.self)
        if text == "ready" {
            print("webserver: started in the background")
            return 0
        }
        print("webserver: failed to start: \(text.isEmpty ? "it exited before it was ready" : text)")
        return 1
    }
}
