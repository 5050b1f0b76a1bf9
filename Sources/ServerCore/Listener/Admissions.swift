import CSystemShims
import Glibc

/// The connections the listeners have admitted and not yet seen closed, in one small shared memfd the
/// supervisor makes and keeps, so the counts outlive a listener that dies:
///
/// - the total, which every listener reserves a place in (an atomic add) before it accepts, so
///   `max_connections` holds across all of them exactly;
/// - per listener, its own share (what its release notices take off again) and the connections it has
///   accepted and not yet passed on, which die with it: the listener started in its place takes those
///   off the counts before it accepts anything.
///
/// Each listener's pair sits on its own cache line; the total on the first. The supervisor maps it
/// read-only in effect (it reads the total for /metrics and the status).
package final class Admissions {
    package static let lineWords = 8
    package static let size = 64 * (1 + ServerConfig.maxListeners)
    package let base: UnsafeMutablePointer<Int64>

    /// A new, zeroed region; the caller owns the fd.
    package static func makeDescriptor() throws(SystemError) -> Int32 {
        let fd = try syscall("memfd_create") { cs_memfd_create("webserver-admissions", UInt32(cs_MFD_CLOEXEC)) }
        if ftruncate(fd, off_t(size)) != 0 {
            let error = SystemError(call: "ftruncate(admissions)", errno: errno)
            closeDescriptor(fd)
            throw error
        }
        return fd
    }

    /// Maps the region `fd` holds (the fd stays the caller's).
    package init(fd: Int32) throws(SystemError) {
        guard let pointer = mmap(nil, Admissions.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), pointer != MAP_FAILED else {
            throw SystemError(call: "mmap(admissions)", errno: errno)
        }
        base = pointer.bindMemory(to: Int64.self, capacity: Admissions.size / 8)
    }

    deinit { munmap(base, Admissions.size) }

    /// Admitted and not yet closed, by every listener.
    package var total: Int64 { cs_atomic_load(base) }

    private func live(_ listener: Int) -> UnsafeMutablePointer<Int64> { base + Admissions.lineWords * (1 + listener) }
    private func pending(_ listener: Int) -> UnsafeMutablePointer<Int64> { base + Admissions.lineWords * (1 + listener) + 1 }

    /// Takes one place under `limit`; false (and nothing taken) when the total is there already.
    package func reserve(limit: Int) -> Bool {
        if cs_atomic_add(base, 1) <= Int64(limit) { return true }
        _ = cs_atomic_add(base, -1)
        return false
    }

    /// Gives back a place `reserve` took for an accept that brought nothing (or a connection closed at once).
    package func unreserve() { _ = cs_atomic_add(base, -1) }

    /// A reserved place is now `listener`'s connection.
    package func admitted(by listener: Int) { cs_atomic_store(live(listener), cs_atomic_load(live(listener)) + 1) }

    /// `listener`'s connections open now.
    package func liveCount(of listener: Int) -> Int { Int(cs_atomic_load(live(listener))) }

    /// `count` of `listener`'s connections have closed: off its share and the total (never below zero:
    /// the supervisor hands the manager connections at shutdown that no listener admitted).
    package func released(_ count: Int, by listener: Int) {
        let own = cs_atomic_load(live(listener))
        let taken = min(Int64(count), max(0, own))
        guard taken > 0 else { return }
        cs_atomic_store(live(listener), own - taken)
        _ = cs_atomic_add(base, -taken)
    }

    /// The connections `listener` holds accepted and not yet passed on.
    package func setPending(_ count: Int, of listener: Int) { cs_atomic_store(pending(listener), Int64(count)) }

    /// At a listener's start: the connections its predecessor held when it died are gone (the kernel
    /// closed them with it); they come off the counts. Returns how many.
    package func takeOverFromPredecessor(of listener: Int) -> Int {
        let lost = Int(cs_atomic_load(pending(listener)))
        setPending(0, of: listener)
        if lost > 0 { released(lost, by: listener) }
        return lost
    }
}
