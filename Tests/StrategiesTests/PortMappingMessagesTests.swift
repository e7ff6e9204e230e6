import STUNLite
@testable import Strategies
import Testing
import Traversal

/// NAT-PMP (RFC 6886) and PCP MAP (RFC 6887) encoders and decoders, including every malformed-answer class.
struct PortMappingMessagesTests {
    static let gatewayIP = IPAddress("203.0.113.101")!
    static let nonce: [UInt8] = Array(1...12)

    // MARK: NAT-PMP

    @Test func natPMPRequestsHaveTheRFCLayout() {
        #expect(NATPMPMessage.externalAddressRequest() == [0, 0])
        #expect(NATPMPMessage.mapRequest(internalPort: 0x1234, suggestedExternalPort: 0x5678, lifetime: 7200)
                == [0, 1, 0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x1c, 0x20])
    }

    @Test func natPMPAnswersDecode() throws {
        let address: [UInt8] = [0, 128, 0, 0, 0, 0, 0, 42, 203, 0, 113, 101]
        let a = try NATPMPMessage.decodeExternalAddress(address)
        #expect(a.address == Self.gatewayIP && a.epoch == 42)
        let map: [UInt8] = [0, 129, 0, 0, 0, 0, 0, 43, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x1c, 0x20]
        let m = try NATPMPMessage.decodeMap(map, internalPort: 40000, externalIP: Self.gatewayIP)
        #expect(m == GrantedMapping(external: TransportAddress(ip: Self.gatewayIP, port: 40001), lifetime: 7200, epoch: 43))
    }

    @Test(arguments: [
        ([0, 129, 0, 0, 0, 0, 0, 43, 0x9c, 0x40], PortMappingError.Code.malformed),                         // short
        ([0, 129, 0, 0, 0, 0, 0, 43, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x1c, 0x20, 0], .malformed),            // long
        ([1, 129, 0, 0, 0, 0, 0, 43, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x1c, 0x20], .unsupportedVersion),      // version
        ([0, 128, 0, 0, 0, 0, 0, 43, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x1c, 0x20], .mismatched),              // opcode
        ([0, 129, 0, 2, 0, 0, 0, 43, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x1c, 0x20], .refused),                 // result 2
        ([0, 129, 0, 1, 0, 0, 0, 43, 0, 0, 0, 0, 0, 0, 0, 0], .unsupportedVersion),                        // result 1
        ([0, 129, 0, 0, 0, 0, 0, 43, 0x9c, 0x41, 0x9c, 0x41, 0, 0, 0x1c, 0x20], .mismatched),              // other port
        ([0, 129, 0, 0, 0, 0, 0, 43, 0x9c, 0x40, 0, 0, 0, 0, 0x1c, 0x20], .malformed),                     // port 0
        ([], .malformed),
    ] as [([UInt8], PortMappingError.Code)])
    func natPMPMalformedMapAnswersAreTypedErrors(bytes: [UInt8], code: PortMappingError.Code) {
        #expect { try NATPMPMessage.decodeMap(bytes, internalPort: 40000, externalIP: Self.gatewayIP) } throws: {
            ($0 as? PortMappingError)?.code == code
        }
    }

    // MARK: PCP

    static func pcpResponse(result: UInt8 = 0, lifetime: UInt32 = 7200, epoch: UInt32 = 9, nonce: [UInt8] = nonce,
                            proto: UInt8 = 17, internalPort: UInt16 = 40000, port: UInt16 = 40000) -> [UInt8] {
        var r: [UInt8] = [2, 0x81, 0, result] + lifetime.bigEndianBytes + epoch.bigEndianBytes + [UInt8](repeating: 0, count: 12)
        r += nonce + [proto, 0, 0, 0] + internalPort.bigEndianBytes + port.bigEndianBytes
        r += [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 101]
        return r
    }

    @Test func pcpMapRequestHasTheRFCLayout() {
        let r = PCPMessage.mapRequest(client: IPAddress("10.1.0.10")!, nonce: Self.nonce, internalPort: 40000, suggestedExternal: nil, lifetime: 7200)
        #expect(r.count == 60)
        #expect(Array(r[0..<8]) == [2, 1, 0, 0, 0, 0, 0x1c, 0x20])
        #expect(Array(r[8..<24]) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 0, 10])
        #expect(Array(r[24..<36]) == Self.nonce)
        #expect(r[36] == 17 && Array(r[40..<44]) == [0x9c, 0x40, 0, 0] && r[44...].allSatisfy { $0 == 0 })
    }

    @Test func pcpMapResponseDecodes() throws {
        let m = try PCPMessage.decodeMap(Self.pcpResponse(), nonce: Self.nonce, internalPort: 40000)
        #expect(m == GrantedMapping(external: TransportAddress(ip: Self.gatewayIP, port: 40000), lifetime: 7200, epoch: 9))
    }

    @Test func pcpAnswersThatAreNotOursOrBrokenAreTypedErrors() {
        let cases: [([UInt8], PortMappingError.Code)] = [
            (Array(Self.pcpResponse().prefix(40)), .malformed),
            (Self.pcpResponse() + [0, 0], .malformed),                                 // not a multiple of 4
            (Self.pcpResponse(nonce: Array(repeating: 9, count: 12)), .mismatched),
            (Self.pcpResponse(proto: 6), .mismatched),
            (Self.pcpResponse(internalPort: 1), .mismatched),
            (Self.pcpResponse(result: 2), .refused),
            (Self.pcpResponse(result: 1), .unsupportedVersion),
            (Self.pcpResponse(port: 0), .malformed),
            ([0, 129, 0, 1, 0, 0, 0, 0], .unsupportedVersion),                          // a NAT-PMP gateway's answer
            ([UInt8](repeating: 2, count: 1104), .malformed),
        ]
        for (bytes, code) in cases {
            #expect { try PCPMessage.decodeMap(bytes, nonce: Self.nonce, internalPort: 40000) } throws: {
                ($0 as? PortMappingError)?.code == code
            }
        }
    }

    @Test func pcpAnnounceAsksWithoutMappingAndItsAnswerIsChecked() throws {
        let request = PCPMessage.announceRequest(client: IPAddress("10.1.0.10")!)
        #expect(request.count == 24 && request[0] == 2 && request[1] == 0 && request[4..<8].allSatisfy { $0 == 0 })
        let ok: [UInt8] = [2, 0x80, 0, 0] + [UInt8](repeating: 0, count: 20)
        try PCPMessage.decodeAnnounce(ok)
        let cases: [([UInt8], PortMappingError.Code)] = [
            ([2, 0x80, 0, 2] + [UInt8](repeating: 0, count: 20), .refused),
            ([2, 0x81, 0, 0] + [UInt8](repeating: 0, count: 20), .mismatched),
            ([2, 0x80, 0, 0, 0, 0], .malformed),
            ([0, 128, 0, 1], .unsupportedVersion),
        ]
        for (bytes, code) in cases {
            #expect { try PCPMessage.decodeAnnounce(bytes) } throws: { ($0 as? PortMappingError)?.code == code }
        }
    }

    @Test func epochRulesOfRFC6887Section8Point5() {
        let t0 = ContinuousClock.now
        #expect(!PCPMessage.epochSaysStateLost(previous: 100, previousAt: t0, current: 160, now: t0 + .seconds(60)))
        #expect(PCPMessage.epochSaysStateLost(previous: 100, previousAt: t0, current: 5, now: t0 + .seconds(60)))      // restarted
        #expect(PCPMessage.epochSaysStateLost(previous: 100, previousAt: t0, current: 110, now: t0 + .seconds(600)))   // too slow
        #expect(!PCPMessage.epochSaysStateLost(previous: 100, previousAt: t0, current: 99, now: t0 + .seconds(1)))     // 1 s back: allowed
    }

    // MARK: Gateway

    @Test func defaultGatewayComesFromTheRouteTable() {
        let table = """
        Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
        eth0\t0000010A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
        eth0\t00000000\t0100010A\t0003\t0\t0\t0\t00000000\t0\t0\t0
        """
        #expect(GatewayRoute.defaultGateway(routeTable: table) == IPAddress("10.1.0.1"))
        #expect(GatewayRoute.defaultGateway(routeTable: "Iface\tDestination\n") == nil)
    }

    @Test func catalogNamesAPortMappingRestrictedToOneProtocol() throws {
        let s = try StrategyCatalog.named(["port-mapping:nat-pmp"])
        #expect((s.first as? RouterPortMapping)?.protocols == [.natPMP] && s.first?.id == "port-mapping")
        #expect((try StrategyCatalog.named(["port-mapping"]).first as? RouterPortMapping)?.protocols == Set(PortMappingProtocol.allCases))
        #expect(throws: StrategyError.self) { try StrategyCatalog.named(["port-mapping:carrier-pigeon"]) }
    }
}
