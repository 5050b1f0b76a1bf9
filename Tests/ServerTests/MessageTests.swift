import Glibc
import Testing

@testable import Server

@Suite struct MessageTests {
    func roundTrip(_ message: Message, fds: Int = 0) throws -> Message {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Message.maxSize, alignment: 8)
        defer { buffer.deallocate() }
        let length = message.encode(into: buffer)
        return try Message.decode(UnsafeRawBufferPointer(rebasing: buffer[0..<length]), fdCount: fds)
    }

    @Test func everyKindRoundTrips() throws {
        let beat = Heartbeat(liveConnections: 7, queueDepth: 2, workers: 3, acceptedTotal: 99, requestsTotal: 1 << 40, closedTotal: 12)
        #expect(try roundTrip(.heartbeat(beat)) == .heartbeat(beat))
        #expect(try roundTrip(.released(count: 5, worker: 4242, total: 0xFFFF_FFF0)) == .released(count: 5, worker: 4242, total: 0xFFFF_FFF0))
        #expect(try roundTrip(.workerGone(worker: 77, assigned: 3, startedAt: 1 << 40)) == .workerGone(worker: 77, assigned: 3, startedAt: 1 << 40))
        #expect(try roundTrip(.workerGone(worker: 77, assigned: nil, startedAt: 0)) == .workerGone(worker: 77, assigned: nil, startedAt: 0))
        #expect(try roundTrip(.certificateInstalled) == .certificateInstalled)
        #expect(try roundTrip(.managerGone) == .managerGone)
        #expect(try roundTrip(.workerChannel(worker: 31337), fds: 1) == .workerChannel(worker: 31337))
        #expect(try roundTrip(.workerRetired(worker: 31337)) == .workerRetired(worker: 31337))
        #expect(try roundTrip(.listenerStarted(index: 63)) == .listenerStarted(index: 63))
        #expect(try roundTrip(.shutdown(deadlineMilliseconds: 30_000)) == .shutdown(deadlineMilliseconds: 30_000))
        #expect(try roundTrip(.reload, fds: 1) == .reload)
        #expect(try roundTrip(.reopenLogs(accessLog: true, errorLog: true), fds: 2) == .reopenLogs(accessLog: true, errorLog: true))
        let v4 = try #require(SocketAddress(parsing: "192.0.2.1:4321"))
        let v6 = try #require(SocketAddress(parsing: "[2001:db8::1]:80"))
        let entries = [ConnectionInfo(listenerID: 0, peer: v4), ConnectionInfo(listenerID: 3, peer: v6, countedPerIP: true, admittedBy: 63)]
        #expect(try roundTrip(.connections(entries), fds: 2) == .connections(entries))
        #expect(try roundTrip(.releasedPeers([v4, v6, v4], worker: 9, total: 12)) == .releasedPeers([v4, v6, v4], worker: 9, total: 12))
        let full = [SocketAddress](repeating: v6, count: Message.maxBatch)
        #expect(try roundTrip(.releasedPeers(full, worker: 1, total: 64)) == .releasedPeers(full, worker: 1, total: 64))
        let keys = (0..<160).map { UInt8($0) }
        #expect(try roundTrip(.ticketKeys(keys)) == .ticketKeys(keys))
        #expect(try roundTrip(.ticketKeys(Array(keys.prefix(80)))) == .ticketKeys(Array(keys.prefix(80))))
        let stats = Stats(values: (0..<Stats.count).map { UInt64($0) &* 0x0101_0101_0101 })
        #expect(try roundTrip(.stats(stats)) == .stats(stats))
    }

    @Test func malformedIsRejected() {
        func decode(_ bytes: [UInt8], fds: Int = 0) -> MessageError? {
            do {
                _ = try bytes.withUnsafeBytes { try Message.decode($0, fdCount: fds) }
                return nil
            } catch {
                return error as? MessageError
            }
        }
        #expect(decode([1, 1]) == .tooShort(2))
        #expect(decode([2, 3, 0, 0, 1, 0, 0, 0]) == .badVersion(2))
        #expect(decode([1, 99, 0, 0]) == .unknownKind(99))
        #expect(decode([1, 7, 3, 0] + [UInt8](repeating: 0, count: 240)) == .badField("ticket key count 3"))
        #expect(decode([1, 7, 1, 0] + [UInt8](repeating: 0, count: 79)) == .badLength(kind: 7, length: 83))
        #expect(decode([1, 3, 0, 0, 1, 0, 0]) == .badLength(kind: 3, length: 7))
        #expect(decode([1, 3, 0, 0] + [UInt8](repeating: 0, count: 12), fds: 1) == .badFDCount(kind: 3, fds: 1))
        #expect(decode([1, 10, 2, 0] + [UInt8](repeating: 0, count: 16)) == .badField("flags 2"))
        #expect(decode([1, 5, 0, 0], fds: 0) == .badFDCount(kind: 5, fds: 0))
        // A connections message whose entry count disagrees with the fds that came with it.
        var connections: [UInt8] = [1, 2, 1, 0, 0, 0, 2, 0, 80, 0, 0, 0]
        connections += [UInt8](repeating: 0, count: 16)
        #expect(decode(connections, fds: 2) == .badFDCount(kind: 2, fds: 2))
        connections[6] = 7  // address family
        #expect(decode(connections, fds: 1) == .badField("address family 7"))
        connections[6] = 2
        connections[10] = 64  // the admitting listener's number
        #expect(decode(connections, fds: 1) == .badField("listener 64"))
    }

    /// fds cross a real socketpair beside the message, and arrive as new descriptors to the same files.
    @Test func fdsTravelOverAChannel() throws {
        let (a, b) = try Socket.seqpacketPair()
        let sender = Channel(fd: a)
        let receiver = Channel(fd: b)
        var pipeFDs: [Int32] = [-1, -1]
        #expect(pipe(&pipeFDs) == 0)
        let peer = try #require(SocketAddress(parsing: "127.0.0.1:5555"))
        let sent = try [pipeFDs[1]].withUnsafeBufferPointer {
            try sender.send(.connections([ConnectionInfo(listenerID: 1, peer: peer)]), fds: $0)
        }
        #expect(sent)
        close(pipeFDs[1])
        guard case .message(.connections(let entries), let fds) = try receiver.receive() else {
            Issue.record("no message")
            return
        }
        #expect(entries == [ConnectionInfo(listenerID: 1, peer: peer)])
        #expect(fds.count == 1)
        #expect(write(fds[0], "hi", 2) == 2)
        var buffer = [UInt8](repeating: 0, count: 2)
        #expect(read(pipeFDs[0], &buffer, 2) == 2)
        #expect(buffer == Array("hi".utf8))
        close(fds[0])
        close(pipeFDs[0])
        sender.close()
        guard case .closed = try receiver.receive() else {
            Issue.record("expected end of file")
            return
        }
    }

    @Test func addressesParse() {
        #expect(SocketAddress(parsing: "127.0.0.1:8080")?.description == "127.0.0.1:8080")
        #expect(SocketAddress(parsing: "[::1]:443")?.description == "[::1]:443")
        #expect(SocketAddress(parsing: "*:80")?.description == "0.0.0.0:80")
        #expect(SocketAddress(parsing: ":80")?.description == "0.0.0.0:80")
        #expect(SocketAddress(parsing: "127.0.0.1:65536") == nil)
        #expect(SocketAddress(parsing: "127.0.0.1") == nil)
        #expect(SocketAddress(parsing: "::1:80") == nil)
        #expect(SocketAddress(parsing: "localhost:80") == nil)
        #expect(SocketAddress(parsing: "[::1]80") == nil)
    }
}
