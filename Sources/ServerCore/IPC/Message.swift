/// The records that processes exchange over their SOCK_SEQPACKET channels.
///
/// Layout (little-endian): a 4-byte header `version u8, kind u8, count u16`, then a payload fixed by the
/// kind. One message is one packet; fds travel beside it as SCM_RIGHTS and their number must match what
/// the kind says. Anything else is malformed and rejected whole (see `MessageError`).
public enum Message: Equatable, Sendable {
    /// Child to parent, every heartbeat interval: the figures the parent scales and reports on.
    case heartbeat(Heartbeat)
    /// Listener to manager and manager to worker: accepted connections, one fd per entry.
    case connections([ConnectionInfo])
    /// Worker to the listener that admitted them: this many connections have closed. `worker` is the
    /// worker's pid and `total` how many it has reported closed to this listener in all, this notice
    /// included (wrapping), so that when it exits the listener can tell what it never reported.
    case released(count: UInt32, worker: UInt32, total: UInt32)
    /// Worker to listener: connections the listener counted against `limits.connections_per_ip` have
    /// closed; their peers as the listener saw them (each entry laid out as a `connections` entry with
    /// socket id 0), then the worker's pid and running total as in `released`.
    case releasedPeers([SocketAddress], worker: UInt32, total: UInt32)
    /// Manager to every listener when it has reaped a worker (pid `worker`, started at `startedAt`,
    /// monotonic milliseconds): `assigned` of this listener's connections were handed to it in all; what
    /// it did not report closed was lost with it. The supervisor sends one with `assigned` nil for a
    /// worker it reaps after the manager that started it died (the listener forgets the worker).
    case workerGone(worker: UInt32, assigned: UInt32?, startedAt: UInt64)
    /// Parent to child: stop taking work, finish within `deadlineMilliseconds`, exit.
    case shutdown(deadlineMilliseconds: UInt32)
    /// Supervisor to listener and manager: a new configuration (one fd: a sealed memfd of JSON).
    case reload
    /// Parent to child: reopen logs. The new access-log fd travels first when `accessLog`, then the
    /// error-log fd when `errorLog` (the header's count field holds the two flags as bits 0 and 1).
    case reopenLogs(accessLog: Bool, errorLog: Bool)
    /// Supervisor to manager, manager to workers: the TLS session ticket keys, current first, then the
    /// previous one (80 bytes each: name, HMAC key, AES key), so every worker resumes every ticket.
    case ticketKeys([UInt8])
    /// Worker to manager with each heartbeat (its own figures), manager to supervisor (the pool's sum):
    /// the counters and gauges /metrics serves.
    case stats(Stats)
    /// ACME process to supervisor: it wrote a certificate; reload now rather than after the certificate
    /// watch's quiet moment (the watch would see the same change).
    case certificateInstalled
    /// Manager to every listener (on its release channel): worker `worker`'s connection channel, the
    /// send end (one fd), so the listener hands that worker connections itself.
    case workerChannel(worker: UInt32)
    /// Manager to every listener: worker `worker` is retiring; send it nothing more and close its
    /// connection channel (the worker finishes once every sender has).
    case workerRetired(worker: UInt32)
    /// Supervisor to every listener: the manager died; the workers it started are draining, so drop
    /// every connection channel (the next manager's workers come with their own).
    case managerGone
    /// Supervisor to manager: listener `index` (re)started; send it every worker's connection channel.
    case listenerStarted(index: UInt32)

    public static let version: UInt8 = 1
    package static let headerSize = 4
    package static let heartbeatPayload = 32
    package static let connectionEntrySize = 24
    /// Most connections in one `connections` message (and so fds in one sendmsg).
    public static let maxBatch = 64
    /// Largest encoded message.
    package static let maxSize = headerSize + maxBatch * connectionEntrySize + 8

    package enum Kind: UInt8 {
        case heartbeat = 1, connections, released, shutdown, reload, reopenLogs, ticketKeys, stats, releasedPeers, workerGone, certificateInstalled
        case workerChannel, workerRetired, managerGone, listenerStarted
    }

    /// Bytes of one ticket key.
    public static let ticketKeySize = 80

    /// How many fds must travel with this message.
    package var fdCount: ClosedRange<Int> {
        switch self {
        case .connections(let entries): return entries.count...entries.count
        case .reload, .workerChannel: return 1...1
        case .reopenLogs(let access, let error):
            let count = (access ? 1 : 0) + (error ? 1 : 0)
            return count...count
        default: return 0...0
        }
    }
}

