import Testing

@testable import Server
@testable import ServerCore

/// The supervisor runs a webserver-core only when it answers with this build's `CoreFormat.version`.
/// This test notices a change to what the two executables share (the messages, the fd slots, the
/// configuration's keys) made without raising that number: an old core would then run beside a new
/// server, and misread its messages or fail to read its configuration.
@Suite struct CoreFormatTests {
    /// The fingerprint recorded for each version. After a change, raise `CoreFormat.version` and add
    /// the fingerprint this test prints.
    static let recorded: [Int: UInt64] = [1: 0x0a1c_913c_fcb2_ae9a]

    static func fingerprint() throws -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ bytes: some Sequence<UInt8>) {
            for byte in bytes {
                hash ^= UInt64(byte)
                hash &*= 0x100_0000_01b3
            }
            hash ^= 0xFF
            hash &*= 0x100_0000_01b3
        }
        // The messages, one of each kind, as bytes.
        let v6 = try #require(SocketAddress(parsing: "[2001:db8::1]:80"))
        let messages: [Message] = [
            .heartbeat(Heartbeat(liveConnections: 1, queueDepth: 2, workers: 3, acceptedTotal: 4, requestsTotal: 5, closedTotal: 6)),
            .connections([ConnectionInfo(listenerID: 3, peer: v6, countedPerIP: true, admittedBy: 2)]),
            .released(count: 1, worker: 2, total: 3), .releasedPeers([v6], worker: 1, total: 2),
            .workerGone(worker: 1, assigned: 2, startedAt: 3), .workerGone(worker: 1, assigned: nil, startedAt: 3),
            .shutdown(deadlineMilliseconds: 1), .reload, .reopenLogs(accessLog: true, errorLog: false), .ticketKeys([1, 2, 3]),
            .stats(Stats(values: (0..<Stats.count).map { UInt64($0) })), .certificateInstalled, .workerChannel(worker: 1),
            .workerRetired(worker: 1), .managerGone, .listenerStarted(index: 1),
        ]
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Message.maxSize, alignment: 8)
        defer { buffer.deallocate() }
        for message in messages { mix(buffer[0..<message.encode(into: buffer)]) }
        // The fd slots.
        for slot in ListenerSlot.allCases { mix("listener \(slot) \(slot.rawValue)".utf8) }
        for slot in ManagerSlot.allCases { mix("manager \(slot) \(slot.rawValue)".utf8) }
        for slot in WorkerSlot.allCases { mix("worker \(slot) \(slot.rawValue)".utf8) }
        // The configuration's keys (values vary by machine: `workers.max` is the processor count).
        var parser = JSONParser(bytes: try JSONCoding.encode(ServerConfig()))
        var paths: [String] = []
        func walk(_ value: JSONValue, _ path: String) {
            switch value {
            case .object(let members): for (key, member) in members { walk(member, path + "." + key) }
            case .array(let elements): for element in elements { walk(element, path + "[]") }
            default: paths.append(path)
            }
        }
        walk(try parser.parseDocument(), "")
        for path in Set(paths).sorted() { mix(path.utf8) }
        return hash
    }

    @Test func aChangeToWhatTheExecutablesShareRaisesTheVersion() throws {
        let now = try CoreFormatTests.fingerprint()
        #expect(CoreFormatTests.recorded[CoreFormat.version] == now,
                "what webserver and webserver-core share changed: raise CoreFormat.version and record \(CoreFormat.version + 1): 0x\(String(now, radix: 16))")
    }
}
