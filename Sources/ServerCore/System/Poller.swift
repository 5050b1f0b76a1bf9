public import CSystemShims
import Glibc

/// One epoll instance and the event array it fills, allocated once per process.
///
/// Tokens are raw fds: every fd is registered at most once, and the owner of the fd removes it before
/// closing. The corresponding C functions are `epoll_create1`, `epoll_ctl` and `epoll_wait`.
public final class Poller {
    /// The epoll descriptor; owned by this poller.
    @usableFromInline package let fd: Int32
    @usableFromInline let events: UnsafeMutablePointer<epoll_event>
    @usableFromInline let capacity: Int

    package init(capacity: Int = 256) throws(SystemError) {
        fd = try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        self.capacity = capacity
        events = .allocate(capacity: capacity)
    }

    deinit {
        events.deallocate()
        closeDescriptor(fd)
    }

    package static let readable = EPOLLIN.rawValue
    package static let writable = EPOLLOUT.rawValue
    package static let edgeTriggered = EPOLLET.rawValue
    package static let hangup = EPOLLHUP.rawValue | EPOLLERR.rawValue | EPOLLRDHUP.rawValue

    /// Starts watching `target` for `events` (a mask of `readable`, `writable`, `edgeTriggered`).
    package func add(_ target: Int32, events mask: UInt32) throws(SystemError) {
        var event = epoll_event()
        event.events = mask
        event.data.fd = target
        try syscall("epoll_ctl(ADD)") { epoll_ctl(fd, EPOLL_CTL_ADD, target, &event) }
    }

    /// Changes what `target` is watched for.
    package func modify(_ target: Int32, events mask: UInt32) throws(SystemError) {
        var event = epoll_event()
        event.events = mask
        event.data.fd = target
        try syscall("epoll_ctl(MOD)") { epoll_ctl(fd, EPOLL_CTL_MOD, target, &event) }
    }

    /// Stops watching `target`. Call before closing it.
    package func remove(_ target: Int32) {
        var event = epoll_event()
        _ = epoll_ctl(fd, EPOLL_CTL_DEL, target, &event)
    }

    /// Waits up to `timeoutMilliseconds` (-1 forever) and calls `body` with each ready fd and its events;
    /// `woke` runs first, once, when there are any. Inlinable: the worker's loop is in another module, and
    /// its per-event closure is inlined into it as when they were one.
    @inlinable
    package func wait(
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
package final class Ticker {
    /// The timerfd; owned by this ticker.
    package let fd: Int32

    package init(intervalMilliseconds: Int) throws(SystemError) {
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
    package func drain() {
        var expirations: UInt64 = 0
        _ = read(fd, &expirations, 8)
    }
}

/// The process's signals, blocked and read through a signalfd.
package final class SignalReader {
    /// The signalfd; owned by this reader.
    package let fd: Int32

    package init(_ signals: [Int32]) throws(SystemError) {
        var mask = sigset_t()
        sigemptyset(&mask)
        for signal in signals { sigaddset(&mask, signal) }
        fd = try syscall("signalfd") { cs_signalfd(-1, &mask, cs_SFD_NONBLOCK | cs_SFD_CLOEXEC) }
    }

    deinit { closeDescriptor(fd) }

    /// Returns the pending signal numbers, in arrival order.
    package func pending() -> [Int32] {
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

/// Blocks every signal in the calling thread; the first thing each process does in main.
public func blockAllSignals() {
    var previous = sigset_t()
    _ = cs_sigprocmask_block_all(&previous)
}
