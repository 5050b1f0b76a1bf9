import CSystemShims
import Foundation
import Glibc
import Testing

/// Options the server sets on the sockets of the connections it serves, read back from the worker's
/// own copy of the socket (pidfd_getfd), not from the configuration.
@Suite(.serialized) struct SocketOptionTests {
    /// TCP_NOTSENT_LOWAT (`notsent_lowat`) reaches every accepted connection, 128 KiB by default; a
    /// reload changes it for the connections accepted after it.
    @Test func notSentLowatReachesConnectionsAndFollowsAReload() throws {
        let server = try TestServer().start()
        defer { server.stop() }
        #expect(try lowat(server) == 131_072)

        let original = try String(contentsOf: server.configFile, encoding: .utf8)
        try (original + "notsent_lowat: 16k\n").write(to: server.configFile, atomically: true, encoding: .utf8)
        #expect(server.reload { kill(server.pid, SIGHUP) })
        #expect(try lowat(server) == 16_384)

        try (original + "notsent_lowat: off\n").write(to: server.configFile, atomically: true, encoding: .utf8)
        #expect(server.reload { kill(server.pid, SIGHUP) })
        #expect(try lowat(server) == 0)  // the kernel's default: no limit
    }

    /// Opens a keep-alive connection, finds the worker's socket for it, and reads the option there.
    func lowat(_ server: TestServer) throws -> Int {
        let client = try openKeepAliveConnection(server.port)
        defer { close(client) }
        guard let clientPort = port(of: client) else { throw TestFailure("the client socket has no port") }
        for worker in server.pids(of: "worker") {
            let pidfd = cs_pidfd_open(worker, 0)
            guard pidfd >= 0 else { continue }
            defer { close(pidfd) }
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(worker)/fd")) ?? []
            for name in fds {
                guard let target = Int32(name),
                      let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(worker)/fd/\(name)"),
                      link.hasPrefix("socket:") else { continue }
                let fd = cs_pidfd_getfd(pidfd, target, 0)
                guard fd >= 0 else { continue }
                defer { close(fd) }
                guard port(of: fd, peer: true) == clientPort else { continue }
                var value: UInt32 = 0
                var length = socklen_t(MemoryLayout<UInt32>.size)
                guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_NOTSENT_LOWAT, &value, &length) == 0 else {
                    throw TestFailure("getsockopt(TCP_NOTSENT_LOWAT): errno \(errno)")
                }
                return Int(value)
            }
        }
        throw TestFailure("no worker holds the connection from port \(clientPort)")
    }
}
