import CSystemShims
import Glibc

/// One end of a SOCK_SEQPACKET socketpair between two processes: messages with fds beside them.
///
/// Owns its fd and its buffers (allocated once). The corresponding C functions are `sendmsg` and
/// `recvmsg` with SCM_RIGHTS control messages.
public final class Channel {
    /// The socket; owned by this channel until `close()`.
    public private(set) var fd: Int32
    private let buffer: UnsafeMutableRawBufferPointer
    private let control: UnsafeMutableRawBufferPointer

    /// What a receive produced.
    public enum Received {
        /// A well-formed message and the fds that came with it (now owned by the caller).
        case message(Message, [Int32])
        /// Nothing to read now.
        case wouldBlock
        /// The peer closed its end (or died).
        case closed
    }

    /// Takes ownership of `fd`.
    public init(fd: Int32) {
        self.fd = fd
        buffer = .allocate(byteCount: Message.maxSize + 64, alignment: 8)
        control = .allocate(byteCount: cs_CMSG_SPACE(MemoryLayout<Int32>.size * Message.maxBatch), alignment: 8)
    }

    deinit {
        if fd >= 0 { closeDescriptor(fd) }
        buffer.deallocate()
        control.deallocate()
    }

    /// Closes the socket; the peer sees end-of-file.
    public func close() {
        if fd >= 0 { closeDescriptor(fd) }
        fd = -1
    }

    /// Sends `message` with `fds` (which stay owned by the caller; the kernel duplicates them in flight).
    ///
    /// Returns false when the peer's queue is full (EAGAIN). Throws for a dead peer (EPIPE, ECONNRESET).
    @discardableResult
    public func send(_ message: Message, fds: UnsafeBufferPointer<Int32> = .init(start: nil, count: 0)) throws(SystemError) -> Bool {
        precondition(message.fdCount.contains(fds.count), "fd count does not match message kind")
        let length = message.encode(into: buffer)
        return try sendEncoded(length: length, fds: fds)
    }

    /// Sends `message` with the one fd it carries (which stays owned by the caller).
    @discardableResult
    public func send(_ message: Message, fd: Int32) throws(SystemError) -> Bool {
        var descriptor = fd
        return try withUnsafePointer(to: &descriptor) { (pointer) throws(SystemError) -> Bool in
            try send(message, fds: UnsafeBufferPointer(start: pointer, count: 1))
        }
    }

    /// Sends `length` bytes already encoded in `encodingBuffer` with `fds`.
    package func sendEncoded(length: Int, fds: UnsafeBufferPointer<Int32>) throws(SystemError) -> Bool {
        var vector = iovec(iov_base: buffer.baseAddress, iov_len: length)
        var header = msghdr()
        return try withUnsafeMutablePointer(to: &vector) { (vectorPointer) throws(SystemError) -> Bool in
            header.msg_iov = vectorPointer
            header.msg_iovlen = 1
            if fds.count > 0 {
                let space = cs_CMSG_SPACE(MemoryLayout<Int32>.size * fds.count)
                header.msg_control = control.baseAddress
                header.msg_controllen = space
                let cmsg = cs_CMSG_FIRSTHDR(&header)!
                cmsg.pointee.cmsg_level = SOL_SOCKET
                cmsg.pointee.cmsg_type = cs_SCM_RIGHTS
                cmsg.pointee.cmsg_len = cs_CMSG_LEN(MemoryLayout<Int32>.size * fds.count)
                let data = UnsafeMutableRawPointer(cs_CMSG_DATA(cmsg)!)
                for (index, descriptor) in fds.enumerated() {
                    data.storeBytes(of: descriptor, toByteOffset: index * 4, as: Int32.self)
                }
            }
            let result = try nonBlockingSyscall("sendmsg") { sendmsg(fd, &header, cs_MSG_NOSIGNAL) }
            if case .processed = result { return true }
            return false
        }
    }

    /// The buffer a caller may encode into before `sendEncoded` (for batches built in place).
    package var encodingBuffer: UnsafeMutableRawBufferPointer { buffer }

    /// Receives one message. A malformed one has its fds closed and throws `MessageError`.
    public func receive() throws -> Received {
        var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var header = msghdr()
        return try withUnsafeMutablePointer(to: &vector) { vectorPointer -> Received in
            header.msg_iov = vectorPointer
            header.msg_iovlen = 1
            header.msg_control = control.baseAddress
            header.msg_controllen = control.count
            let result = try nonBlockingSyscall("recvmsg") { recvmsg(fd, &header, cs_MSG_CMSG_CLOEXEC) }
            guard case .processed(let count) = result else { return .wouldBlock }
            var fds: [Int32] = []
            var cmsg = cs_CMSG_FIRSTHDR(&header)
            while let current = cmsg {
                if current.pointee.cmsg_level == SOL_SOCKET && current.pointee.cmsg_type == cs_SCM_RIGHTS {
                    let dataLength = Int(current.pointee.cmsg_len) - cs_CMSG_LEN(0)
                    let data = UnsafeRawPointer(cs_CMSG_DATA(current)!)
                    for index in 0..<(dataLength / 4) {
                        fds.append(data.loadUnaligned(fromByteOffset: index * 4, as: Int32.self))
                    }
                }
                cmsg = cs_CMSG_NXTHDR(&header, current)
            }
            if count == 0 && fds.isEmpty { return .closed }
            if header.msg_flags & (Int32(MSG_TRUNC) | Int32(MSG_CTRUNC)) != 0 {
                for descriptor in fds { closeDescriptor(descriptor) }
                throw MessageError.truncated
            }
            do {
                let message = try Message.decode(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), fdCount: fds.count)
                return .message(message, fds)
            } catch {
                for descriptor in fds { closeDescriptor(descriptor) }
                throw error
            }
        }
    }
}

extension Channel {
    /// Receives the messages waiting (at most `limit`), calling `body` with each; the fds passed to
    /// `body` are its to own. Returns false once the peer has closed its end or the socket failed.
    ///
    /// A malformed message is logged naming `peer` (made only then: a heartbeat builds no string), its
    /// fds are closed, and `malformed` runs (the caller decides whether to stop that peer); it is never
    /// handed to `body`.
    package func receiveAll(
        from peer: @autoclosure () -> String, limit: Int = .max, malformed: (any Error) -> Void = { _ in },
        _ body: (Message, [Int32]) -> Void
    ) -> Bool {
        var count = 0
        while count < limit {
            let result: Received
            do {
                result = try receive()
            } catch let error as SystemError {
                log.error("channel to the \(peer()) failed: \(error)")
                return false
            } catch {
                log.error("malformed message from the \(peer()): \(error)")
                malformed(error)
                continue
            }
            switch result {
            case .wouldBlock:
                return true
            case .closed:
                return false
            case .message(let message, let fds):
                count += 1
                body(message, fds)
            }
        }
        return true
    }

    /// Logs a message that is well-formed but not one this peer should send, and closes its fds.
    package static func reject(_ message: Message, fds: [Int32], from peer: @autoclosure () -> String) {
        log.error("unexpected message from the \(peer()): \(message)")
        for fd in fds { closeDescriptor(fd) }
    }
}
