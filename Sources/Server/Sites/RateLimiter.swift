/// `rate_limit` in one worker: a token bucket per client address (the port ignored), refilled at
/// `requests_per_second` up to `burst`; a request that finds the bucket empty is refused with how many
/// seconds until it would not be (429 with Retry-After).
///
/// Each worker counts on its own (no shared memory between processes), so with N workers a client whose
/// connections land on several of them may make up to N times the rate; the manager gives a new
/// connection to the least-loaded worker, so a client's keep-alive connection stays on one. Bounded at
/// 65,536 addresses: past that, full buckets (idle clients) are forgotten first.
struct RateLimiter {
    typealias Key = AddressKey
    struct Bucket {
        /// Thousandths of a request.
        var tokens: Int64
        var updated: Int64
    }

    let perSecond: Int64
    let burst: Int64
    private var buckets: [Key: Bucket] = [:]
    static let capacity = 65_536

    init(_ limit: RateLimit) {
        perSecond = Int64(limit.perSecond)
        burst = Int64(limit.burst)
    }

    var count: Int { buckets.count }

    /// Takes one request from `client`'s bucket at `now` (milliseconds): nil when admitted, else the
    /// seconds to wait.
    mutating func admit(_ client: SocketAddress, now: Int64) -> Int? {
        let key = Key(family: client.family, high: client.bytes.0, low: client.bytes.1)
        let full = burst * 1000
        var bucket = buckets[key] ?? Bucket(tokens: full, updated: now)
        bucket.tokens = min(full, bucket.tokens + max(0, now - bucket.updated) * perSecond)
        bucket.updated = now
        if bucket.tokens >= 1000 {
            bucket.tokens -= 1000
            store(bucket, key, now: now)
            return nil
        }
        store(bucket, key, now: now)
        // Whole seconds until a request's worth has come back, at least 1.
        let missing = 1000 - bucket.tokens
        return Int(max(1, (missing + perSecond * 1000 - 1) / (perSecond * 1000)))
    }

    private mutating func store(_ bucket: Bucket, _ key: Key, now: Int64) {
        if buckets.count >= RateLimiter.capacity && buckets[key] == nil {
            let refill = (burst * 1000 + perSecond - 1) / perSecond
            buckets = buckets.filter { now - $0.value.updated < refill }
            if buckets.count >= RateLimiter.capacity { buckets.removeAll(keepingCapacity: true) }
        }
        buckets[key] = bucket
    }
}
