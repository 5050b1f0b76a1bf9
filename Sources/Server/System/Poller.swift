import CSystemShims
import Glibc

/// One epoll instance and the event array it fills, allocated once per process.
///
/// Tokens are raw fds: every fd is registered at most once, and the owner of the fd removes it before
/// closing. The corresponding C functions are `epoll_create1`, `epoll_ctl` and `epoll_wait`.
public final class Poller {
    /// The epoll descriptor; owned by this poller.
    let fd: Int32
    private let events: UnsafeMutablePointer<epoll_event>
    private let capacity: Int

    init(capacity: Int = 256) throws(SystemError) {
        fd = try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        self.capacity = capacity
        events = .allocate(capacity: capacity)
    }

    deinit {
        events.deallocate()
        closeDescriptor(fd)
    }

    static let readable = EPOLLIN.rawValue
    static let writable = EPOLLOUT.rawValue
    static let edgeTriggered = EPOLLET.rawValue
    static let hangup = EPOLLHUP.rawValue | EPOLLERR.rawValue | EPOLLRDHUP.rawValue

    /// Starts watching `target` for `events` (a mask of `readable`, `writable`, `edgeTriggered`).
    func add(_ target: Int32, events mask: UInt32) throws(SystemError) {
        var event = epoll_event()
        event.events = mask
        event.data.fd = target
        try syscall("epoll_ctl(ADD)") { epoll_ctl(fd, EPOLL_CTL_ADD, target, &event) }
    }

    /// Changes what `target` is watched for.
    func modify(_ target: Int32, events mask: UInt32) throws(SystemError) {
        var event = epoll_event()
        event.events = mask
        event.data.fd = target
        try syscall("epoll_ctl(MOD)") { epoll_ctl(fd, EPOLL_CTL_MOD, target, &event) }
    }

    /// Stops watching `target`. Call before closing it.
    func remove(_ target: Int32) {
        var event = epoll_event()
        _ = epoll_ctl(fd, EPOLL_CTL_DEL, target, &event)
    }

    /// Waits up to `timeoutMilliseconds` (-1 forever) and calls `body` with each ready fd and its events;
    /// `woke` runs first, once, when there are any.
    func wait(
        timeoutMilliseconds: Int32, woke: () -> Void = {}, _ body: (Int32, UInt32) throws -> Void
    ) rethrows {
        let count = epoll_wait(fd, events, Int32(capacity), timeoutMilliseconds)
        if count <= 0 { return }
        woke()
        for index in 0..<Int(count) {
            let event = events[index]
            try body(event.data.fd, event.events)
        }
    }
}

/// A periodic timer as an fd, read by the poller. The corresponding C function is `timerfd_create`.
final class Ticker {
    /// The timerfd; owned by this ticker.
    let fd: Int32

    init(intervalMilliseconds: Int) throws(SystemError) {
        fd = try syscall("timerfd_create") {
            timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC))
        }
        var spec = itimerspec()
        spec.it_interval.tv_sec = intervalMilliseconds / 1000
        spec.it_interval.tv_nsec = (intervalMilliseconds % 1000) * 1_000_000
        spec.it_value = spec.it_interval
        try syscall("timerfd_settime") { timerfd_settime(fd, 0, &spec, nil) }
    }

    deinit { closeDescriptor(fd) }

    /// Reads the expiration count so the fd stops being readable.
    func drain() {
        var expirations: UInt64 = 0
        _ = read(fd, &expirations, 8)
    }
}

/// The process's signals, blocked and read through a signalfd.
final class SignalReader {
    /// The signalfd; owned by this reader.
    let fd: Int32

    init(_ signals: [Int32]) throws(SystemError) {
        var mask = sigset_t()
        sigemptyset(&mask)
        for signal in signals { sigaddset(&mask, signal) }
        fd = try syscall("signalfd") { cs_signalfd(-1, &mask, cs_SFD_NONBLOCK | cs_SFD_CLOEXEC) }
    }

    deinit { closeDescriptor(fd) }

    /// Returns the pending signal numbers, in arrival order.
    func pending() -> [Int32] {
        var result: [Int32] = []
        let size = cs_signalfd_siginfo_size()
        withUnsafeTemporaryAllocation(byteCount: size, alignment: 8) { buffer in
            while read(fd, buffer.baseAddress, size) == size {
                result.append(Int32(cs_signalfd_siginfo_signo(buffer.baseAddress)))
            }
        }
        return result
    }
}

/// Monotonic time in milliseconds; the clock every deadline in the server uses.
@inline(__always)
func monotonicMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}

/// A fine monotonic clock (vDSO, no syscall) for request durations.
@inline(__always)
func monotonicMicroseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000 &+ UInt64(now.tv_nsec) / 1000
}

/// Blocks every signal in the calling thread; the first thing each process does in main.
public func blockAllSignals() {
    var previous = sigset_t()
    _ = cs_sigprocmask_block_all(&previous)
}