/// What a heartbeat reports. Every role fills the fields it has and leaves the rest zero.
public struct Heartbeat: Equatable, Sendable {
    /// Connections open now (worker: its own; manager: the pool's; listener: admitted and not released).
    public var liveConnections: UInt32 = 0
    /// Connections waiting for a worker (manager) or held back by a full channel (listener).
    public var queueDepth: UInt32 = 0
    /// Workers running (manager only).
    public var workers: UInt32 = 0
    /// Connections accepted so far (listener) or taken (worker).
    public var acceptedTotal: UInt32 = 0
    /// Requests answered so far.
    public var requestsTotal: UInt64 = 0
    /// Connections closed so far.
    public var closedTotal: UInt64 = 0

    public init(
        liveConnections: UInt32 = 0, queueDepth: UInt32 = 0, workers: UInt32 = 0, acceptedTotal: UInt32 = 0,
        requestsTotal: UInt64 = 0, closedTotal: UInt64 = 0
    ) {
        self.liveConnections = liveConnections
        self.queueDepth = queueDepth
        self.workers = workers
        self.acceptedTotal = acceptedTotal
        self.requestsTotal = requestsTotal
        self.closedTotal = closedTotal
    }
}

/// One accepted connection as it travels between processes; the fd travels beside it.
public struct ConnectionInfo: Equatable, Sendable {
    /// Index of the listening socket in the configuration's `listen` list.
    public var listenerID: UInt16
    /// The listener process that admitted it (entry byte 6): where its close is reported.
    public var admittedBy: UInt8
    /// The client's address.
    public var peer: SocketAddress
    /// The listener counted it against `limits.connections_per_ip`: its close must be reported with the
    /// peer (`releasedPeers`). Flag bit 0 of the entry's byte 3.
    public var countedPerIP: Bool

    public init(listenerID: UInt16, peer: SocketAddress, countedPerIP: Bool = false, admittedBy: UInt8 = 0) {
        self.listenerID = listenerID
        self.admittedBy = admittedBy
        self.peer = peer
        self.countedPerIP = countedPerIP
    }
}

/// Why a received packet was not accepted as a message.
public enum MessageError: Error, Equatable, CustomStringConvertible {
    case tooShort(Int)
    case badVersion(UInt8)
    case unknownKind(UInt8)
    case badLength(kind: UInt8, length: Int)
    case badFDCount(kind: UInt8, fds: Int)
    case badField(String)
    case truncated

    public var description: String {
        switch self {
        case .tooShort(let n): return "message of \(n) bytes is shorter than its header"
        case .badVersion(let v): return "message version \(v), expected \(Message.version)"
        case .unknownKind(let k): return "unknown message kind \(k)"
        case .badLength(let k, let n): return "message kind \(k) with wrong length \(n)"
        case .badFDCount(let k, let n): return "message kind \(k) arrived with \(n) file descriptors"
        case .badField(let f): return "message field out of range: \(f)"
        case .truncated: return "message or its file descriptors were truncated"
        }
    }
}

