import Testing
@testable import STUNLite

/// RFC 5769 §2 (all four sample messages) and RFC 8489 Appendix B.1 as corrected by errata 6268.
@Suite struct STUNVectorTests {
    static let password = "VOkJxbRl1RmTxUk/WvJxBt"

    /// RFC 5769 §2.1 sample request (short-term credentials).
    static let request = hex("""
        000100582112a442b7e7a701bc34d686fa87dfae
        802200105354554e207465737420636c69656e74
        002400046e0001ff
        80290008932ff9b151263b36
        000600096576746a3a68367659202020
        000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
        80280004e57a3bcf
        """)
    /// RFC 5769 §2.2 sample IPv4 response.
    static let responseV4 = hex("""
        0101003c2112a442b7e7a701bc34d686fa87dfae
        8022000b7465737420766563746f7220
        002000080001a147e112a643
        000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7
        80280004c07d4c96
        """)
    /// RFC 5769 §2.3 sample IPv6 response.
    static let responseV6 = hex("""
        010100482112a442b7e7a701bc34d686fa87dfae
        8022000b7465737420766563746f7220
        002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9
        00080014a382954e4be67bf11784c97c8292c275bfe3ed41
        80280004c8fb0b4c
        """)
    /// RFC 5769 §2.4 sample request with long-term credentials.
    static let longTerm = hex("""
        000100602112a44278ad3433c6ad72c029da412e
        00060012e3839ee38388e383aae38383e382afe382b90000
        0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473
        41
        0014000b6578616d706c652e6f726700
        00080014f67024656dd64a3e02b8e0712e85c9a28ca89666
        """)
    /// RFC 8489 Appendix B.1 with errata 6268: USERHASH, NONCE, REALM, PASSWORD-ALGORITHM, MESSAGE-INTEGRITY-SHA256.
    static let sha256Request = hex("""
        000100902112a44278ad3433c6ad72c029da412e
        001e00204a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704
        001500296f624d61744a6f7332414141 43662f2f3439396b39353464364f4c33346f4c394653547679363473 41000000
        0014000b6578616d706c652e6f726700
        001d000400020000
        001c0020b5c7bf005b6c52a21c51c5e892f8192413 6296cb927c431493 09278cc6518e65
        """)
    static let matrixUser = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"

    @Test func sampleRequestDecodesVerifiesAndReencodes() throws {
        let m = try STUNMessage.decode(Self.request)
        #expect(m.method == .binding && m.messageClass == .request)
        #expect(m.transactionID.description == "b7e7a701bc34d686fa87dfae")
        #expect(try m.attribute(Software.self)?.text == "STUN test client")
        #expect(try m.attribute(Username.self)?.text == "evtj:h6vY")
        #expect(m.verifyMessageIntegrity(key: STUNCredentials.shortTermKey(password: Self.password)))
        #expect(!m.verifyMessageIntegrity(key: STUNCredentials.shortTermKey(password: "wrong")))
        #expect(m.fingerprintValid == true)
        #expect(m.encode() == Self.request)
        // Signing anew from the attributes before MESSAGE-INTEGRITY reproduces the vector exactly.
        var unsigned = m
        unsigned.attributes.removeAll { $0.type == .messageIntegrity || $0.type == .fingerprint }
        #expect(unsigned.encode(integrityKey: Array(Self.password.utf8), fingerprint: true) == Self.request)
    }

    @Test func sampleIPv4ResponseGivesTheMappedAddress() throws {
        let m = try STUNMessage.decode(Self.responseV4)
        #expect(m.messageClass == .successResponse)
        #expect(try m.attribute(XORMappedAddress.self)?.address == TransportAddress("192.0.2.1:32853"))
        #expect(m.verifyMessageIntegrity(key: Array(Self.password.utf8)))
        #expect(m.fingerprintValid == true)
        #expect(m.encode() == Self.responseV4)
        var unsigned = m
        unsigned.attributes.removeAll { $0.type == .messageIntegrity || $0.type == .fingerprint }
        #expect(unsigned.encode(integrityKey: Array(Self.password.utf8), fingerprint: true) == Self.responseV4)
    }

