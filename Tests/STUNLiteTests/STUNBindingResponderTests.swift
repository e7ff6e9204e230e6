import Testing
@testable import STUNLite

/// The server's Binding logic, without sockets (RFC 8489 §6.3, RFC 5780 §6).
@Suite struct STUNBindingResponderTests {
    static let a1p1 = TransportAddress("198.51.100.1:3478")!
    static let a1p2 = TransportAddress("198.51.100.1:3479")!
    static let a2p1 = TransportAddress("198.51.100.2:3478")!
    static let a2p2 = TransportAddress("198.51.100.2:3479")!
    static let client = TransportAddress("203.0.113.7:40000")!
    static let client6 = TransportAddress("[2001:db8::7]:40000")!

    static let full = STUNBindingResponder(addresses: [
        .primary: a1p1, STUNSocketRole(alternateIP: false, alternatePort: true): a1p2,
        STUNSocketRole(alternateIP: true, alternatePort: false): a2p1, STUNSocketRole(alternateIP: true, alternatePort: true): a2p2,
    ])
    static let single = STUNBindingResponder(addresses: [.primary: a1p1])

    func request(_ build: (inout STUNMessage) -> Void = { _ in }, fingerprint: Bool = false) -> [UInt8] {
        var m = STUNMessage(method: .binding, messageClass: .request)
        build(&m)
        return m.encode(fingerprint: fingerprint)
    }

    @Test func answersWithXORMappedAddressOnly() throws {
        let reply = try #require(Self.single.respond(to: request(), from: Self.client, on: .primary, transport: .udp))
        let m = try STUNMessage.decode(reply.bytes)
        #expect(m.messageClass == .successResponse)
        #expect(try m.attribute(XORMappedAddress.self)?.address == Self.client)
        #expect(try m.attribute(MappedAddress.self) == nil)
        #expect(m.fingerprintValid == nil)
        #expect(reply.from == .primary && reply.to == Self.client)
    }

    @Test func classicRequestGetsMappedAddressAndItsCookieBack() throws {
        var classic = request()
        classic[4] = 0xDE
        let reply = try #require(Self.full.respond(to: classic, from: Self.client, on: .primary, transport: .udp))
        let m = try STUNMessage.decode(reply.bytes)
        #expect(m.isClassic && m.cookie >> 24 == 0xDE)
        #expect(try m.attribute(MappedAddress.self)?.address == Self.client)
        #expect(try m.attribute(XORMappedAddress.self) == nil)
        #expect(try m.attribute(OtherAddress.self) == nil)
    }

    @Test func fingerprintOnlyWhenTheRequestHadOne() throws {
        let reply = try #require(Self.single.respond(to: request(fingerprint: true), from: Self.client, on: .primary, transport: .udp))
        #expect(try STUNMessage.decode(reply.bytes).fingerprintValid == true)
        var bad = request(fingerprint: true)
        bad[bad.count - 1] ^= 1
        #expect(Self.single.respond(to: bad, from: Self.client, on: .primary, transport: .udp) == nil)
    }

