import CSystemShims
import Glibc

/// An error from a system call: the call's name and the errno it left.
///
/// Every syscall wrapper in the server throws this one type, so logs always say which call failed.
public struct SystemError: Error, CustomStringConvertible, Equatable {
    /// The C function that failed, such as `accept4`.
    public let call: String
    /// The value of `errno` right after the call.
    public let errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String {
        "\(call): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// What a non-blocking call did: it processed a value, or the kernel said it would block.
public enum IOResult<Value> {
    case processed(Value)
    case wouldBlock
}

/// Runs a syscall that returns -1 on failure, retrying on EINTR.
///
/// EBADF and EFAULT are programmer errors and trap: they mean an fd or buffer was mismanaged.
@inline(never)
@discardableResult
package func syscall<T: FixedWidthInteger>(_ name: String, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        precondition(code != EBADF && code != EFAULT, "\(name) failed with \(code == EBADF ? "EBADF" : "EFAULT")")
        throw SystemError(call: name, errno: code)
    }
}

/// Like `syscall`, but EAGAIN/EWOULDBLOCK becomes `.wouldBlock` instead of an error.
@inline(never)
package func nonBlockingSyscall<T: FixedWidthInteger>(
    _ name: String, _ body: () -> T
) throws(SystemError) -> IOResult<T> {
    while true {
        let result = body()
        if result != -1 { return .processed(result) }
        let code = Glibc.errno
        if code == EINTR { continue }
        if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
        precondition(code != EBADF && code != EFAULT, "\(name) failed with \(code == EBADF ? "EBADF" : "EFAULT")")
        throw SystemError(call: name, errno: code)
    }
}

/// Reads exactly `count` bytes of `fd` from `offset` into `target` (pread, retried on EINTR and short
/// reads); false at an error or at the file's end first (the file shrank under us).
package func readFully(_ fd: Int32, _ target: UnsafeMutableRawPointer, _ count: Int, at offset: Int64) -> Bool {
    var done = 0
    while done < count {
        let read = pread(fd, target + done, count - done, off_t(offset + Int64(done)))
        if read < 0 && errno == EINTR { continue }
        if read <= 0 { return false }
        done += read
    }
    return true
}

/// Closes a descriptor. Never retried on EINTR: Linux has already released the fd by then.
@inline(never)
package func closeDescriptor(_ fd: Int32) {
    let result = Glibc.close(fd)
    if result == -1 {
        let code = Glibc.errno
        precondition(code != EBADF, "close(\(fd)) failed with EBADF: closed twice")
    }
}

/// Closes every descriptor in `fds`, one close_range(2) for each run of consecutive numbers: accept4
/// hands out the lowest free numbers, so a batch passed on to another process is usually one run.
package func closeDescriptors(_ fds: UnsafeBufferPointer<Int32>) {
    var start = 0
    while start < fds.count {
        var end = start + 1
        while end < fds.count && fds[end] == fds[end - 1] &+ 1 { end += 1 }
        if end - start == 1 || cs_close_range(UInt32(fds[start]), UInt32(fds[end - 1]), 0) != 0 {
            // A single descriptor, or a kernel without close_range (before 5.9): one close each.
            for index in start..<end { closeDescriptor(fds[index]) }
        }
        start = end
    }
}
