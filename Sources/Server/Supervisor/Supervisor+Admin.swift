import Foundation
import Glibc

/// What the admin listener answers: liveness, readiness and metrics, all from the supervisor's own
/// state and the figures the heartbeats bring (the same ones the manager scales the pool on).
extension Supervisor {
    func adminReply(_ path: String) -> AdminServer.Reply {
        switch path {
        case "/livez":
            let (alive, reason) = liveness()
            return AdminServer.Reply(status: alive ? 200 : 503, contentType: "text/plain; charset=utf-8", body: alive ? "ok\n" : reason + "\n")
        case "/readyz":
            let (ready, reason) = readiness()
            return AdminServer.Reply(status: ready ? 200 : 503, contentType: "text/plain; charset=utf-8", body: ready ? "ready\n" : reason + "\n")
        case "/metrics":
            return AdminServer.Reply(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metricsText())
        default:
            return AdminServer.Reply(status: 404, contentType: "text/plain; charset=utf-8", body: "/livez, /readyz or /metrics\n")
        }
    }

    /// Alive: the supervisor answers, and neither a listener nor the manager has been given up on.
    func liveness() -> (Bool, String) {
        for slot in children where slot !== acme && slot.state == .failed { return (false, "the \(slot.name) is in a crash loop") }
        return (true, "")
    }

    /// Ready: not shutting down, the listener and manager running, at least one worker, and no process
    /// crash-looping (restarts of the listener or manager pending, or workers dying
    /// `supervisor.restart_intensity` times within `restart_period`).
    func readiness() -> (Bool, String) {
        if lifecycle.isShuttingDown { return (false, "draining") }
        for slot in children where slot !== acme && slot.state != .running {
            return (false, slot.state == .failed ? "the \(slot.name) is in a crash loop" : "the \(slot.name) is not running")
        }
        if managerStats[Stats.workersTotal] == 0 { return (false, "no worker is running") }
        if workerCrashTimes.count >= config.supervisor.restartIntensity { return (false, "workers are crashing") }
        return (true, "")
    }

