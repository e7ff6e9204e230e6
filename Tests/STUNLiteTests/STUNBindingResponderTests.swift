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

    /// What an RFC 3489 client sends: no magic cookie, a 128-bit transaction ID (RFC 3489 §11.1).
    static let classicTransaction = "0001 0203 0405 0607 0809 0a0b 0c0d 0e0f"
    /// RFC 3489 test I: a bare Binding Request.
    static let classicTestI = hex("0001 0000" + classicTransaction)
    /// RFC 3489 test II: CHANGE-REQUEST with "change IP" and "change port" (flags 0x6, RFC 3489 §11.2.4).
    static let classicTestII = hex("0001 0008" + classicTransaction + "0003 0004 00000006")

    @Test func classicClientGetsSourceAndChangedAddressWithBehaviourDiscovery() throws {
        let testI = try #require(Self.full.respond(to: Self.classicTestI, from: Self.client, on: .primary, transport: .udp))
        #expect(testI.bytes.count == 56 && testI.bytes.count <= 3 * Self.classicTestI.count)
        #expect(Array(testI.bytes[0..<4]) == [0x01, 0x01, 0x00, 0x24], "Binding success, 36 bytes of attributes")
        #expect(Array(testI.bytes[4..<20]) == Array(Self.classicTestI[4..<20]), "the whole 128-bit transaction ID comes back")
        let m = try STUNMessage.decode(testI.bytes)
        #expect(m.attributes.map(\.type) == [.mappedAddress, .changedAddress, .sourceAddress])
        #expect(try m.attribute(MappedAddress.self)?.address == Self.client)
        #expect(try m.attribute(SourceAddress.self)?.address == Self.a1p1)
        #expect(try m.attribute(ChangedAddress.self)?.address == Self.a2p2)
        #expect(testI.from == .primary && testI.to == Self.client)

        // Test II leaves from A2:P2, and says so; test I sent to CHANGED-ADDRESS compares mappings (RFC 3489 §10.1).
        let testII = try #require(Self.full.respond(to: Self.classicTestII, from: Self.client, on: .primary, transport: .udp))
        #expect(Self.full.addresses[testII.from] == Self.a2p2)
        let m2 = try STUNMessage.decode(testII.bytes)
        #expect(try m2.attribute(SourceAddress.self)?.address == Self.a2p2)
        #expect(try m2.attribute(ChangedAddress.self)?.address == Self.a2p2)
        #expect(try m2.attribute(MappedAddress.self)?.address == Self.client)
        let other = STUNSocketRole(alternateIP: true, alternatePort: true)
        let testIOther = try #require(Self.full.respond(to: Self.classicTestI, from: Self.client, on: other, transport: .udp))
        let m3 = try STUNMessage.decode(testIOther.bytes)
        #expect(try m3.attribute(SourceAddress.self)?.address == Self.a2p2)
        #expect(try m3.attribute(ChangedAddress.self)?.address == Self.a1p1)
    }

    @Test func classicClientWithoutAnAlternateAddressGetsNoChangedAddressAnd420ForChangeRequest() throws {
        let testI = try #require(Self.single.respond(to: Self.classicTestI, from: Self.client, on: .primary, transport: .udp))
        let m = try STUNMessage.decode(testI.bytes)
        #expect(m.attributes.map(\.type) == [.mappedAddress, .sourceAddress])
        let testII = try #require(Self.single.respond(to: Self.classicTestII, from: Self.client, on: .primary, transport: .udp))
        let e = try STUNMessage.decode(testII.bytes)
        #expect(e.messageClass == .errorResponse && e.isClassic)
        #expect(try e.attribute(ErrorCode.self)?.code == 420)
        #expect(try e.attribute(UnknownAttributes.self)?.types == [.changeRequest])
    }

    @Test func behaviourDiscoveryResponseCarriesMappedAddressBesideXORMappedAddress() throws {
        // 28 bytes of request (CHANGE-REQUEST, or FINGERPRINT) leave room for every RFC 5780 §6.1 attribute.
        for bytes in [request { $0.append(ChangeRequest(changeIP: false, changePort: false)) }, request(fingerprint: true)] {
            let reply = try #require(Self.full.respond(to: bytes, from: Self.client, on: .primary, transport: .udp))
            let m = try STUNMessage.decode(reply.bytes)
            #expect(try m.attribute(XORMappedAddress.self)?.address == Self.client)
            #expect(try m.attribute(MappedAddress.self)?.address == Self.client)
            #expect(m.contains(.otherAddress) && m.contains(.responseOrigin))
            #expect(reply.bytes.count <= 3 * bytes.count)
        }
        // The bare 20-byte request's 60-byte budget holds XOR-MAPPED-ADDRESS, OTHER-ADDRESS and MAPPED-ADDRESS (56):
        // RESPONSE-ORIGIN, the address the client sent to, is left out.
        let bare = try #require(Self.full.respond(to: request(), from: Self.client, on: .primary, transport: .udp))
        #expect(bare.bytes.count == 56)
        #expect(try STUNMessage.decode(bare.bytes).attributes.map(\.type) == [.xorMappedAddress, .otherAddress, .mappedAddress])
        // Without behaviour discovery there is no MAPPED-ADDRESS for a modern client.
        let single = try #require(Self.single.respond(to: request(fingerprint: true), from: Self.client, on: .primary, transport: .udp))
        #expect(try !STUNMessage.decode(single.bytes).contains(.mappedAddress))
    }

    @Test func paddingIsEchoedWithTheRequestsLength() throws {
        // turnutils_natdiscovery -P: CHANGE-REQUEST (change IP and port) and 1500 bytes of PADDING.
        let padded = hex("0001 05e8 2112a442 a1a2a3a4a5a6a7a8a9aaabac 0003 0004 00000006 0026 05dc")
            + [UInt8](repeating: 0x5A, count: 1500)
        let reply = try #require(Self.full.respond(to: padded, from: Self.client, on: .primary, transport: .udp))
        #expect(Self.full.addresses[reply.from] == Self.a2p2)
        let m = try STUNMessage.decode(reply.bytes)
        #expect(m.messageClass == .successResponse)
        #expect(try m.attribute(Padding.self)?.count == 1500)
        #expect(m.attributes.first { $0.type == .padding }?.value.allSatisfy { $0 == 0 } == true, "the request's bytes are not reflected")
        #expect(m.attributes.map(\.type) == [.xorMappedAddress, .padding, .otherAddress, .mappedAddress, .responseOrigin])
        #expect(reply.bytes.count == padded.count + 40, "\(reply.bytes.count) bytes for \(padded.count)")
        // Even the smallest PADDING, none at all, keeps every attribute inside the budget over IPv4 (72 of 72 bytes).
        let empty = hex("0001 0004 2112a442 a1a2a3a4a5a6a7a8a9aaabac 0026 0000")
        let small = try #require(Self.full.respond(to: empty, from: Self.client, on: .primary, transport: .udp))
        #expect(small.bytes.count == 72)
        #expect(try STUNMessage.decode(small.bytes).attributes.map(\.type) == [.xorMappedAddress, .padding, .otherAddress, .mappedAddress, .responseOrigin])
        // A server without an alternate address echoes PADDING as well (RFC 5780 §5).
        let single = try #require(Self.single.respond(to: empty, from: Self.client, on: .primary, transport: .udp))
        #expect(try STUNMessage.decode(single.bytes).attributes.map(\.type) == [.xorMappedAddress, .padding])
    }

    @Test func paddingWithResponsePortIs400() throws {
        // RESPONSE-PORT 5555 and 4 bytes of PADDING (RFC 5780 §6.1, §7.5).
        let bytes = hex("0001 0010 2112a442 b1b2b3b4b5b6b7b8b9babbbc 0027 0004 15b3 0000 0026 0004 00000000")
        for responder in [Self.full, Self.single] {
            for transport in [STUNTransport.udp, .tcp] {
                let reply = try #require(responder.respond(to: bytes, from: Self.client, on: .primary, transport: transport))
                let m = try STUNMessage.decode(reply.bytes)
                #expect(m.messageClass == .errorResponse)
                #expect(try m.attribute(ErrorCode.self)?.code == 400)
                #expect(reply.to == Self.client && reply.from == .primary, "the error goes back where the request came from")
                #expect(reply.bytes.count <= 3 * bytes.count)
            }
        }
        // Either alone is fine.
        let portOnly = request { $0.append(ResponsePort(5555)) }
        #expect(try STUNMessage.decode(#require(Self.full.respond(to: portOnly, from: Self.client, on: .primary, transport: .udp)).bytes).messageClass == .successResponse)
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
            Self.classicTestI, Self.classicTestII,
            request { $0.append(Padding(count: 0)) }, request { $0.append(Padding(count: 4)) },
            request { $0.append(ResponsePort(5555)); $0.append(Padding(count: 0)) },
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
        #expect(checked >= 50)
        // The smallest valid request over IPv4 still gets what RFC 5780 clients act on: both mapped addresses and OTHER-ADDRESS.
        let reply = try #require(Self.full.respond(to: requests[0], from: Self.client, on: .primary, transport: .udp))
        let m = try STUNMessage.decode(reply.bytes)
        #expect(m.contains(.xorMappedAddress) && m.contains(.otherAddress) && m.contains(.mappedAddress))
        #expect(Double(reply.bytes.count) / 20 <= 3)
    }
}
