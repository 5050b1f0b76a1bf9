import Foundation
import Testing

/// What the project's own scripts do to the machine they run on.
@Suite struct ScriptTests {
    /// CI and the scripts install nginx, HAProxy, lighttpd and h2o, and run their own on ports of their
    /// own; on a developer's laptop or a build host, processes under those names are someone's servers.
    /// Nothing stops processes by name (issue 14: `.ci/run` ran `pkill -x nginx`); what a script starts
    /// it stops by pid, and the packages' services are kept from starting with policy-rc.d.
    @Test func noScriptStopsProcessesByName() throws {
        let scripts = [".ci/run"] + (try FileManager.default.contentsOfDirectory(atPath: packageRoot.appendingPathComponent("scripts").path)
            .map { "scripts/\($0)" })
        let byName = try Regex(#"\b(pkill|killall)\b|\bsystemctl\s+(stop|kill)\b|\bservice\s+\S+\s+stop\b"#)
        for script in scripts {
            let text = try String(contentsOf: packageRoot.appendingPathComponent(script), encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where !line.trimmingCharacters(in: .whitespaces).hasPrefix("#") && line.contains(byName) {
                Issue.record("\(script):\(number + 1) stops processes by name: \(line)")
            }
        }
        let installers = scripts.filter { ((try? String(contentsOf: packageRoot.appendingPathComponent($0), encoding: .utf8)) ?? "").contains("install -y") }
        #expect(installers.contains(".ci/run"))
        for script in installers where try String(contentsOf: packageRoot.appendingPathComponent(script), encoding: .utf8).contains("nginx") {
            #expect(try String(contentsOf: packageRoot.appendingPathComponent(script), encoding: .utf8).contains("policy-rc.d"), "\(script)")
        }
    }
}
