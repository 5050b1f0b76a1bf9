import Foundation
import Glibc
import Server

/// Where `cert dev --install` puts the development CA and `--uninstall` takes it out: the system's
/// store (update-ca-certificates; curl, wget, Python, Go and OpenSSL's tools read it) and the NSS
/// databases Chromium and Firefox read on Linux (certutil, from libnss3-tools), as mkcert and Caddy do.
/// Each CA has its own name everywhere (`webserver-dev-ca-` and its fingerprint's first 16 hex digits),
/// so a second project's CA sits beside the first instead of replacing it.
struct TrustStores {
    enum Store: String, CaseIterable {
        case system, nss
    }

    let stores: Set<Store>
    let ca: DevCertificates.Authority

    var tag: String { "webserver-dev-ca-" + ca.shortFingerprint }
    var systemFile: String { "/usr/local/share/ca-certificates/\(tag).crt" }
    /// The file every CA shared before each had its own: taken out at --uninstall when it holds this CA.
    static let legacySystemFile = "/usr/local/share/ca-certificates/webserver-dev-ca.crt"
    var nickname: String { "WebServer development CA \(ca.shortFingerprint)" }

    static func parse(_ text: String) -> Set<Store>? {
        var stores = Set<Store>()
        for part in text.split(separator: ",") {
            guard let store = Store(rawValue: part.trimmingCharacters(in: .whitespaces).lowercased()) else { return nil }
            stores.insert(store)
        }
        return stores.isEmpty ? nil : stores
    }

    // MARK: install

    /// Adds the CA to every chosen store; returns false when a store that could be changed failed.
    func install(directoryFlag: String) -> Bool {
        var ok = true
        if stores.contains(.system) {
            if getuid() != 0 {
                print("System trust store (curl, Python, Go, OpenSSL): not changed, it needs root: sudo webserver cert dev --install --dir \(directoryFlag)")
            } else if FileManager.default.contentsEqual(atPath: systemFile, andPath: ca.certificate) {
                print("System trust store (curl, Python, Go, OpenSSL): already has it (\(systemFile))")
            } else {
                do {
                    try FileManager.default.createDirectory(atPath: "/usr/local/share/ca-certificates", withIntermediateDirectories: true)
                    try? FileManager.default.removeItem(atPath: systemFile)
                    try FileManager.default.copyItem(atPath: ca.certificate, toPath: systemFile)
                    _ = chmod(systemFile, 0o644)
                    if TrustStores.updateSystemStore(fresh: false) {
                        print("System trust store (curl, Python, Go, OpenSSL): added \(systemFile)")
                    } else {
                        ok = false
                    }
                } catch {
                    FileHandle.standardError.write(Data("webserver: cannot write \(systemFile): \(error.localizedDescription)\n".utf8))
                    ok = false
                }
            }
        }
        if stores.contains(.nss) {
            guard let certutil = TrustStores.certutil else {
                print("NSS (Chromium, Firefox): not changed, certutil is missing: apt install libnss3-tools, then run this again")
                return ok
            }
            let user = BrowserUser.current()
            var added: [String] = []
            var already: [String] = []
            for database in nssDatabases(of: user, create: true, certutil: certutil) {
                if has(database, user: user, certutil: certutil) {
                    already.append(database)
                } else if run(certutil, ["-A", "-d", "sql:" + database, "-t", "C,,", "-n", nickname, "-i", ca.certificate], as: user) {
                    added.append(database)
                } else {
                    FileHandle.standardError.write(Data("webserver: certutil could not add the CA to \(database)\n".utf8))
                    ok = false
                }
            }
            if !added.isEmpty { print("NSS (Chromium, Firefox): added to \(added.joined(separator: ", ")) (restart the browser)") }
            if !already.isEmpty { print("NSS (Chromium, Firefox): already in \(already.joined(separator: ", "))") }
        }
        return ok
    }

    // MARK: uninstall