    /// The Prometheus text format (version 0.0.4).
    func metricsText() -> String {
        var stats = statsOfPastManagers
        stats.add(managerStats, gauges: true)
        var text = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, UInt64)]) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples { text += "\(name)\(labels) \(value)\n" }
        }
        func label(_ name: String, _ value: String) -> String {
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "{\(name)=\"\(escaped)\"}"
        }
        let accepted = listeners.reduce(UInt64(0)) { $0 + UInt64($1.lastBeat.acceptedTotal) }
        metric("webserver_connections_accepted_total", "counter", "Connections accepted by the listeners.", [("", accepted)])
        if listeners.count > 1 {
            metric("webserver_listener_connections_accepted_total", "counter", "Connections accepted, per listener process.",
                   listeners.map { (label("listener", "\($0.index)"), UInt64($0.lastBeat.acceptedTotal)) })
        }
        metric("webserver_connections_refused_total", "counter",
               "Connections a listener closed at accept because their address had limits.connections_per_ip open already.",
               [(label("reason", "per_ip"), listeners.reduce(UInt64(0)) { $0 + $1.lastBeat.closedTotal })])
        metric("webserver_connections_handled_total", "counter", "Connections taken by workers.", [("", stats[Stats.handled])])
        metric("webserver_connections_active", "gauge", "Connections open now (admitted by a listener, not yet closed).",
               [("", UInt64(max(0, admissions?.total ?? 0)))])
        metric("webserver_connections_reading", "gauge", "Connections whose request (or TLS handshake, or PROXY header) is being read.",
               [("", stats[Stats.reading])])
        metric("webserver_connections_writing", "gauge", "Connections whose response is being written.", [("", stats[Stats.writing])])
        metric("webserver_connections_waiting", "gauge", "Idle keep-alive connections.", [("", stats[Stats.waiting])])
        metric("webserver_responses_total", "counter", "Responses by status class.",
               (1...5).map { (label("code", "\($0)xx"), stats[Stats.status1xx + $0 - 1]) })
        metric("webserver_requests_total", "counter", "Requests by method.",
               [("GET", Stats.methodGet), ("HEAD", Stats.methodHead), ("OPTIONS", Stats.methodOptions), ("other", Stats.methodOther)]
                   .map { (label("method", $0.0), stats[$0.1]) })
        metric("webserver_http2_connections_total", "counter", "Connections that spoke HTTP/2 (ALPN h2, or h2c with prior knowledge).",
               [("", stats[Stats.http2Connections])])
        metric("webserver_http2_streams_total", "counter", "Requests carried by HTTP/2 streams (also counted in webserver_requests_total).",
               [("", stats[Stats.http2Streams])])
        text += "# HELP webserver_request_duration_seconds From a request's parse to its last byte handed to the kernel.\n"
        text += "# TYPE webserver_request_duration_seconds histogram\n"
        var cumulative: UInt64 = 0
        for (index, bound) in Stats.durationBounds.enumerated() {
            cumulative &+= stats[Stats.durationBuckets + index]
            text += "webserver_request_duration_seconds_bucket{le=\"\(Double(bound) / 1_000_000)\"} \(cumulative)\n"
        }
        cumulative &+= stats[Stats.durationBuckets + Stats.durationBounds.count]
        text += "webserver_request_duration_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
        text += "webserver_request_duration_seconds_sum \(Double(stats[Stats.durationMicroseconds]) / 1_000_000)\n"
        text += "webserver_request_duration_seconds_count \(cumulative)\n"
        metric("webserver_access_log_dropped_lines_total", "counter", "Access-log lines dropped because the file could not take them (a full disk).",
               [("", stats[Stats.accessLogDropped])])
        metric("webserver_sent_bytes_total", "counter", "Bytes written to client sockets (heads and bodies; TLS payload).",
               [("", stats[Stats.bytesSent])])
        let busy = stats[Stats.workersBusy]
        let total = stats[Stats.workersTotal]
        metric("webserver_workers", "gauge", "Worker processes taking connections, busy (holding any) or idle.",
               [(label("state", "busy"), busy), (label("state", "idle"), total >= busy ? total - busy : 0)])
        metric("webserver_worker_processes", "gauge", "Worker processes taking connections (busy and idle together).",
               [("", total)])
        metric("webserver_restarts_total", "counter", "Processes restarted after they crashed or stopped answering.",
               [(label("role", "listener"), UInt64(listeners.reduce(0) { $0 + $1.restartTotal })), (label("role", "manager"), UInt64(manager.restartTotal)),
                (label("role", "worker"), stats[Stats.workerRestarts]), (label("role", "acme"), UInt64(acme.restartTotal))])
        metric("webserver_start_time_seconds", "gauge", "When the server started (Unix time).", [("", UInt64(startedAt))])
        metric("webserver_reloads_total", "counter", "Reloads (SIGHUP, or certificates changed on disk), applied or refused.",
               [(label("result", "applied"), reloads.applied), (label("result", "refused"), reloads.refused)])
        if let reload = lastReload {
            metric("webserver_last_reload_success", "gauge", "1 if the last reload applied, 0 if it was refused.", [("", reload.succeeded ? 1 : 0)])
            metric("webserver_last_reload_time_seconds", "gauge", "When the last reload was tried (Unix time).", [("", UInt64(reload.at))])
        }
        if !certificateExpiries.isEmpty {
            metric("webserver_certificate_expiry_time_seconds", "gauge", "Each certificate's notAfter (Unix time).",
                   certificateExpiries.map { (label("file", $0.path), UInt64(max(0, $0.expiry))) })
        }
        acmeMetrics(metric, label)
        let (ready, _) = readiness()
        metric("webserver_ready", "gauge", "1 when /readyz answers 200.", [("", ready ? 1 : 0)])
        return text
    }

    /// Each ACME certificate's figures, from the status the ACME process keeps beside it.
    func acmeMetrics(_ metric: (String, String, String, [(String, UInt64)]) -> Void, _ label: (String, String) -> String) {
        let certificates = config.acmeCertificates
        guard !certificates.isEmpty else { return }
        let statuses = certificates.map { certificate in
            (certificate.names[0], AcmeStatus.read("\(certificate.settings.certificateDirectory(for: certificate.names[0]))/status.json") ?? AcmeStatus())
        }
        metric("webserver_acme_certificate_expiry_time_seconds", "gauge", "Each ACME certificate's notAfter (Unix time; 0: none issued yet).",
               statuses.map { (label("name", $0.0), UInt64(max(0, $0.1.notAfter ?? 0))) })
        metric("webserver_acme_next_attempt_time_seconds", "gauge", "When the ACME process next orders the certificate: its renewal, or the retry after a failure (Unix time).",
               statuses.map { (label("name", $0.0), UInt64(max(0, $0.1.nextAttempt ?? 0))) })
        metric("webserver_acme_failures", "gauge", "Orders of the certificate that failed since its last success.",
               statuses.map { (label("name", $0.0), UInt64($0.1.failures)) })
        metric("webserver_acme_orders_total", "counter", "Orders placed for the certificate.", statuses.map { (label("name", $0.0), UInt64($0.1.orders)) })
        let errors = statuses.filter { $0.1.lastError != nil }
        if !errors.isEmpty {
            metric("webserver_acme_last_error_time_seconds", "gauge", "When the certificate's last order failed (Unix time), with the CA's error.",
                   errors.map { name, status in
                       (String(label("name", name).dropLast()) + "," + String(label("error", String((status.lastError ?? "").prefix(300))).dropFirst()),
                        UInt64(max(0, status.lastErrorAt ?? 0)))
                   })
        }
    }
}