    @Test func sampleIPv6ResponseGivesTheMappedAddress() throws {
        let m = try STUNMessage.decode(Self.responseV6)
        #expect(try m.attribute(XORMappedAddress.self)?.address == TransportAddress("[2001:db8:1234:5678:11:2233:4455:6677]:32853"))
        #expect(m.verifyMessageIntegrity(key: Array(Self.password.utf8)))
        #expect(m.fingerprintValid == true)
        #expect(m.encode() == Self.responseV6)
        // Encoding the address again gives the vector's XORed bytes.
        var built = STUNMessage(method: .binding, messageClass: .successResponse, transactionID: m.transactionID)
        built.append(XORMappedAddress(TransportAddress("[2001:db8:1234:5678:11:2233:4455:6677]:32853")!))
        #expect(built.attributes[0].value == m.attributes[1].value)
    }

    @Test func longTermRequestVerifiesWithTheMD5Key() throws {
        let m = try STUNMessage.decode(Self.longTerm)
        #expect(try m.attribute(Username.self)?.text == Self.matrixUser)
        #expect(try m.attribute(Realm.self)?.text == "example.org")
        #expect(try m.attribute(Nonce.self)?.text == "f//499k954d6OL34oL9FSTvy64sA")
        // The password "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep is "TheMatrIX" (RFC 5769 §2.4).
        let key = STUNCredentials.longTermKey(username: Self.matrixUser, realm: "example.org", password: "TheMatrIX")
        #expect(m.verifyMessageIntegrity(key: key))
        #expect(m.fingerprintValid == nil)
        #expect(m.encode() == Self.longTerm)
        var unsigned = m
        unsigned.attributes.removeAll { $0.type == .messageIntegrity }
        #expect(unsigned.encode(integrityKey: key) == Self.longTerm)
    }

    @Test func sha256RequestFromRFC8489VerifiesAndReencodes() throws {
        let m = try STUNMessage.decode(Self.sha256Request)
        #expect(try m.attribute(Userhash.self)?.hash == STUNCredentials.userhash(username: Self.matrixUser, realm: "example.org"))
        #expect(try m.attribute(Nonce.self)?.text == "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
        #expect(try m.attribute(PasswordAlgorithm.self)?.algorithm == .sha256)
        let key = STUNCredentials.longTermKey(username: Self.matrixUser, realm: "example.org", password: "TheMatrIX", algorithm: .sha256)
        #expect(m.verifyMessageIntegritySHA256(key: key))
        #expect(!m.verifyMessageIntegritySHA256(key: STUNCredentials.longTermKey(username: Self.matrixUser, realm: "example.org", password: "TheMatrIX")))
        #expect(m.encode() == Self.sha256Request)
        var unsigned = m
        unsigned.attributes.removeAll { $0.type == .messageIntegritySHA256 }
        #expect(unsigned.encode(integritySHA256Key: key) == Self.sha256Request)
    }

    @Test func everyFlippedByteBreaksIntegrity() throws {
        let key = Array(Self.password.utf8)
        var decodedFlips = 0
        // Everything but FINGERPRINT (the last 8 bytes) is covered by MESSAGE-INTEGRITY.
        for i in 0..<(Self.request.count - 8) {
            var bad = Self.request
            bad[i] ^= 0x01
            guard let m = try? STUNMessage.decode(bad) else { continue }
            decodedFlips += 1
            #expect(!m.verifyMessageIntegrity(key: key), "byte \(i)")
        }
        #expect(decodedFlips > 50)
    }

