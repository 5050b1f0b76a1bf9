/// The figures behind /metrics: each worker counts its own and reports them with every heartbeat, the
/// manager adds up its pool (keeping what exited workers had counted) and reports the sum with its
/// heartbeat, and the supervisor serves the last sum. Fixed slots of UInt64, so they travel in one
/// message and a worker counts with one add per event.
public struct Stats: Equatable, Sendable {
    // Counters (never go down; the manager keeps exited workers' last values).
    public static let status1xx = 0  // ... status5xx = 4, by the status's first digit
    public static let methodGet = 5
    public static let methodHead = 6
    public static let methodOptions = 7
    public static let methodOther = 8
    public static let bytesSent = 9
    public static let durationMicroseconds = 10
    public static let handled = 11
    public static let workerRestarts = 12
    /// Access-log lines that could not be written (a full disk, a file-size limit) and were dropped.
    public static let accessLogDropped = 13
    /// Connections that spoke HTTP/2, and the streams (requests) they carried.
    public static let http2Connections = 14
    public static let http2Streams = 15
    /// Requests by duration: one slot per upper bound in `durationBounds`, then one for +Inf.
    public static let durationBuckets = 16
    /// Upper bounds of the duration histogram, in microseconds.
    public static let durationBounds: [UInt64] = [500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000]
    // Gauges (now, summed over live workers only).
    public static let reading = durationBuckets + durationBounds.count + 1
    public static let writing = reading + 1
    public static let waiting = reading + 2
    public static let workersTotal = reading + 3
    public static let workersBusy = reading + 4
    public static let count = reading + 5
    package static let firstGauge = reading

    public var values: [UInt64]

    public init() { values = [UInt64](repeating: 0, count: Stats.count) }

    public init(values: [UInt64]) {
        precondition(values.count == Stats.count)
        self.values = values
    }

    public subscript(_ index: Int) -> UInt64 {
        get { values[index] }
        set { values[index] = newValue }
    }

    /// Adds `other`'s counters (and, with `gauges`, its gauges) to these.
    public mutating func add(_ other: Stats, gauges: Bool) {
        for index in 0..<(gauges ? Stats.count : Stats.firstGauge) { values[index] &+= other.values[index] }
    }

    /// Counts a request's method.
    @inlinable @inline(__always)
    package static func count(_ method: HTTPMethod, in stats: UnsafeMutablePointer<UInt64>) {
        switch method {
        case .get: stats[methodGet] &+= 1
        case .head: stats[methodHead] &+= 1
        case .options: stats[methodOptions] &+= 1
        default: stats[methodOther] &+= 1
        }
    }

    /// Counts a response by its status class.
    @inlinable @inline(__always)
    package static func count(_ status: HTTPStatus, in stats: UnsafeMutablePointer<UInt64>) {
        stats[status1xx + Int(min(max(status.rawValue / 100, 1), 5)) - 1] &+= 1
    }

    /// Counts a finished response in the duration histogram, from `startedAt` (monotonic microseconds).
    @inlinable @inline(__always)
    package static func recordDuration(since startedAt: UInt64, in stats: UnsafeMutablePointer<UInt64>) {
        let elapsed = monotonicMicroseconds() &- startedAt
        stats[durationMicroseconds] &+= elapsed
        stats[bucket(elapsed)] &+= 1
    }

    /// The slot for a request that took `microseconds`.
    @inlinable @inline(__always)
    package static func bucket(_ microseconds: UInt64) -> Int {
        var index = 0
        while index < durationBounds.count && microseconds > durationBounds[index] { index += 1 }
        return durationBuckets + index
    }
}
