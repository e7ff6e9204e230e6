import Foundation
import Testing
import STUNLite
@testable import NATLab
@testable import TURNLite

/// EVEN-PORT with the R bit and RESERVATION-TOKEN (RFC 8656 §7.2, §14.6, §14.9): in the state machine,
/// and coturn's `turnutils_uclient` in its default RTP/RTCP mode against our relay.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct TURNReservationTests {
    static let rtp = TransportAddress("198.51.100.1:50000")!
    static let rtcp = TransportAddress("198.51.100.1:50001")!

    /// Allocates with EVEN-PORT R=1 and opens the pair; returns the success response.
    static func allocatePair(_ h: inout MachineHarness) throws -> STUNMessage {
        let a = h.request(MachineHarness.allocateRequest { $0.append(EvenPort(reserveNext: true)) })
        guard case .openRelayReservingNext(let id, .ipv4)? = a.first else {
            throw TURNError(.badResponse, detail: "no openRelayReservingNext: \(a)")
        }
        return try #require(h.response(h.machine.relayOpened(id, at: rtp, reserving: rtcp, now: h.now)))
    }

    @Test func evenPortWithTheRBitAnswersWithATokenForTheNextPort() throws {
        var h = MachineHarness()
        let r = try Self.allocatePair(&h)
        #expect(try r.attribute(XORRelayedAddress.self)?.address == Self.rtp)
        let token = try #require(try r.attribute(ReservationToken.self)?.token)
        #expect(token.count == 8)
        #expect(h.machine.reservationCount == 1)

        // Another 5-tuple claims the reserved port with the token, once.
        h.ft.client.port += 1
        let claim = MachineHarness.allocateRequest { $0.append(ReservationToken(token)) }
        let a = h.request(claim)
        guard case .adoptReservedRelay(let id, Self.rtcp)? = a.first else { Issue.record("\(a)"); return }
        #expect(h.machine.reservationCount == 0)
        let done = h.response(h.machine.relayOpened(id, at: Self.rtcp, now: h.now))
        #expect(try done?.attribute(XORRelayedAddress.self)?.address == Self.rtcp)
        h.ft.client.port += 1
        #expect(MachineHarness.code(h.response(h.request(claim))) == 508, "a token is good once")
    }

    @Test func anUnclaimedReservationIsReleasedAfterThirtySeconds() throws {
        var h = MachineHarness()
        _ = try Self.allocatePair(&h)
        #expect(h.machine.expire(now: h.now + TURNTimers.reservationLifetime - 1).isEmpty)
        #expect(h.machine.nextDeadline! <= h.now + TURNTimers.reservationLifetime)
        #expect(h.machine.expire(now: h.now + TURNTimers.reservationLifetime) == [.releaseReservation(Self.rtcp)])
        #expect(h.machine.reservationCount == 0)
    }

    @Test func aTokenWithEvenPortOrAFamilyIsABadRequest() throws {
        var h = MachineHarness()
        let token = try #require(try Self.allocatePair(&h).attribute(ReservationToken.self)?.token)
        h.ft.client.port += 1
        let r = h.response(h.request(MachineHarness.allocateRequest {
            $0.append(ReservationToken(token))
            $0.append(EvenPort(reserveNext: false))
        }))
        #expect(MachineHarness.code(r) == 400)
        #expect(h.machine.reservationCount == 1)
    }

    @Test func aPairOpenedForAVanishedAllocationReleasesTheHeldPort() {
        var h = MachineHarness()
        let a = h.machine.relayOpened(TURNAllocationID(99), at: Self.rtp, reserving: Self.rtcp, now: h.now)
        #expect(a == [.closeRelay(TURNAllocationID(99)), .releaseReservation(Self.rtcp)])
    }

    @Test(.enabled(if: TURNInteropTests.coturnMissing == nil, Comment(rawValue: TURNInteropTests.coturnMissing ?? "")))
    func coturnUClientInItsDefaultRTPAndRTCPModeRelaysThroughOurServer() async throws {
        try await TURNInteropTests.withOurServer({ $0.channelNumbers = TURNServerConfiguration.rfc5766ChannelNumbers }) { server in
            // No -c: each client allocates an RTP port with EVEN-PORT R=1 and its RTCP port with the token.
            let out = try await TURNInteropTests.uclientLosesNothing(["-v", "-y", "-n", "50", "-m", "2", "-l", "160", "-z", "5",
                                                                      "-u", "u", "-w", "p", "-p", "\(server.udpAddress.port)", "127.0.0.1"])
            // "Received relay addr: 127.0.0.1:P": every RTCP port (odd) is the one reserved next to an RTP port.
            let ports = out.split(separator: "\n").compactMap { line -> UInt16? in
                guard let r = line.range(of: "Received relay addr: ") else { return nil }
                return TransportAddress(String(line[r.upperBound...]).trimmingCharacters(in: .whitespaces))?.port
            }
            let rtcp = ports.filter { $0 % 2 == 1 }
            #expect(rtcp.count >= 2, "\(ports)")
            #expect(rtcp.allSatisfy { ports.contains($0 - 1) }, "\(ports)")
        }
    }
}
