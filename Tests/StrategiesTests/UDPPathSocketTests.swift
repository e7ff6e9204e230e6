import STUNLite
import Testing
import Traversal
@testable import Strategies

/// A path socket the kernel fails mid-session is opened again and the session's messages go on; one we close stays closed.
@Suite struct UDPPathSocketTests {
    /// Both ends of a session on loopback, with their transports to each other.
    func pair() async throws -> (a: UDPPathSocket, b: UDPPathSocket, ab: UDPPeerTransport, ba: UDPPeerTransport) {
        let loopback = TransportAddress(ip: .v4(0x7F00_0001), port: 0)
        let token: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        let a = try await UDPPathSocket.open(local: loopback).session(token: token, budget: nil)
        let b = try await UDPPathSocket.open(local: loopback).session(token: token, budget: nil)
        return (a, b, a.transport(to: b.client.localAddress), b.transport(to: a.client.localAddress))
    }

    /// Waits (at most 2 s) until `socket` was opened again `times` times.
    func reopened(_ socket: UDPPathSocket, times: Int) async throws -> Bool {
        for _ in 0..<200 where socket.reopened < times { try await Task.sleep(for: .milliseconds(10)) }
        return socket.reopened == times
    }

    @Test func aSocketTheKernelFailsIsOpenedAgainOnItsPortAndTheSessionGoesOn() async throws {
        let (a, b, ab, ba) = try await pair()
        let port = a.client.localAddress.port
        try await ab.send([PeerWire.sealed, 1])
        #expect(try await ba.receive() == [PeerWire.sealed, 1])
        // A send the kernel refuses with an error NIO treats as fatal (EACCES: broadcast without SO_BROADCAST;
        // the same path as ENETUNREACH while a host changes networks): NIO closes the socket.
        let broadcast = TransportAddress(ip: .v4(0xFFFF_FFFF), port: 9)
        await #expect(throws: (any Error).self) { try await a.client.send([0], to: broadcast) }
        #expect(try await reopened(a, times: 1), "the failed socket was not opened again")
        #expect(a.client.localAddress.port == port, "the port was free again, so the socket is back on it")
        // Both ways, on the same transports.
        try await ab.send([PeerWire.sealed, 2])
        #expect(try await ba.receive() == [PeerWire.sealed, 2])
        try await ba.send([PeerWire.sealed, 3])
        #expect(try await ab.receive() == [PeerWire.sealed, 3])
        await a.close()
        await b.close()
        await #expect(throws: (any Error).self) { _ = try await ab.receive() }
        #expect(a.reopened == 1, "a socket we closed is not opened again")
    }

    @Test func reopeningIsBounded() async throws {
        let (a, b, ab, _) = try await pair()
        defer { Task { await a.close(); await b.close() } }
        let broadcast = TransportAddress(ip: .v4(0xFFFF_FFFF), port: 9)
        for n in 1...UDPPathSocket.maxReopens {
            try? await a.client.send([0], to: broadcast)
            #expect(try await reopened(a, times: n))
        }
        // One failure more than the bound: the socket stays closed and the session's reader ends.
        try? await a.client.send([0], to: broadcast)
        await #expect(throws: (any Error).self) { _ = try await ab.receive() }
        #expect(a.reopened == UDPPathSocket.maxReopens)
    }
}
