import CSystemShims
import Glibc

/// Passes a validated `ServerConfig` from the supervisor to its children as JSON in a memfd (`JSONCoding`:
/// the listener and the manager have no Foundation).
///
/// Children read it with pread at offset 0, so any number of them can share one memfd.
public enum ConfigTransport {
    /// Writes `config` into a new memfd; the caller owns the returned fd.
    public static func makeDescriptor(_ config: ServerConfig) throws -> Int32 {
        let data = try JSONCoding.encode(config)
        let fd = try syscall("memfd_create") { cs_memfd_create("webserver-config", UInt32(cs_MFD_CLOEXEC)) }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count else {
            closeDescriptor(fd)
            throw SystemError(call: "write(memfd)", errno: errno)
        }
        return fd
    }

    /// Reads the configuration from a memfd made by `makeDescriptor`; the fd stays the caller's.
    public static func read(from fd: Int32) throws -> ServerConfig {
        var info = stat()
        try syscall("fstat") { fstat(fd, &info) }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count == bytes.count else { throw SystemError(call: "pread(config)", errno: errno) }
        return try JSONCoding.decode(ServerConfig.self, from: bytes)
    }
}