    @Test func methodAndClassPackingRoundTrips() {
        for raw in stride(from: UInt16(0), through: 0x0FFF, by: 1) {
            for c in STUNClass.allCases {
                let t = STUNMessageType.pack(method: STUNMethod(rawValue: raw), messageClass: c)
                #expect(t & 0xC000 == 0)
                let (m, cls) = STUNMessageType.unpack(t)
                if m.rawValue != raw || cls != c { Issue.record("0x\(String(raw, radix: 16)) \(c)"); return }
            }
        }
        #expect(STUNMessageType.pack(method: .binding, messageClass: .successResponse) == 0x0101)
        #expect(STUNMessageType.pack(method: .binding, messageClass: .errorResponse) == 0x0111)
        #expect(STUNMessageType.pack(method: .binding, messageClass: .indication) == 0x0011)
    }

    @Test func everyAttributeRoundTrips() throws {
        let tid = STUNTransactionID.random()
        var m = STUNMessage(method: .binding, messageClass: .successResponse, transactionID: tid)
        m.append(XORMappedAddress(TransportAddress("203.0.113.5:40000")!))
        m.append(MappedAddress(TransportAddress("[2001:db8::1]:1")!))
        m.append(ResponseOrigin(TransportAddress("198.51.100.1:3478")!))
        m.append(OtherAddress(TransportAddress("198.51.100.2:3479")!))
        m.append(AlternateServer(TransportAddress("198.51.100.3:3478")!))
        m.append(Username("user"))
        m.append(Userhash([UInt8](repeating: 7, count: 32)))
        m.append(ErrorCode(420))
        m.append(UnknownAttributes([STUNAttributeType(0x7777), STUNAttributeType(0x0042)]))
        m.append(Realm("realm"))
        m.append(Nonce("nonce"))
        m.append(PasswordAlgorithms([.md5, .sha256, STUNPasswordAlgorithm(number: 9, parameters: [1, 2, 3])]))
        m.append(PasswordAlgorithm(.sha256))
        m.append(Software("trav"))
        m.append(ChangeRequest(changeIP: true, changePort: false))
        m.append(ResponsePort(4242))
        m.append(Padding(count: 5))
        let d = try STUNMessage.decode(m.encode(integrityKey: [1, 2, 3], integritySHA256Key: [4, 5, 6], fingerprint: true))
        #expect(try d.attribute(XORMappedAddress.self)?.address.description == "203.0.113.5:40000")
        #expect(try d.attribute(MappedAddress.self)?.address.description == "[2001:db8::1]:1")
        #expect(try d.attribute(ResponseOrigin.self)?.address.port == 3478)
        #expect(try d.attribute(OtherAddress.self)?.address.port == 3479)
        #expect(try d.attribute(AlternateServer.self)?.address.ip == IPAddress("198.51.100.3"))
        #expect(try d.attribute(Username.self)?.text == "user")
        #expect(try d.attribute(Userhash.self)?.hash.count == 32)
        #expect(try d.attribute(ErrorCode.self) == ErrorCode(420, reason: "Unknown Attribute"))
        #expect(try d.attribute(UnknownAttributes.self)?.types == [STUNAttributeType(0x7777), STUNAttributeType(0x0042)])
        #expect(try d.attribute(Realm.self)?.text == "realm")
        #expect(try d.attribute(Nonce.self)?.text == "nonce")
        #expect(try d.attribute(PasswordAlgorithms.self)?.algorithms.last == STUNPasswordAlgorithm(number: 9, parameters: [1, 2, 3]))
        #expect(try d.attribute(PasswordAlgorithm.self)?.algorithm == .sha256)
        #expect(try d.attribute(Software.self)?.text == "trav")
        #expect(try d.attribute(ChangeRequest.self) == ChangeRequest(changeIP: true, changePort: false))
        #expect(try d.attribute(ResponsePort.self)?.port == 4242)
        #expect(try d.attribute(Padding.self)?.count == 5)
        #expect(d.verifyMessageIntegrity(key: [1, 2, 3]))
        #expect(d.verifyMessageIntegritySHA256(key: [4, 5, 6]))
        #expect(d.fingerprintValid == true)
    }
}