    @Test func changeRequestPicksTheSocketAndOtherAddressPointsAcross() throws {
        for (flags, expected) in [((true, true), Self.a2p2), ((true, false), Self.a2p1), ((false, true), Self.a1p2), ((false, false), Self.a1p1)] {
            let bytes = request { $0.append(ChangeRequest(changeIP: flags.0, changePort: flags.1)) }
            let reply = try #require(Self.full.respond(to: bytes, from: Self.client, on: .primary, transport: .udp))
            #expect(Self.full.addresses[reply.from] == expected)
            let m = try STUNMessage.decode(reply.bytes)
            #expect(try m.attribute(OtherAddress.self)?.address == Self.a2p2)
            #expect(try m.attribute(ResponseOrigin.self)?.address == expected)
        }
        // Received on A2:P2, OTHER-ADDRESS is A1:P1.
        let reply = try #require(Self.full.respond(to: request(), from: Self.client,
                                                   on: STUNSocketRole(alternateIP: true, alternatePort: true), transport: .udp))
        #expect(try STUNMessage.decode(reply.bytes).attribute(OtherAddress.self)?.address == Self.a1p1)
    }

    @Test func changeRequestWithoutAlternateAddressIs420() throws {
        let bytes = request { $0.append(ChangeRequest(changeIP: true, changePort: false)) }
        let reply = try #require(Self.single.respond(to: bytes, from: Self.client, on: .primary, transport: .udp))
        let m = try STUNMessage.decode(reply.bytes)
        #expect(m.messageClass == .errorResponse)
        #expect(try m.attribute(ErrorCode.self)?.code == 420)
        #expect(try m.attribute(UnknownAttributes.self)?.types == [.changeRequest])
    }

    @Test func responsePortRedirectsOverUDPOnly() throws {
        let bytes = request { $0.append(ResponsePort(5555)) }
        #expect(Self.full.respond(to: bytes, from: Self.client, on: .primary, transport: .udp)?.to.port == 5555)
        #expect(Self.full.respond(to: bytes, from: Self.client, on: .primary, transport: .tcp)?.to.port == 40000)
    }

    @Test func unknownComprehensionRequiredAttributeIs420ListingIt() throws {
        let bytes = request { $0.attributes.append(STUNAttribute(type: STUNAttributeType(0x7ABC), value: [1, 2, 3, 4])) }
        let reply = try #require(Self.single.respond(to: bytes, from: Self.client, on: .primary, transport: .udp))
        let m = try STUNMessage.decode(reply.bytes)
        #expect(try m.attribute(ErrorCode.self)?.code == 420)
        #expect(try m.attribute(UnknownAttributes.self)?.types == [STUNAttributeType(0x7ABC)])
        // An unknown comprehension-optional attribute is fine.
        let optional = request { $0.attributes.append(STUNAttribute(type: STUNAttributeType(0xC001), value: [1, 2, 3, 4])) }
        #expect(try STUNMessage.decode(#require(Self.single.respond(to: optional, from: Self.client, on: .primary, transport: .udp)).bytes).messageClass == .successResponse)
    }

    @Test func otherMethodsAre400AndNonRequestsAreDropped() throws {
        var m = STUNMessage(method: STUNMethod(rawValue: 0x003), messageClass: .request)
        let reply = try #require(Self.single.respond(to: m.encode(), from: Self.client, on: .primary, transport: .udp))
        #expect(try STUNMessage.decode(reply.bytes).attribute(ErrorCode.self)?.code == 400)
        for cls in [STUNClass.indication, .successResponse, .errorResponse] {
            m = STUNMessage(method: .binding, messageClass: cls)
            #expect(Self.single.respond(to: m.encode(), from: Self.client, on: .primary, transport: .udp) == nil)
        }
        #expect(Self.single.respond(to: [0x80, 1, 2, 3], from: Self.client, on: .primary, transport: .udp) == nil)
        #expect(Self.single.respond(to: Array(request().prefix(19)), from: Self.client, on: .primary, transport: .udp) == nil)
    }

    /// Reflection attacks use STUN servers as amplifiers: no reply may exceed 3× its request, starting with the smallest valid one (20 bytes).
    @Test func replyIsNeverMoreThanThreeTimesTheRequest() throws {
        let withSoftware = STUNBindingResponder(addresses: Self.full.addresses, software: "trav stun server, a long software string")
        var classic = request()
        classic[4] = 0
        let requests: [[UInt8]] = [
            request(), request(fingerprint: true), classic,
            request { $0.append(ChangeRequest(changeIP: true, changePort: true)) },
            request { $0.attributes.append(STUNAttribute(type: STUNAttributeType(0x7ABC), value: [])) },
            STUNMessage(method: STUNMethod(rawValue: 0x0FF), messageClass: .request).encode(),
        ]
        #expect(requests[0].count == 20)
        var checked = 0
        for responder in [Self.single, Self.full, withSoftware] {
            for source in [Self.client, Self.client6] {
                for r in requests {
                    guard let reply = responder.respond(to: r, from: source, on: .primary, transport: .udp) else { continue }
                    checked += 1
                    #expect(reply.bytes.count <= STUNBindingResponder.maxAmplification * r.count,
                            "\(reply.bytes.count) bytes for a \(r.count)-byte request")
                }
            }
        }
        #expect(checked >= 30)
        // The smallest valid request over IPv4 still gets everything RFC 5780 needs.
        let reply = try #require(Self.full.respond(to: requests[0], from: Self.client, on: .primary, transport: .udp))
        let m = try STUNMessage.decode(reply.bytes)
        #expect(m.contains(.xorMappedAddress) && m.contains(.otherAddress) && m.contains(.responseOrigin))
        #expect(Double(reply.bytes.count) / 20 <= 3)
    }
}
