import ArgumentParser
import Foundation
import Glibc
import Server

struct WebServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webserver",
        abstract: "A multi-process HTTPS server for static sites: HTTP/1.1, HTTP/2 and TLS.",
        discussion: """
            Without a subcommand, runs `serve`. Without --config, reads config/webserver.yaml when it exists \
            in the working directory, else /etc/webserver/webserver.yaml (the package's) when that exists.

            Signals to the running server: SIGTERM or SIGINT stop it gracefully, SIGHUP reloads the \
            configuration, SIGUSR1 reopens the log files.
            """,
        version: Libraries.versionLine,
        subcommands: [Serve.self, Check.self, Status.self, Stop.self, Reload.self, Upgrade.self, ReopenLogs.self, Cert.self],
        defaultSubcommand: Serve.self
    )
}

/// The options that locate and adjust a configuration, shared by every subcommand.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Configuration file (default: config/webserver.yaml when it exists, else /etc/webserver/webserver.yaml when it exists).", valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Pid file of the server (default: the config's pid_file, else /run/webserver.pid for root, else $XDG_RUNTIME_DIR or /tmp/webserver-UID.pid).", valueName: "path"))
    var pidFile: String?

    /// The config file to read: the flag's, else the checkout's when run from one, else the installed
    /// package's (so `webserver reload` finds the service's pid file from any directory).
    var resolvedPath: String? {
        if let config { return config }
        return ConfigOptions.defaultPaths.first { FileManager.default.fileExists(atPath: $0) }
    }

    static let defaultPaths = ["config/webserver.yaml", "/etc/webserver/webserver.yaml"]
}

