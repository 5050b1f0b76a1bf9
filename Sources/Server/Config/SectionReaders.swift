import Yams

/// One reader per section of plain values: each takes its section, reads every key it knows, checks
/// the values that only make sense together, and reports the rest as unknown.
extension DocumentReader {
    func workers(_ section: Section, _ current: ServerConfig.Workers) -> ServerConfig.Workers {
        var workers = current
        if let value = section.integer("min", in: 1...1024) { workers.min = value }
        if let node = section.peek("max"), node.scalar?.string == "auto" {
            _ = section.take("max")
            workers.max = ServerConfig.processorCount
        } else if let value = section.integer("max", in: 1...1024) {
            workers.max = value
        }
        if workers.min > workers.max {
            issue(section.anchor, key: "workers", "min (\(workers.min)) is above max (\(workers.max))")
        }
        if let value = section.integer("connections_per_worker", in: 1...1_000_000) { workers.connectionsPerWorker = value }
        if let value = section.duration("idle_timeout") { workers.idleMilliseconds = value }
        if let value = section.integer("recycle_after", in: 0...Int(Int32.max)) { workers.recycleAfter = value }
        section.finish()
        return workers
    }

    func keepalive(_ section: Section, _ current: ServerConfig.Keepalive) -> ServerConfig.Keepalive {
        var keepalive = current
        if let value = section.duration("timeout") { keepalive.timeoutMilliseconds = value }
        if let value = section.integer("requests", in: 1...10_000_000) { keepalive.requests = value }
        section.finish()
        return keepalive
    }

    func timeouts(_ section: Section, _ current: ServerConfig.Timeouts) -> ServerConfig.Timeouts {
        var timeouts = current
        section.durations(
            [
                "header": \.headerMilliseconds, "body": \.bodyMilliseconds, "send": \.sendMilliseconds,
                "shutdown": \.shutdownMilliseconds, "upgrade": \.upgradeMilliseconds,
            ],
            into: &timeouts)
        if let value = section.duration("shutdown_delay", allowZero: true) { timeouts.shutdownDelayMilliseconds = value }
        section.finish()
        return timeouts
    }

    func limits(_ section: Section, _ current: ServerConfig.Limits) -> ServerConfig.Limits {
        var limits = current
        if let value = section.size("request_line", in: 64...1_048_576) { limits.requestLine = value }
        if let value = section.size("header_bytes", in: 256...1_048_576) { limits.headerBytes = value }
        if let value = section.integer("header_count", in: 1...10_000) { limits.headerCount = value }
        if let value = section.size("header_field", in: 64...1_048_576) { limits.headerField = value }
        if let value = section.size("body", in: 0...(1 << 30)) { limits.bodyBytes = value }
        if let value = section.integer("ranges", in: 1...1000) { limits.ranges = value }
        if let value = section.integer("connections_per_ip", in: 0...10_000_000) { limits.connectionsPerIP = value }
        if limits.requestLine > limits.headerBytes {
            issue(section.anchor, key: "limits", "request_line (\(limits.requestLine)) is above header_bytes (\(limits.headerBytes))")
        }
        section.finish()
        return limits
    }

    /// `http2: false`, or a section of its settings.
    func http2(_ section: Section, _ current: ServerConfig.HTTP2Settings) -> ServerConfig.HTTP2Settings {
        var http2 = current
        if let value = section.boolean("enabled") { http2.enabled = value }
        if let value = section.boolean("cleartext") { http2.cleartext = value }
        if let value = section.integer("max_concurrent_streams", in: 1...10_000) { http2.maxConcurrentStreams = value }
        if let value = section.size("initial_window_size", in: 1...2_147_483_647) { http2.initialWindowSize = value }
        if let value = section.integer("max_continuations", in: 0...1000) { http2.maxContinuations = value }
        if let value = section.integer("reset_burst", in: 1...1_000_000) { http2.resetBurst = value }
        if let value = section.integer("resets_per_second", in: 1...1_000_000) { http2.resetsPerSecond = value }
        if let value = section.integer("max_queued_acks", in: 1...1_000_000) { http2.maxQueuedAcks = value }
        if let value = section.integer("max_empty_data_frames", in: 0...1_000_000) { http2.maxEmptyDataFrames = value }
        section.finish()
        return http2
    }

    func fileCache(_ section: Section, _ current: ServerConfig.FileCacheSettings) -> ServerConfig.FileCacheSettings {
        var cache = current
        if let value = section.integer("entries", in: 0...1_000_000) { cache.entries = value }
        if let value = section.duration("valid") { cache.validMilliseconds = value }
        if let value = section.size("inline_max", in: 0...16_777_216) { cache.inlineMax = value }
        section.finish()
        return cache
    }

    /// `admin.listen`: an address, or `off`.
    func adminListen(_ section: Section, _ current: String?) -> String? {
        var listen = current
        if let (value, node) = section.string("listen") {
            if value == "off" { listen = nil } else if SocketAddress(parsing: value) != nil { listen = value } else {
                issue(node, key: "admin.listen", "'\(value)' is not ADDRESS:PORT (IPv4, [IPv6], or *:PORT; port 0-65535), or off")
            }
        }
        section.finish()
        return listen
    }

    func proxy(_ section: Section, _ current: ServerConfig.ProxySettings) -> ServerConfig.ProxySettings {
        var proxy = current
        if let node = section.take("trusted") {
            let items: [Node]
            if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
            var values: [String] = []
            for item in items {
                let text = item.scalar?.string ?? ""
                if Networks([text]) != nil { values.append(text) } else {
                    issue(item, key: "proxy.trusted", "'\(text)' is not a network such as 10.0.0.0/8, 192.0.2.7 or fd00::/8")
                }
            }
            proxy.trusted = values
        }
        if let value = section.duration("header_timeout") { proxy.headerTimeoutMilliseconds = value }
        if let value = section.choice("forwarded_header", ForwardedHeader.self) { proxy.forwardedHeader = value }
        section.finish()
        return proxy
    }

    func supervision(_ section: Section, _ current: ServerConfig.Supervision) -> ServerConfig.Supervision {
        var supervision = current
        section.durations(
            [
                "heartbeat_interval": \.heartbeatIntervalMilliseconds, "heartbeat_timeout": \.heartbeatTimeoutMilliseconds,
                "kill_grace": \.killGraceMilliseconds, "restart_delay": \.restartDelayMilliseconds,
                "restart_delay_max": \.restartDelayMaxMilliseconds, "restart_period": \.restartPeriodMilliseconds,
            ], into: &supervision)
        if let value = section.integer("restart_intensity", in: 1...1000) { supervision.restartIntensity = value }
        if supervision.heartbeatIntervalMilliseconds < 10 {
            issue(section.anchor, key: "supervisor.heartbeat_interval", "must be at least 10ms")
        }
        if supervision.heartbeatTimeoutMilliseconds <= supervision.heartbeatIntervalMilliseconds {
            issue(section.anchor, key: "supervisor.heartbeat_timeout",
                  "(\(supervision.heartbeatTimeoutMilliseconds)ms) must be longer than heartbeat_interval (\(supervision.heartbeatIntervalMilliseconds)ms)")
        }
        if supervision.restartDelayMaxMilliseconds < supervision.restartDelayMilliseconds {
            issue(section.anchor, key: "supervisor.restart_delay_max", "is below restart_delay")
        }
        section.finish()
        return supervision
    }
}
