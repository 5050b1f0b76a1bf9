public import Glibc

// The clocks, inlinable: the worker reads one for every request (its duration for /metrics) and is in
// another module. This file imports Glibc alone, so their C types come from it.

/// Monotonic time in milliseconds; the clock every deadline in the server uses.
@inline(__always)
@inlinable
package func monotonicMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}

/// A fine monotonic clock (vDSO, no syscall) for request durations.
@inline(__always)
@inlinable
package func monotonicMicroseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000 &+ UInt64(now.tv_nsec) / 1000
}
