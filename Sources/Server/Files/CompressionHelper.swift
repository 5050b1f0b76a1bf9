import CSystemShims
import CZstd
import Glibc

/// Compresses file versions at their best levels (brotli quality 11, zstd level 19) on a thread of its
/// own, at a lower scheduling priority, so the worker's loop never waits for them: the first request
/// for a version is answered at once from a fast level, the loop hands the version over (`submit`),
/// the thread compresses it and signals an eventfd, and the loop takes the bodies back (`takeFinished`)
/// and puts them in the compressed cache in place of the fast ones.
///
/// Why a thread and not slices between events: brotli's encoder does the work of quality 11 in a few
/// long calls whatever the input is fed in, so no slice could be kept near a millisecond; and why not a
/// helper process: the body has to end up in the worker's own cache, which a thread fills with one
/// pointer, where a process would copy every body through a socket. The thread shares nothing with
/// the loop but the two queues under one mutex; it reads the file through the cached file's fd with
/// pread (no shared offset) or its inline bytes, which never change.
final class CompressionHelper: @unchecked Sendable {
    struct Job {
        let source: CachedFile
        let coding: ContentCoding
        let level: Int
        let key: CompressedCache.Key
    }

    struct Finished {
        let job: Job
        /// The compressed body, or nil when the file could not be read or the library failed.
        let body: UnsafeMutableRawBufferPointer?
    }

    /// Readable when bodies are finished; the worker's poller watches it.
    let eventFD: Int32
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var queue: [Job] = []
    private var finished: [Finished] = []
    private var started = false
    /// Versions submitted and not yet taken back (the loop's side only), so one is not queued twice.
    private var inFlight: Set<CompressedCache.Key> = []
    /// Jobs waiting at most; more are not queued (the fast body keeps serving).
    static let maxQueued = 256

    init?() {
        let fd = cs_eventfd()
        guard fd >= 0 else { return nil }
        eventFD = fd
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    /// Only when the thread never started: a running thread holds the helper for the worker's life.
    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
        for item in finished { item.body?.deallocate() }
        closeDescriptor(eventFD)
    }

    /// Queues `job` unless the same version is already on its way; starts the thread on first use.
    func submit(_ job: Job) {
        guard !inFlight.contains(job.key) else { return }
        pthread_mutex_lock(mutex)
        let full = queue.count >= CompressionHelper.maxQueued
        if !full {
            queue.append(job)
            pthread_cond_signal(condition)
        }
        pthread_mutex_unlock(mutex)
        guard !full else { return }
        inFlight.insert(job.key)
        if !started { start() }
    }

    /// The bodies finished since the last call (the loop's side, when `eventFD` is readable).
    func takeFinished() -> [Finished] {
        var count: UInt64 = 0
        _ = read(eventFD, &count, 8)
        pthread_mutex_lock(mutex)
        let done = finished
        finished = []
        pthread_mutex_unlock(mutex)
        for item in done { inFlight.remove(item.job.key) }
        return done
    }

    private func start() {
        started = true
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let made = pthread_create(&thread, nil, { context in
            let helper = Unmanaged<CompressionHelper>.fromOpaque(context!).takeUnretainedValue()
            helper.loop()
            return nil
        }, context)
        if made == 0 {
            pthread_detach(thread)
        } else {
            log.warning("cannot start the compression thread (\(SystemError(call: "pthread_create", errno: made))); bodies stay at their first level")
            Unmanaged<CompressionHelper>.fromOpaque(context).release()
        }
    }

    /// The thread: below the loop's priority, one job at a time, for the worker's life.
    private func loop() {
        _ = cs_set_thread_niceness(10)
        var context: OpaquePointer?
        while true {
            pthread_mutex_lock(mutex)
            while queue.isEmpty { pthread_cond_wait(condition, mutex) }
            let job = queue.removeFirst()
            pthread_mutex_unlock(mutex)
            if context == nil && job.coding == .zstd { context = ZSTD_createCCtx() }
            let body = CompressionHelper.compress(job, zstdContext: context)
            // The encoders' working memory (brotli 11's is large) came from this thread's own malloc
            // arena, which keeps freed memory: give it back to the system after every body.
            _ = cs_malloc_trim()
            pthread_mutex_lock(mutex)
            finished.append(Finished(job: job, body: body))
            pthread_mutex_unlock(mutex)
            var one: UInt64 = 1
            _ = write(eventFD, &one, 8)
        }
    }

    static func compress(_ job: Job, zstdContext: OpaquePointer?) -> UnsafeMutableRawBufferPointer? {
        let source = job.source
        let size = Int(source.size)
        let input: UnsafeRawBufferPointer
        var owned: UnsafeMutableRawPointer?
        if let inline = source.body {
            input = UnsafeRawBufferPointer(inline)
        } else {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 16)
            owned = buffer
            guard readFully(source.fd, buffer, size, at: 0) else {
                buffer.deallocate()
                return nil
            }
            input = UnsafeRawBufferPointer(start: buffer, count: size)
        }
        defer { owned?.deallocate() }
        switch job.coding {
        case .br: return CompressedCache.brotli(input, quality: job.level)
        case .zstd: return zstdContext.flatMap { CompressedCache.zstd(input, level: job.level, context: $0) }
        case .gzip: return nil
        }
    }
}