    /// Takes the CA out of every chosen store that has it; one line when none does.
    func uninstall() -> Bool {
        var removed: [String] = []
        var ok = true
        if stores.contains(.system) {
            var files: [String] = []
            if FileManager.default.fileExists(atPath: systemFile) { files.append(systemFile) }
            if FileManager.default.contentsEqual(atPath: TrustStores.legacySystemFile, andPath: ca.certificate) {
                files.append(TrustStores.legacySystemFile)
            }
            if !files.isEmpty {
                if getuid() != 0 {
                    print("System trust store: has it (\(files.joined(separator: ", "))); taking it out needs root: sudo webserver cert dev --uninstall")
                    ok = false
                } else {
                    for file in files { try? FileManager.default.removeItem(atPath: file) }
                    if TrustStores.updateSystemStore(fresh: true) {
                        removed.append("the system trust store (\(files.joined(separator: ", ")))")
                    } else {
                        ok = false
                    }
                }
            }
        }
        if stores.contains(.nss), let certutil = TrustStores.certutil {
            let user = BrowserUser.current()
            for database in nssDatabases(of: user, create: false, certutil: certutil) where has(database, user: user, certutil: certutil) {
                if run(certutil, ["-D", "-d", "sql:" + database, "-n", nickname], as: user) {
                    removed.append(database)
                } else {
                    FileHandle.standardError.write(Data("webserver: certutil could not remove the CA from \(database)\n".utf8))
                    ok = false
                }
            }
        }
        if removed.isEmpty && ok {
            print("The development CA \(ca.certificate) (\(tag)) is not installed in any trust store; nothing to remove.")
        } else if !removed.isEmpty {
            print("Removed the development CA \(ca.certificate) from \(removed.joined(separator: ", ")).")
        }
        return ok
    }

    // MARK: NSS databases

    static var certutil: String? {
        ["/usr/bin/certutil", "/usr/local/bin/certutil"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Chromium's database (made when missing and `create` is set: Chromium makes the same one at its
    /// first start, and would otherwise miss the CA), the snap Chromium's, and every Firefox profile's.
    func nssDatabases(of user: BrowserUser, create: Bool, certutil: String) -> [String] {
        let home = user.home
        var databases: [String] = []
        let chromium = home + "/.pki/nssdb"
        if !FileManager.default.fileExists(atPath: chromium + "/cert9.db") && create {
            if run("/bin/mkdir", ["-p", "-m", "0700", chromium], as: user) {
                _ = run(certutil, ["-N", "--empty-password", "-d", "sql:" + chromium], as: user)
            }
        }
        if FileManager.default.fileExists(atPath: chromium + "/cert9.db") { databases.append(chromium) }
        let snapChromium = home + "/snap/chromium/current/.pki/nssdb"
        if FileManager.default.fileExists(atPath: snapChromium + "/cert9.db") { databases.append(snapChromium) }
        for profiles in [home + "/.mozilla/firefox", home + "/snap/firefox/common/.mozilla/firefox"] {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: profiles)) ?? []
            for entry in entries.sorted() where FileManager.default.fileExists(atPath: "\(profiles)/\(entry)/cert9.db") {
                databases.append("\(profiles)/\(entry)")
            }
        }
        return databases
    }

    func has(_ database: String, user: BrowserUser, certutil: String) -> Bool {
        run(certutil, ["-L", "-d", "sql:" + database, "-n", nickname], as: user, quiet: true)
    }

    /// Runs a tool as the browser's user (runuser when this process is root and that user is not), so
    /// the databases it writes stay that user's.
    func run(_ tool: String, _ arguments: [String], as user: BrowserUser, quiet: Bool = false) -> Bool {
        let process = Process()
        if getuid() == 0 && user.uid != 0 {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
            process.arguments = ["-u", user.name, "--", tool] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = arguments
        }
        process.standardOutput = FileHandle.nullDevice
        if quiet { process.standardError = FileHandle.nullDevice }
        do { try process.run() } catch { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }

    static func updateSystemStore(fresh: Bool) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/update-ca-certificates")
        process.arguments = fresh ? ["--fresh"] : []
        process.standardOutput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            FileHandle.standardError.write(Data("webserver: cannot run update-ca-certificates (Debian's ca-certificates package): \(error.localizedDescription)\n".utf8))
            return false
        }
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            FileHandle.standardError.write(Data("webserver: update-ca-certificates\(fresh ? " --fresh" : "") failed (exit status \(process.terminationStatus))\n".utf8))
            return false
        }
        return true
    }
}

/// The user whose browsers trust the CA: the one who ran `sudo`, else whoever runs this; their home
/// from $HOME when it is this process's own user (so a test can point it elsewhere), else from passwd.
struct BrowserUser {
    let name: String
    let uid: uid_t
    let home: String

    static func current() -> BrowserUser {
        let environment = ProcessInfo.processInfo.environment
        if getuid() == 0, let sudoUser = environment["SUDO_USER"], sudoUser != "root", let entry = getpwnam(sudoUser) {
            return BrowserUser(name: sudoUser, uid: entry.pointee.pw_uid, home: String(cString: entry.pointee.pw_dir))
        }
        let entry = getpwuid(getuid())
        let name = entry.map { String(cString: $0.pointee.pw_name) } ?? "\(getuid())"
        let home = environment["HOME"] ?? entry.map { String(cString: $0.pointee.pw_dir) } ?? "/"
        return BrowserUser(name: name, uid: getuid(), home: home)
    }
}
