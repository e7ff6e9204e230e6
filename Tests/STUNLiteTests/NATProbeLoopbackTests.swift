import NIOCore
import Testing
@testable import STUNLite

/// The runner against our own STUNServer on loopback: no NAT, so `open`/`none`; and a server
/// without an alternate IP is reported as not supporting CHANGE-REQUEST, never misclassified.
@Suite struct NATProbeLoopbackTests {
    /// Loopback needs no TCP port other than the server's own, and no lifetime.
    static let options = NATProbeOptions()

    @Test func loopbackWithAlternateIPIsOpenWithoutNAT() async throws {
        try await STUNLoopbackTests.withServer(alternate: true) { server in
            let primary = try #require(server.udpAddresses[.primary])
            let r = await NATProbe.run(server: primary, options: Self.options)
            #expect(r.udp == .yes)
            #expect(r.mapping == NATBehaviour.none)
            #expect(r.filtering == .endpointIndependent)
            #expect(r.natType == .open)
            #expect(r.changeRequestSupported == .yes)
            #expect(r.mappedAddress == r.localAddress && r.mappedAddress?.ip == IPAddress("127.0.0.1"))
            #expect(r.portPreservation == .yes)
            #expect(r.hairpinning == .notTested, "no NAT: nothing to hairpin through")
            #expect(r.tcp == .yes && r.tcpPorts.map(\.port) == [primary.port])
            #expect(r.latencyMs != nil)
        }
    }

    @Test func loopbackWithoutAlternateIPReportsChangeRequestUnsupported() async throws {
        try await STUNLoopbackTests.withServer(alternate: false) { server in
            let primary = try #require(server.udpAddresses[.primary])
            let r = await NATProbe.run(server: primary, options: NATProbeOptions(tcpPorts: []))
            #expect(r.udp == .yes)
            #expect(r.changeRequestSupported == .no)
            #expect(r.mapping == NATBehaviour.none)
            #expect(r.filtering == .unknown)
            #expect(r.natType == .unknown)
            #expect(r.tcp == .notTested)
            #expect(r.notes.contains { $0.contains("420") }, "\(r.notes)")
        }
    }

    @Test func nobodyListeningIsReportedAsUDPBlockedWithinSeconds() async throws {
        // Bind and close a socket to get a port nobody answers on.
        let probe = try await STUNUDPClient.bind(to: TransportAddress("127.0.0.1:0")!)
        let silent = probe.localAddress
        await probe.close()
        let options = NATProbeOptions(tcpPorts: [], hairpin: false)
        // "Within seconds" is a property of the schedule, not of this machine's load: check the schedule.
        #expect(options.policy.totalTimeout <= .seconds(3))
        let r = await NATProbe.run(server: silent, options: options)
        #expect(r.udp == .no)
        #expect(r.natType == .udpBlocked)
    }
}