extension Message {
    /// Encodes into `buffer` (at least `maxSize` bytes); returns the byte count.
    package func encode(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        func header(_ kind: Kind, _ count: Int) {
            buffer[0] = Message.version
            buffer[1] = kind.rawValue
            buffer.storeBytes(of: UInt16(count).littleEndian, toByteOffset: 2, as: UInt16.self)
        }
        /// A message whose payload is one u32 (8 bytes).
        func word(_ kind: Kind, _ value: UInt32) -> Int {
            header(kind, 0)
            buffer.storeBytes(of: value.littleEndian, toByteOffset: 4, as: UInt32.self)
            return 8
        }
        // What every process sends each second, before the switch: its jump table is in .rodata, and
        // reading it from an idle process's heartbeat paged 64 KiB of it back in after every trim.
        if case .heartbeat(let beat) = self {
            header(.heartbeat, 0)
            buffer.storeBytes(of: beat.liveConnections.littleEndian, toByteOffset: 4, as: UInt32.self)
            buffer.storeBytes(of: beat.queueDepth.littleEndian, toByteOffset: 8, as: UInt32.self)
            buffer.storeBytes(of: beat.workers.littleEndian, toByteOffset: 12, as: UInt32.self)
            buffer.storeBytes(of: beat.acceptedTotal.littleEndian, toByteOffset: 16, as: UInt32.self)
            buffer.storeBytes(of: beat.requestsTotal.littleEndian, toByteOffset: 20, as: UInt64.self)
            buffer.storeBytes(of: beat.closedTotal.littleEndian, toByteOffset: 28, as: UInt64.self)
            return Message.headerSize + Message.heartbeatPayload
        }
        if case .stats(let stats) = self {
            header(.stats, 0)
            for (index, value) in stats.values.enumerated() {
                buffer.storeBytes(of: value.littleEndian, toByteOffset: Message.headerSize + index * 8, as: UInt64.self)
            }
            return Message.headerSize + Stats.count * 8
        }
        switch self {
        case .heartbeat, .stats:
            preconditionFailure("encoded above")
        case .connections(let entries):
            return Message.encode(.connections, entries, into: buffer)
        case .released(let count, let worker, let total):
            header(.released, 0)
            buffer.storeBytes(of: count.littleEndian, toByteOffset: 4, as: UInt32.self)
            buffer.storeBytes(of: worker.littleEndian, toByteOffset: 8, as: UInt32.self)
            buffer.storeBytes(of: total.littleEndian, toByteOffset: 12, as: UInt32.self)
            return 16
        case .releasedPeers(let peers, let worker, let total):
            let end = Message.encode(.releasedPeers, peers.map { ConnectionInfo(listenerID: 0, peer: $0) }, into: buffer)
            buffer.storeBytes(of: worker.littleEndian, toByteOffset: end, as: UInt32.self)
            buffer.storeBytes(of: total.littleEndian, toByteOffset: end + 4, as: UInt32.self)
            return end + 8
        case .workerGone(let worker, let assigned, let startedAt):
            header(.workerGone, assigned == nil ? 0 : 1)
            buffer.storeBytes(of: worker.littleEndian, toByteOffset: 4, as: UInt32.self)
            buffer.storeBytes(of: (assigned ?? 0).littleEndian, toByteOffset: 8, as: UInt32.self)
            buffer.storeBytes(of: startedAt.littleEndian, toByteOffset: 12, as: UInt64.self)
            return 20
        case .shutdown(let deadline):
            return word(.shutdown, deadline)
        case .workerChannel(let worker):
            return word(.workerChannel, worker)
        case .workerRetired(let worker):
            return word(.workerRetired, worker)
        case .listenerStarted(let index):
            return word(.listenerStarted, index)
        case .reload, .certificateInstalled, .managerGone:
            header(self == .reload ? .reload : self == .certificateInstalled ? .certificateInstalled : .managerGone, 0)
            return Message.headerSize
        case .reopenLogs(let access, let error):
            header(.reopenLogs, (access ? 1 : 0) | (error ? 2 : 0))
            return Message.headerSize
        case .ticketKeys(let keys):
            let count = keys.count / Message.ticketKeySize
            header(.ticketKeys, count)
            for (index, byte) in keys.prefix(count * Message.ticketKeySize).enumerated() { buffer[Message.headerSize + index] = byte }
            return Message.headerSize + count * Message.ticketKeySize
        }
    }

    /// A message of `kind` whose payload is `entries` laid out as connection entries.
    private static func encode(_ kind: Kind, _ entries: [ConnectionInfo], into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(entries.count <= Message.maxBatch)
        buffer[0] = Message.version
        buffer[1] = kind.rawValue
        buffer.storeBytes(of: UInt16(entries.count).littleEndian, toByteOffset: 2, as: UInt16.self)
        var offset = Message.headerSize
        for entry in entries {
            Message.encode(entry, into: buffer, at: offset)
            offset += Message.connectionEntrySize
        }
        return offset
    }

    /// Writes one connection entry at `offset`; used for batches built in place without an array.
    package static func encode(_ entry: ConnectionInfo, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        buffer.storeBytes(of: entry.listenerID.littleEndian, toByteOffset: offset, as: UInt16.self)
        buffer[offset + 2] = entry.peer.family
        buffer[offset + 3] = entry.countedPerIP ? 1 : 0
        buffer.storeBytes(of: entry.peer.port.littleEndian, toByteOffset: offset + 4, as: UInt16.self)
        buffer[offset + 6] = entry.admittedBy
        buffer[offset + 7] = 0
        buffer.storeBytes(of: entry.peer.bytes.0, toByteOffset: offset + 8, as: UInt64.self)
        buffer.storeBytes(of: entry.peer.bytes.1, toByteOffset: offset + 16, as: UInt64.self)
    }

    /// Writes the header of a `connections` message holding `count` entries.
    package static func encodeConnectionsHeader(count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        buffer[0] = Message.version
        buffer[1] = Kind.connections.rawValue
        buffer.storeBytes(of: UInt16(count).littleEndian, toByteOffset: 2, as: UInt16.self)
    }

