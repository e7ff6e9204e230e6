import DatagramIO
import STUNLite
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Batched sends and receives on loopback sockets: what the relay's data plane and the floods rely on.
@Suite struct DatagramBatchTests {
    static let loopback = TransportAddress(ip: .v4(0x7F00_0001), port: 0)

    /// A bound loopback socket, closed by `body`'s end.
    static func withSockets(_ n: Int, _ body: ([(fd: Int32, address: TransportAddress)]) throws -> Void) throws {
        var sockets: [(fd: Int32, address: TransportAddress)] = []
        defer { for s in sockets { close(s.fd) } }
        for _ in 0..<n {
            let fd = try UDPSocket.open(bound: loopback)
            sockets.append((fd, try #require(UDPSocket.localAddress(fd))))
        }
        try body(sockets)
    }

    /// Receives `expected` datagrams on `fd` (waiting up to 2 s in all) into `batch`, returning each
    /// one's bytes and source.
    static func receive(_ expected: Int, on fd: Int32, into batch: ReceiveBatch) throws -> [([UInt8], TransportAddress?)] {
        let poll = try EventPoll(capacity: 4)
        try poll.watch(fd, token: 7)
        var out: [([UInt8], TransportAddress?)] = []
        for _ in 0..<20 where out.count < expected {
            let ready = poll.wait(milliseconds: 100)
            guard ready > 0 else { continue }
            #expect(poll.token(0) == 7)
            let n = try batch.receive(from: fd, upTo: batch.count)
            for i in 0..<n { out.append((Array(batch.bytes(i)), batch.source(i))) }
        }
        return out
    }

    @Test func receivedDatagramsKeepTheirSourceAndRoomForAHeader() throws {
        try Self.withSockets(2) { s in
            let send = SendBatch(capacity: 8, maxBytes: 64)
            for k in 0..<3 { [UInt8](repeating: UInt8(k), count: 10 + k).withUnsafeBytes { send.append(socket: s[0].fd, to: s[1].address, $0) } }
            #expect(send.count == 3)
            send.flush()
            #expect(send.count == 0)
            let batch = ReceiveBatch(count: 8, maxBytes: 64, headroom: 4)
            let got = try Self.receive(3, on: s[1].fd, into: batch)
            #expect(got.map(\.0) == (0..<3).map { [UInt8](repeating: UInt8($0), count: 10 + $0) })
            #expect(got.allSatisfy { $0.1 == s[0].address })
            // The slot reaches four bytes in front of the last datagram, which it ends with.
            let slot = batch.slot(2)
            #expect(slot.count == 4 + 12)
            #expect(Array(slot[4...]) == [UInt8](repeating: 2, count: 12))
        }
    }

    @Test func interleavedDatagramsForSeveralSocketsKeepTheirOrderPerSocket() throws {
        try Self.withSockets(3) { s in
            let send = SendBatch(capacity: 4, maxBytes: 8)
            // Capacity 4 for 10 datagrams: appending flushes when full.
            for k in 0..<10 {
                let from = s[k % 2].fd
                [UInt8(k)].withUnsafeBytes { send.append(socket: from, to: s[2].address, $0) }
            }
            send.flush()
            let got = try Self.receive(10, on: s[2].fd, into: ReceiveBatch(count: 16, maxBytes: 8))
            #expect(got.filter { $0.1 == s[0].address }.map { $0.0[0] } == [0, 2, 4, 6, 8])
            #expect(got.filter { $0.1 == s[1].address }.map { $0.0[0] } == [1, 3, 5, 7, 9])
            #expect(send.dropped == 0)
        }
    }

    @Test func aDatagramLongerThanTheBatchRoomLeavesWholeAfterTheQueuedOnes() throws {
        try Self.withSockets(2) { s in
            let send = SendBatch(capacity: 4, maxBytes: 16)
            [UInt8(1)].withUnsafeBytes { send.append(socket: s[0].fd, to: s[1].address, $0) }
            [UInt8](repeating: 9, count: 1000).withUnsafeBytes { send.append(socket: s[0].fd, to: s[1].address, $0) }
            #expect(send.count == 0)
            let got = try Self.receive(2, on: s[1].fd, into: ReceiveBatch(count: 4, maxBytes: 2048))
            #expect(got.map(\.0.count) == [1, 1000])
        }
    }

    @Test func aTruncatedDatagramIsFlagged() throws {
        try Self.withSockets(2) { s in
            let send = SendBatch(capacity: 4, maxBytes: 64)
            [UInt8](repeating: 5, count: 40).withUnsafeBytes { send.append(socket: s[0].fd, to: s[1].address, $0) }
            send.flush()
            let batch = ReceiveBatch(count: 2, maxBytes: 16)
            let got = try Self.receive(1, on: s[1].fd, into: batch)
            #expect(got.count == 1)
            #expect(batch.isTruncated(0))
        }
    }

    @Test func aBusyPortIsRefusedWithItsErrno() throws {
        try Self.withSockets(1) { s in
            #expect(throws: DatagramIOError.self) { _ = try UDPSocket.open(bound: s[0].address) }
            do throws(DatagramIOError) {
                let fd = try UDPSocket.open(bound: s[0].address)
                close(fd)
            } catch {
                #expect(error.errno == EADDRINUSE)
            }
        }
    }
}
