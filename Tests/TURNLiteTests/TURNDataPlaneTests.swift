import DatagramIO
import Foundation
import NIOCore
import STUNLite
import Testing
@testable import TURNLite

#if canImport(Glibc)
import Glibc
#endif

/// The relay's UDP data plane (one epoll thread per shard, batched reads and sends): many allocations'
/// datagrams share a round, and each still reaches the right peer or client, none lost on loopback.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct TURNDataPlaneTests {
    static let allocations = 40
    static let burst = 5

    /// A peer socket on loopback, read and written directly; closed at the end of `body`.
    static func withPeer(on ip: IPAddress = TURNInteropTests.peerIP, _ body: (Int32, TransportAddress) async throws -> Void) async throws {
        let fd = try UDPSocket.open(bound: TransportAddress(ip: ip, port: 0))
        defer { close(fd) }
        try await body(fd, try #require(UDPSocket.localAddress(fd)))
    }

    /// Datagrams received on `fd` until `expected` came or 3 s passed, with their sources.
    static func receive(_ expected: Int, on fd: Int32) throws -> [(bytes: [UInt8], from: TransportAddress)] {
        let poll = try EventPoll(capacity: 1)
        try poll.watch(fd, token: 1)
        let batch = ReceiveBatch(count: 64, maxBytes: 2048)
        var out: [(bytes: [UInt8], from: TransportAddress)] = []
        for _ in 0..<30 where out.count < expected {
            guard poll.wait(milliseconds: 100) > 0 else { continue }
            let n = try batch.receive(from: fd, upTo: batch.count)
            for i in 0..<n { if let s = batch.source(i) { out.append((Array(batch.bytes(i)), s)) } }
        }
        return out
    }

    @Test func burstsFromManyAllocationsReachTheRightPeerAndClientEachWay() async throws {
        try await TURNInteropTests.withOurServer({ $0.maxAllocationsPerUser = Self.allocations }) { server in
            try await Self.withPeer { peerFD, peer in
                var clients: [(TURNClient, TURNAllocation)] = []
                do {
                    for _ in 0..<Self.allocations {
                        let (client, allocation) = try await TURNClient.allocate(
                            .init(server: server.udpAddress, transport: .udp, username: "u", password: "p", retransmission: .quick))
                        clients.append((client, allocation))
                        try await client.bindChannel(to: peer)
                    }
                    // Client → peer: every allocation's burst sent back to back, ChannelData (RFC 8656 §12.4).
                    for (i, (client, _)) in clients.enumerated() {
                        for k in 0..<Self.burst { try await client.send([UInt8(i), UInt8(k)] + [UInt8](repeating: 7, count: 100), to: peer) }
                    }
                    let arrived = try Self.receive(Self.allocations * Self.burst, on: peerFD)
                    #expect(arrived.count == Self.allocations * Self.burst)
                    for (bytes, from) in arrived {
                        // Each payload leaves the relayed address of the allocation that sent it.
                        #expect(from == clients[Int(bytes[0])].1.relayed)
                    }
                    for i in 0..<Self.allocations {
                        #expect(arrived.filter { $0.bytes[0] == UInt8(i) }.map { $0.bytes[1] } == (0..<Self.burst).map(UInt8.init),
                                "allocation \(i)'s burst arrives whole and in order")
                    }
                    // Peer → clients: one datagram to every relayed address in one batch; each client gets its own.
                    let send = SendBatch(capacity: 64, maxBytes: 2048)
                    for (i, (_, allocation)) in clients.enumerated() {
                        [UInt8(i)].withUnsafeBytes { send.append(socket: peerFD, to: allocation.relayed, $0) }
                    }
                    send.flush()
                    for (i, (client, _)) in clients.enumerated() {
                        var inbound = client.received.makeAsyncIterator()
                        let got = await inbound.next()
                        #expect(got?.peer == peer)
                        #expect(got?.payload == [UInt8(i)])
                    }
                } catch {
                    for (c, _) in clients { await c.close() }
                    throw error
                }
                for (c, _) in clients { await c.close() }
            }
        }
    }

    /// Over TCP a client's write carries several padded ChannelData frames (RFC 8656 §12.5); the relay
    /// hands the frames of one read to its shard together, and each still reaches the peer once, in order,
    /// and a request after them on the same connection is answered.
    @Test func framesOfOneStreamWriteReachThePeerInOrder() async throws {
        try await TURNInteropTests.withOurServer { server in
            try await Self.withPeer { peerFD, peer in
                let (client, _) = try await TURNClient.allocate(
                    .init(server: try #require(server.tcpAddress), transport: .tcp, username: "u", password: "p", retransmission: .quick))
                do {
                    let channel = try await client.bindChannel(to: peer)
                    // Lengths 1…6: every padding from 0 to 3 bytes, frames back to back in one write.
                    let payloads = (1...6).map { [UInt8](repeating: UInt8($0), count: $0) }
                    let bytes = payloads.flatMap { ChannelData(channel: channel, payload: $0).encode(padded: true) }
                    #expect(try client.sendFramed(ByteBuffer(bytes: bytes)))
                    #expect(try Self.receive(payloads.count, on: peerFD).map(\.bytes) == payloads)
                    #expect(try await client.refresh() > 0)
                } catch {
                    await client.close()
                    throw error
                }
                await client.close()
            }
        }
    }

    @Test func aPeerDatagramWithoutPermissionIsDroppedAndOneWithItArrives() async throws {
        try await TURNInteropTests.withOurServer { server in
            try await Self.withPeer { peerFD, peer in
                // Permissions are per IP address (RFC 8656 §9): the stranger is on another one.
                try await Self.withPeer(on: IPAddress("127.0.0.3")!) { strangerFD, _ in
                    let (client, allocation) = try await TURNClient.allocate(
                        .init(server: server.udpAddress, transport: .udp, username: "u", password: "p", retransmission: .quick))
                    do {
                        try await client.createPermission(for: [peer])
                        [UInt8(1)].withUnsafeBytes { bytes in
                            // The stranger's address has no permission: dropped at the relay.
                            _ = UDPSocket.withSockaddr(allocation.relayed) { sendto(strangerFD, bytes.baseAddress, 1, 0, $0, $1) }
                        }
                        [UInt8(2)].withUnsafeBytes { bytes in
                            _ = UDPSocket.withSockaddr(allocation.relayed) { sendto(peerFD, bytes.baseAddress, 1, 0, $0, $1) }
                        }
                        var inbound = client.received.makeAsyncIterator()
                        // Without a channel the datagram arrives as a Data indication, the stranger's never.
                        let got = await inbound.next()
                        #expect(got?.peer == peer)
                        #expect(got?.payload == [2])
                    } catch {
                        await client.close()
                        throw error
                    }
                    await client.close()
                }
            }
        }
    }
}
