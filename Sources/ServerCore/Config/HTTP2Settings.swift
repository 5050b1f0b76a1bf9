extension ServerConfig {
    /// HTTP/2 (RFC 9113) through libnghttp2: offered by ALPN on TLS sockets, and with prior knowledge on
    /// plain sockets when `cleartext` is on; and the limits that keep one client from costing the others
    /// their service. Request headers are held to `limits` as over HTTP/1.1 (decoded bytes and fields,
    /// each cookie crumb a field), and `keepalive.requests` bounds the streams of one connection.
    public struct HTTP2Settings: Codable, Sendable, Equatable {
        /// ALPN offers h2 before http/1.1 on TLS sockets.
        public var enabled = true
        /// h2c with prior knowledge on plain sockets (a connection that starts with the HTTP/2
        /// preface), for proxies that speak it; no `Upgrade: h2c`.
        public var cleartext = false
        /// SETTINGS_MAX_CONCURRENT_STREAMS: streams one client may have open at once.
        public var maxConcurrentStreams = 100
        /// SETTINGS_INITIAL_WINDOW_SIZE for request bodies (which the server reads only to skip).
        public var initialWindowSize = 65_535
        /// CONTINUATION frames after one HEADERS frame (a flood of them is CVE-2024-27316's attack).
        public var maxContinuations = 8
        /// RST_STREAM frames a client may send: a burst, then so many a second (rapid reset,
        /// CVE-2023-44487); past it the connection gets GOAWAY(ENHANCE_YOUR_CALM).
        public var resetBurst = 1000
        public var resetsPerSecond = 33
        /// SETTINGS and PING frames whose acknowledgements wait unsent (a client that floods them
        /// and does not read): past it the connection closes.
        public var maxQueuedAcks = 1000
        /// DATA frames with no payload and no END_STREAM in one connection (they cost work and carry
        /// nothing): past it, GOAWAY(ENHANCE_YOUR_CALM).
        public var maxEmptyDataFrames = 100
    }
}
