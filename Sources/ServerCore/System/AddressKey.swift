/// A client's address without its port, as a dictionary key: what the listener counts
/// `limits.connections_per_ip` by and a worker's rate limiter keeps its buckets by.
package struct AddressKey: Hashable {
    package var family: UInt8
    package var high: UInt64
    package var low: UInt64

    package init(family: UInt8, high: UInt64, low: UInt64) {
        self.family = family
        self.high = high
        self.low = low
    }
}