    /// Reads one connection entry at `offset` of a validated `connections` message.
    package static func decodeEntry(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(MessageError) -> ConnectionInfo {
        let family = bytes[offset + 2]
        guard family == 1 || family == 2 || family == 10 else { throw .badField("address family \(family)") }
        guard bytes[offset + 3] <= 1, bytes[offset + 7] == 0 else { throw .badField("reserved bytes") }
        guard Int(bytes[offset + 6]) < ServerConfig.maxListeners else { throw .badField("listener \(bytes[offset + 6])") }
        let listener = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
        let port = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self))
        let high = bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
        let low = bytes.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)
        return ConnectionInfo(
            listenerID: listener, peer: SocketAddress(family: family, port: port, bytes: (high, low)), countedPerIP: bytes[offset + 3] == 1,
            admittedBy: bytes[offset + 6])
    }

    private static func u32(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// Decodes and validates a packet that arrived with `fdCount` descriptors.
    public static func decode(_ bytes: UnsafeRawBufferPointer, fdCount: Int) throws(MessageError) -> Message {
        guard bytes.count >= headerSize else { throw .tooShort(bytes.count) }
        guard bytes[0] == version else { throw .badVersion(bytes[0]) }
        guard let kind = Kind(rawValue: bytes[1]) else { throw .unknownKind(bytes[1]) }
        let count = Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
        func expect(length: Int, fds: ClosedRange<Int> = 0...0) throws(MessageError) {
            guard bytes.count == length else { throw .badLength(kind: kind.rawValue, length: bytes.count) }
            guard fds.contains(fdCount) else { throw .badFDCount(kind: kind.rawValue, fds: fdCount) }
            if kind != .connections && kind != .reopenLogs && kind != .ticketKeys && kind != .releasedPeers && kind != .workerGone && count != 0 {
                throw .badField("count \(count) on kind \(kind.rawValue)")
            }
        }
        // Heartbeats and stats, which every parent reads each second, before the switch (as in `encode`).
        if kind == .heartbeat {
            try expect(length: headerSize + heartbeatPayload)
            func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
            return .heartbeat(Heartbeat(
                liveConnections: u32(bytes, 4), queueDepth: u32(bytes, 8), workers: u32(bytes, 12), acceptedTotal: u32(bytes, 16),
                requestsTotal: u64(20), closedTotal: u64(28)))
        }
        if kind == .stats {
            try expect(length: headerSize + Stats.count * 8)
            return .stats(Stats(values: (0..<Stats.count).map {
                UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: headerSize + $0 * 8, as: UInt64.self))
            }))
        }
        switch kind {
        case .heartbeat, .stats:
            preconditionFailure("decoded above")
        case .connections:
            guard count >= 1, count <= maxBatch else { throw .badField("connection count \(count)") }
            try expect(length: headerSize + count * connectionEntrySize, fds: count...count)
            var entries: [ConnectionInfo] = []
            entries.reserveCapacity(count)
            for index in 0..<count {
                entries.append(try decodeEntry(bytes, at: headerSize + index * connectionEntrySize))
            }
            return .connections(entries)
        case .released:
            try expect(length: 16)
            return .released(count: u32(bytes, 4), worker: u32(bytes, 8), total: u32(bytes, 12))
        case .workerGone:
            guard count <= 1 else { throw .badField("flags \(count)") }
            try expect(length: 20)
            return .workerGone(
                worker: u32(bytes, 4), assigned: count == 1 ? u32(bytes, 8) : nil,
                startedAt: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt64.self)))
        case .releasedPeers:
            guard count >= 1, count <= maxBatch else { throw .badField("peer count \(count)") }
            let end = headerSize + count * connectionEntrySize
            try expect(length: end + 8)
            var peers: [SocketAddress] = []
            for index in 0..<count { peers.append(try decodeEntry(bytes, at: headerSize + index * connectionEntrySize).peer) }
            return .releasedPeers(peers, worker: u32(bytes, end), total: u32(bytes, end + 4))
        case .shutdown:
            try expect(length: 8)
            return .shutdown(deadlineMilliseconds: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        case .reload:
            try expect(length: headerSize, fds: 1...1)
            return .reload
        case .certificateInstalled:
            guard count == 0 else { throw .badField("count \(count)") }
            try expect(length: headerSize)
            return .certificateInstalled
        case .managerGone:
            try expect(length: headerSize)
            return .managerGone
        case .workerChannel:
            try expect(length: 8, fds: 1...1)
            return .workerChannel(worker: u32(bytes, 4))
        case .workerRetired:
            try expect(length: 8)
            return .workerRetired(worker: u32(bytes, 4))
        case .listenerStarted:
            try expect(length: 8)
            guard u32(bytes, 4) < UInt32(ServerConfig.maxListeners) else { throw .badField("listener \(u32(bytes, 4))") }
            return .listenerStarted(index: u32(bytes, 4))
        case .reopenLogs:
            guard count <= 3 else { throw .badField("reopen flags \(count)") }
            let expected = (count & 1) + (count >> 1)
            try expect(length: headerSize, fds: expected...expected)
            return .reopenLogs(accessLog: count & 1 != 0, errorLog: count & 2 != 0)
        case .ticketKeys:
            guard count == 1 || count == 2 else { throw .badField("ticket key count \(count)") }
            try expect(length: headerSize + count * ticketKeySize)
            return .ticketKeys(Array(bytes[headerSize...]))
        }
    }
}