/// Prints every configuration issue to standard error.
func report(_ errors: ConfigErrors) {
    for issue in errors.issues { FileHandle.standardError.write(Data("webserver: \(issue)\n".utf8)) }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve files (the default subcommand).",
        discussion: "A flag replaces what the configuration file says for its key; --listen replaces all of the file's listen addresses.")

    @OptionGroup var options: ConfigOptions

    @Option(help: ArgumentHelp("Directory to serve.", valueName: "dir"))
    var root: String?

    @Option(help: ArgumentHelp("Address to listen on: 127.0.0.1:8080, [::1]:8080, *:8080, or none. Repeatable. With --root and no --config, no configuration file is read.", valueName: "addr:port"))
    var listen: [String] = []

    @Option(help: ArgumentHelp("Address to listen on with TLS (HTTPS). Repeatable; needs --cert and --key.", valueName: "addr:port"))
    var tlsListen: [String] = []

    @Flag(help: "Connections on the --listen and --tls-listen sockets start with a PROXY protocol header (v1 or v2).")
    var proxyProtocol = false

    @Option(help: ArgumentHelp("A network whose PROXY headers and X-Forwarded-For are believed. Repeatable.", valueName: "cidr"))
    var trustedProxy: [String] = []

    @Option(help: ArgumentHelp("Admin listener for /livez, /readyz and /metrics (loopback is wise), or 'off'.", valueName: "addr:port"))
    var adminListen: String?

    @Option(help: ArgumentHelp("Certificate chain for TLS (PEM, leaf first).", valueName: "file"))
    var cert: String?

    @Option(help: ArgumentHelp("Private key for TLS (PEM, unencrypted).", valueName: "file"))
    var key: String?

    @Option(help: ArgumentHelp("Worker processes: a count, or MIN:MAX for a pool that scales with load.", valueName: "n|min:max"))
    var workers: String?

    @Option(help: ArgumentHelp("Access log file, or 'off'.", valueName: "path|off"))
    var accessLog: String?

    @Option(help: ArgumentHelp("Error log file, or 'stderr'.", valueName: "path|stderr"))
    var errorLog: String?

    @Option(help: ArgumentHelp("Lowest level logged: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    var logLevel: String?

    @Flag(help: "Detach from the terminal and run in the background once started.")
    var daemon = false

    func run() throws {
        var overrides = ConfigOverrides()
        overrides.root = root
        overrides.listen = listen
        overrides.tlsListen = tlsListen
        overrides.proxyProtocol = proxyProtocol
        overrides.trustedProxies = trustedProxy
        overrides.adminListen = adminListen
        overrides.cert = cert
        overrides.key = key
        overrides.workers = workers
        overrides.pidFile = options.pidFile
        overrides.accessLog = accessLog
        overrides.errorLog = errorLog
        overrides.logLevel = logLevel
        // Quick flags serve exactly what they say: --root with --listen or --tls-listen and no --config
        // reads no file (config/webserver.yaml in the working directory would add its own sockets).
        let quick = options.config == nil && root != nil && (!listen.isEmpty || !tlsListen.isEmpty)
        let path = quick ? nil : options.resolvedPath
        let config: ServerConfig
        do {
            config = try ConfigLoader.load(path: path, overrides: overrides, makeDevCertificate: true)
        } catch {
            report(error)
            throw ExitCode(78)
        }
        if daemon {
            if config.errorLog == nil {
                // The detached server's standard error is /dev/null: its log would be lost.
                FileHandle.standardError.write(Data(
                    "webserver: warning: --daemon with the error log on standard error: once detached, its lines go nowhere; set error_log in the config or pass --error-log FILE\n".utf8))
            }
            throw ExitCode(Daemon.start(arguments: Array(CommandLine.arguments.dropFirst())))
        }
        var readyFD: Int32 = -1
        if let text = ProcessInfo.processInfo.environment["WEBSERVER_READY_FD"], let fd = Int32(text) {
            readyFD = fd
            unsetenv("WEBSERVER_READY_FD")
        }
        ErrorLogHandler.bootstrap(role: "supervisor", level: config.logLevel.rawValue)
        let supervisor = try Supervisor(config: config, configPath: path, overrides: overrides, readyFD: readyFD)
        let status = supervisor.run()
        if status != 0 { throw ExitCode(status) }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a configuration and exit: 0 when valid, 1 with every error found.")

    @OptionGroup var options: ConfigOptions

    @Option(name: .customLong("host"), help: "Say which site a request for this name reaches (repeatable).")
    var hosts: [String] = []

    func run() throws {
        guard let path = options.resolvedPath else {
            FileHandle.standardError.write(Data("webserver: no configuration file: pass --config FILE\n".utf8))
            throw ExitCode(1)
        }
        do {
            let config = try ConfigLoader.load(path: path)
            print("webserver: the configuration file \(path) is valid")
            if !config.sites.isEmpty {
                let names = config.sites.map { $0.names.joined(separator: " ") }
                print("sites: \(config.sites.count) besides the default (\(config.hasDefaultSite ? "top-level root \(config.root)" : "none: unmatched_host \(config.unmatchedHost.rawValue)")): \(names.prefix(5).joined(separator: "; "))\(names.count > 5 ? "; ..." : "")")
            }
            let acme = config.acmeCertificates
            if !acme.isEmpty {
                let issued = acme.filter(\.issued).count
                print("acme: \(acme.count) certificate\(acme.count == 1 ? "" : "s") from \(Set(acme.map(\.settings.directory)).sorted().joined(separator: ", ")): \(issued) in the state directory, \(acme.count - issued) to order when the server starts (nothing is fetched by check)")
            }
            for host in hosts { print(config.explain(host: host)) }
        } catch {
            report(error)
            FileHandle.standardError.write(Data("webserver: the configuration file \(path) has \(error.issues.count) error\(error.issues.count == 1 ? "" : "s")\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// Finds the running server through its pid file and signals it.
enum Control {
    static func pid(_ options: ConfigOptions) throws -> Int32 {
        let path: String
        if let pidFile = options.pidFile {
            path = pidFile
        } else {
            var config = ServerConfig()
            if let file = options.resolvedPath {
                do {
                    config = try ConfigLoader.load(path: file)
                } catch {
                    report(error)
                    throw ExitCode(1)
                }
            }
            path = Supervisor.pidFilePath(for: config)
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            FileHandle.standardError.write(Data("webserver: no server is running (no pid file \(path))\n".utf8))
            throw ExitCode(1)
        }
        defer { close(fd) }
        // The running server holds an exclusive lock on its pid file: if we can take it, nobody is running.
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            FileHandle.standardError.write(Data("webserver: no server is running (stale pid file \(path))\n".utf8))
            throw ExitCode(1)
        }
        guard let pid = PidFile.pid(in: fd) else {
            FileHandle.standardError.write(Data("webserver: pid file \(path) does not hold a pid\n".utf8))
            throw ExitCode(1)
        }
        return pid
    }

    static func signal(_ options: ConfigOptions, _ number: Int32, _ what: String) throws -> Int32 {
        let pid = try pid(options)
        guard kill(pid, number) == 0 else {
            FileHandle.standardError.write(Data("webserver: cannot signal pid \(pid): \(String(cString: strerror(errno)))\n".utf8))
            throw ExitCode(1)
        }
        print("webserver: \(what) (pid \(pid))")
        return pid
    }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop the running server gracefully (SIGTERM) and wait until it has exited.")

    @OptionGroup var options: ConfigOptions

    @Option(help: ArgumentHelp("Seconds to wait for the server to exit.", valueName: "seconds"))
    var wait: Int = 60

    func run() throws {
        let pid = try Control.signal(options, SIGTERM, "stopping")
        let deadline = Date().addingTimeInterval(TimeInterval(wait))
        while kill(pid, 0) == 0 {
            if Date() > deadline {
                FileHandle.standardError.write(Data("webserver: pid \(pid) is still running after \(wait)s\n".utf8))
                throw ExitCode(1)
            }
            usleep(50_000)
        }
        print("webserver: stopped")
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reload the running server's configuration (SIGHUP); a bad configuration leaves the old one serving.")

    @OptionGroup var options: ConfigOptions

    func run() throws { _ = try Control.signal(options, SIGHUP, "reloading") }
}

struct Upgrade: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replace the running server with the binary now on disk (SIGUSR2) without dropping a connection; a new server that fails to start leaves the old one serving.")

    @OptionGroup var options: ConfigOptions

    @Option(help: ArgumentHelp("Seconds to wait for the new server to take over.", valueName: "seconds"))
    var wait: Int = 30

    func run() throws {
        let old = try Control.signal(options, SIGUSR2, "upgrading")
        let deadline = Date().addingTimeInterval(TimeInterval(wait))
        while Date() < deadline {
            if let new = try? Control.pid(options), new != old {
                print("webserver: pid \(new) is serving; pid \(old) is draining")
                return
            }
            if kill(old, 0) != 0 { break }
            usleep(50_000)
        }
        FileHandle.standardError.write(Data("webserver: the upgrade did not take over within \(wait)s; pid \(old) still serves (see the error log)\n".utf8))
        throw ExitCode(1)
    }
}

struct ReopenLogs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reopen-logs", abstract: "Make the running server reopen its log files (SIGUSR1), after rotating them.")

    @OptionGroup var options: ConfigOptions

    func run() throws { _ = try Control.signal(options, SIGUSR1, "reopening logs") }
}

struct Cert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Certificates.",
        subcommands: [Dev.self])

    struct Dev: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a local development CA (once) and a certificate it signs for localhost, 127.0.0.1, ::1 and NAMEs.",
            discussion: """
                The CA can only sign local and private names (name constraints: localhost and names under .localhost, .test, \
                .local, .internal and .home.arpa; 127.0.0.0/8, ::1, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7), \
                so trusting it cannot let anyone impersonate a public site. Files: DIR/dev-ca.pem, DIR/dev-ca-key.pem, \
                DIR/dev.pem, DIR/dev-key.pem; keys are written 0600. --install adds the CA to the system's trust store \
                (as root) and to the NSS databases Chromium and Firefox read (certutil, from libnss3-tools), each CA \
                under its own name (its fingerprint), and keeps the certificate that is there.
                """)

        @Argument(help: "More names for the certificate: app.localhost, site.test, laptop.local, 127.0.0.2, 192.168.1.5 (a LAN address, for a phone).")
        var names: [String] = []

        @Option(help: ArgumentHelp("Directory for the files.", valueName: "dir"))
        var dir: String = "certs"

        @Flag(help: "Trust the CA: the system's store (update-ca-certificates; needs root) and the browsers' NSS databases.")
        var install = false

        @Flag(help: "Take the CA out of the trust stores --install put it in.")
        var uninstall = false

        @Option(help: ArgumentHelp("The stores --install and --uninstall change: system, nss, or both (comma-separated).", valueName: "list"))
        var trustStore: String = "system,nss"

        @Option(help: ArgumentHelp(
            "Run as root: give the certificate and its key to this user, the one the server runs as (default: nobody, the server's user when the config sets none).",
            valueName: "user"))
        var user: String?

        func validate() throws {
            if install && uninstall { throw ValidationError("--install and --uninstall together: choose one") }
            if uninstall && !names.isEmpty { throw ValidationError("--uninstall takes no names") }
            if TrustStores.parse(trustStore) == nil { throw ValidationError("--trust-store: '\(trustStore)' is not a list of system and nss") }
        }

        func run() throws {
            let directory = URL(fileURLWithPath: dir, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL.path
            let stores = TrustStores.parse(trustStore) ?? []
            if uninstall {
                guard let ca = DevCertificates.authority(besideCertificate: directory + "/dev.pem") else {
                    print("No development CA in \(dir) (\(directory)/dev-ca.pem); nothing to uninstall.")
                    return
                }
                if !TrustStores(stores: stores, ca: ca).uninstall() { throw ExitCode(1) }
                return
            }
            let result: DevCertificates.Result
            do {
                // --install alone trusts the CA and keeps the certificate already made (a running server
                // keeps presenting it); names ask for a new one.
                result = try DevCertificates.make(
                    certificate: directory + "/dev.pem", key: directory + "/dev-key.pem", names: names, reissue: !(install && names.isEmpty))
                let owner = user ?? ServerConfig.defaultUser
                if getuid() == 0 && owner != "root" && !result.kept {
                    guard getpwnam(owner) != nil else {
                        FileHandle.standardError.write(Data("webserver: no user '\(owner)' to give the certificate to (--user)\n".utf8))
                        throw ExitCode(1)
                    }
                    DevCertificates.give([result.certificate, result.key], to: owner)
                }
            } catch let error as DevCertificates.Failure {
                FileHandle.standardError.write(Data("webserver: \(error.description)\n".utf8))
                throw ExitCode(1)
            }
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withFullDate]
            func date(_ seconds: Int64) -> String { formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds))) }
            let ca = DevCertificates.Authority(certificate: result.caCertificate, fingerprint: result.caFingerprint)
            print("""
                Development CA: \(result.caCertificate) (\(result.caCreated ? "created" : "already there, reused"))
                  SHA-256 fingerprint: \(result.caFingerprint)
                  expires: \(date(result.caExpiry))
                """)
            if result.kept {
                print("Certificate: \(result.certificate) (already there, kept; expires \(date(result.expiry)))")
            } else {
                print("""
                    Certificate for \(result.names.joined(separator: ", ")): \(result.certificate)
                      key: \(result.key) (mode 0600)
                      SHA-256 fingerprint: \(result.fingerprint)
                      expires: \(date(result.expiry))
                    """)
            }
            if install {
                print("")
                if !TrustStores(stores: stores, ca: ca).install(directoryFlag: dir) { throw ExitCode(1) }
                return
            }
            print("""

                Make clients trust the CA:
                  curl --cacert \(result.caCertificate) https://localhost:8443/
                  NODE_EXTRA_CA_CERTS=\(result.caCertificate) node app.js
                  REQUESTS_CA_BUNDLE=\(result.caCertificate) python3 app.py
                  SSL_CERT_FILE=\(result.caCertificate) (OpenSSL-based tools, Ruby, Go on Linux)
                  this machine's store and its browsers (Chromium, Firefox): webserver cert dev --install --dir \(dir)
                """)
        }
    }
}
