import Glibc

/// Reload (SIGHUP, or certificates changed on disk) and log reopening (SIGUSR1).
extension Supervisor {
    /// Loads the file again with the same flags; on success new workers start with it and the old ones
    /// drain; on failure every error is logged and nothing changes.
    func reload(reason: String = "SIGHUP") {
        guard !lifecycle.isShuttingDown else { return }
        log.notice("\(reason): reloading \(configPath ?? "the command-line configuration")")
        Systemd.notify("RELOADING=1\n\(Systemd.monotonicMicroseconds)")
        defer { Systemd.notify("READY=1") }
        var newConfig: ServerConfig
        do {
            newConfig = try ConfigLoader.load(path: configPath, overrides: overrides, makeDevCertificate: true)
        } catch {
            for issue in error.issues { log.error("reload: \(issue)") }
            log.error("reload failed: still serving with the previous configuration")
            recordReload(applied: false)
            return
        }
        newConfig = sockets.usable(newConfig)
        if newConfig.allListen.map(\.address) != config.allListen.map(\.address) || newConfig.user != config.user
            || newConfig.backlog != config.backlog || newConfig.deferAcceptMilliseconds != config.deferAcceptMilliseconds
            || newConfig.adminListen != config.adminListen || newConfig.listeners != listenersAsConfigured {
            log.error("reload failed: 'listen', 'listeners', 'user', 'backlog', 'defer_accept' and 'admin' change only with a restart; still serving with the previous configuration")
            recordReload(applied: false)
            return
        }
        newConfig = sockets.listening(sockets.bound(newConfig))
        let fd: Int32
        do {
            fd = try ConfigTransport.makeDescriptor(newConfig)
        } catch {
            log.error("reload failed: \(error)")
            recordReload(applied: false)
            return
        }
        let accessChanged = newConfig.accessLog != config.accessLog
        if newConfig.notSentLowat != config.notSentLowat { sockets.setNotSentLowat(newConfig.notSentLowat) }
        config = newConfig
        restartPolicy = RestartPolicy(newConfig.supervisor)
        closeDescriptor(configFD)
        configFD = fd
        if accessChanged { reopenLogs() }
        for slot in children {
            guard let channel = slot.channel else { continue }
            _ = try? channel.send(.reload, fd: fd)
        }
        do { try AcmeFiles.prepare(newConfig) } catch { log.error("ACME: \(error)") }
        startOrStopAcme()
        certificateWatch?.watch(newConfig.watchedCertificateFiles)
        recordReload(applied: true)
        noteCertificateExpiries()
        log.notice("reloaded: new workers start with the new configuration, old ones drain")
    }

    /// The result for /metrics: the last reload's and the running counts.
    func recordReload(applied: Bool) {
        lastReload = (applied, Int64(time(nil)))
        if applied { reloads.applied += 1 } else { reloads.refused += 1 }
    }

    /// Opens the logs again and hands them down: the manager (for itself and its workers) gets both,
    /// the listener the error log.
    func reopenLogs() {
        let (fds, access, error) = logs.reopen(config)
        if let channel = manager.channel, access || error {
            _ = try? fds.withUnsafeBufferPointer { try channel.send(.reopenLogs(accessLog: access, errorLog: error), fds: $0) }
        }
        for slot in listeners + [acme] {
            if let channel = slot.channel, error, let errorFD = fds.last {
                _ = try? channel.send(.reopenLogs(accessLog: false, errorLog: true), fd: errorFD)
            }
        }
        if error, let last = fds.last { closeDescriptor(last) }
        log.notice("logs reopened")
    }
}
