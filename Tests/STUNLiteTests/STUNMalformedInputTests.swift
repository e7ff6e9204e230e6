import Testing
@testable import STUNLite

/// Every class of malformed input gives a typed error that names the attribute and the offset; none traps.
@Suite struct STUNMalformedInputTests {
    static let tid = hex("b7e7a701bc34d686fa87dfae")

    /// A header for `body`, with the length field set to `length` (default: the body's size).
    static func message(_ body: [UInt8], type: UInt16 = 0x0001, length: Int? = nil, cookie: [UInt8] = [0x21, 0x12, 0xA4, 0x42]) -> [UInt8] {
        let l = length ?? body.count
        return [UInt8(type >> 8), UInt8(type & 0xFF), UInt8(l >> 8), UInt8(l & 0xFF)] + cookie + tid + body
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: [UInt8]
        var code: STUNDecodingError.Code
        var attribute: STUNAttributeType?
        var offset: Int
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "empty", bytes: [], code: .truncatedHeader, attribute: nil, offset: 0),
        Case(name: "truncated header", bytes: Array(message([]).prefix(19)), code: .truncatedHeader, attribute: nil, offset: 0),
        Case(name: "non-STUN first bits (RTP)", bytes: [0x80] + Array(message([]).dropFirst()), code: .notSTUN, attribute: nil, offset: 0),
        Case(name: "HTTP request", bytes: Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), code: .notSTUN, attribute: nil, offset: 0),
        Case(name: "length not multiple of four", bytes: message([0, 0, 0, 0], length: 3), code: .lengthNotMultipleOfFour, attribute: nil, offset: 2),
        Case(name: "length longer than datagram", bytes: message([0x80, 0x22, 0, 0], length: 8), code: .lengthMismatch, attribute: nil, offset: 2),
        Case(name: "length shorter than datagram", bytes: message([0x80, 0x22, 0, 0, 1, 2, 3, 4], length: 4), code: .lengthMismatch, attribute: nil, offset: 2),
        Case(name: "attribute length past the end", bytes: message([0x80, 0x22, 0x00, 0x10, 0x41, 0x41, 0x41, 0x41]),
             code: .attributeTruncated, attribute: .software, offset: 20),
        Case(name: "padding missing", bytes: message([0x80, 0x22, 0x00, 0x05, 0x41, 0x41, 0x41, 0x41, 0x41]),
             code: .lengthNotMultipleOfFour, attribute: nil, offset: 2),
        Case(name: "unpadded attribute misaligns the next header", bytes: message([0x80, 0x22, 0x00, 0x01, 0x41, 0x00, 0x06, 0x00, 0x03, 0x61, 0x62, 0x63]),
             code: .attributeTruncated, attribute: STUNAttributeType(0x0361), offset: 28),
        Case(name: "unknown address family", bytes: message([0x00, 0x20, 0x00, 0x08, 0x00, 0x03, 0x12, 0x34, 1, 2, 3, 4]),
             code: .unknownAddressFamily, attribute: .xorMappedAddress, offset: 25),
        Case(name: "IPv4 address with IPv6 length", bytes: message([0x00, 0x01, 0x00, 0x14, 0x00, 0x01, 0x12, 0x34] + [UInt8](repeating: 0, count: 16)),
             code: .invalidAddressLength, attribute: .mappedAddress, offset: 24),
        Case(name: "IPv6 address with IPv4 length", bytes: message([0x00, 0x20, 0x00, 0x08, 0x00, 0x02, 0x12, 0x34, 1, 2, 3, 4]),
             code: .invalidAddressLength, attribute: .xorMappedAddress, offset: 24),
        Case(name: "address shorter than its header", bytes: message([0x80, 0x2B, 0x00, 0x02, 0x00, 0x01, 0, 0]),
             code: .invalidAddressLength, attribute: .responseOrigin, offset: 24),
        Case(name: "MESSAGE-INTEGRITY of the wrong size", bytes: message([0x00, 0x08, 0x00, 0x04, 1, 2, 3, 4]),
             code: .invalidAttributeLength, attribute: .messageIntegrity, offset: 20),
        Case(name: "FINGERPRINT of the wrong size", bytes: message([0x80, 0x28, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]),
             code: .invalidAttributeLength, attribute: .fingerprint, offset: 20),
        Case(name: "attribute after FINGERPRINT", bytes: message([0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4, 0x80, 0x22, 0x00, 0x00]),
             code: .attributeAfterFingerprint, attribute: .software, offset: 28),
        Case(name: "USERNAME not UTF-8", bytes: message([0x00, 0x06, 0x00, 0x02, 0xFF, 0xFE, 0, 0]),
             code: .invalidAttributeValue, attribute: .username, offset: 24),
        Case(name: "ERROR-CODE class out of range", bytes: message([0x00, 0x09, 0x00, 0x04, 0, 0, 7, 1], type: 0x0111),
             code: .invalidAttributeValue, attribute: .errorCode, offset: 26),
        Case(name: "CHANGE-REQUEST of the wrong size", bytes: message([0x00, 0x03, 0x00, 0x02, 0, 4, 0, 0]),
             code: .invalidAttributeLength, attribute: .changeRequest, offset: 24),
        Case(name: "too many attributes", bytes: message([UInt8](repeating: 0, count: 4 * 65).enumerated().map { $0.offset % 4 == 0 ? 0x80 : 0 }),
             code: .tooManyAttributes, attribute: STUNAttributeType(0x8000), offset: 20 + 4 * 64),
    ]

    @Test(arguments: cases)
    func malformedInputGivesTypedError(_ c: Case) {
        do {
            let m = try STUNMessage.decode(c.bytes)
            Issue.record("decoded: \(m)")
        } catch {
            #expect(error.code == c.code, "\(error)")
            #expect(error.attribute == c.attribute, "\(error)")
            #expect(error.offset == c.offset, "\(error)")
        }
    }

    @Test func duplicateAttributesFirstWins() throws {
        var m = STUNMessage(method: .binding, messageClass: .request)
        m.append(Software("first"))
        m.append(Software("second"))
        let d = try STUNMessage.decode(m.encode())
        #expect(try d.attribute(Software.self)?.text == "first")
    }

    @Test func attributesAfterIntegrityAreIgnoredForAuthentication() throws {
        var m = STUNMessage(method: .binding, messageClass: .request)
        m.append(Username("alice"))
        let key = Array("secret".utf8)
        var bytes = m.encode(integrityKey: key)
        // An attacker appends a SOFTWARE and a CHANGE-REQUEST after MESSAGE-INTEGRITY and fixes the length.
        bytes += [0x80, 0x22, 0x00, 0x04, 0x65, 0x76, 0x69, 0x6C, 0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6]
        STUNMessage.setLength(&bytes, bytes.count - 20)
        let d = try STUNMessage.decode(bytes)
        #expect(d.verifyMessageIntegrity(key: key))
        #expect(try d.attribute(Software.self) == nil)
        #expect(try d.attribute(ChangeRequest.self) == nil)
        #expect(d.ignoredAfterIntegrity.map(\.type) == [.software, .changeRequest])
    }

    @Test func nonZeroPaddingIsIgnoredButKept() throws {
        let bytes = Self.message([0x80, 0x22, 0x00, 0x01, 0x41, 0xAA, 0xBB, 0xCC])
        let d = try STUNMessage.decode(bytes)
        #expect(try d.attribute(Software.self)?.text == "A")
        #expect(d.encode() == bytes)
    }

    @Test func unknownComprehensionRequiredAttributesAreListedOnce() throws {
        var m = STUNMessage(method: .binding, messageClass: .request)
        m.attributes.append(STUNAttribute(type: STUNAttributeType(0x07AD), value: [1, 2, 3, 4]))
        m.attributes.append(STUNAttribute(type: STUNAttributeType(0x7FFF), value: []))
        m.attributes.append(STUNAttribute(type: STUNAttributeType(0x07AD), value: []))
        m.attributes.append(STUNAttribute(type: STUNAttributeType(0x8000), value: []))
        m.append(Software("x"))
        let d = try STUNMessage.decode(m.encode())
        #expect(d.unknownComprehensionRequired(known: STUNAttributeType.stunKnown) == [STUNAttributeType(0x07AD), STUNAttributeType(0x7FFF)])
    }

    @Test func classicRFC3489MessageDecodesWithoutCookie() throws {
        let bytes = Self.message([], cookie: [1, 2, 3, 4])
        let d = try STUNMessage.decode(bytes)
        #expect(d.isClassic)
        #expect(d.cookie == 0x0102_0304)
        #expect(!STUNMessage.looksLikeSTUN(bytes))
        #expect(STUNMessage.looksLikeSTUN(Self.message([])))
    }

    /// Random bytes and random mutations of a valid message never trap; bounded count.
    @Test func randomInputNeverTraps() throws {
        var rng = SystemRandomNumberGenerator()
        let seed = STUNVectorTests.request
        for i in 0..<20_000 {
            var b: [UInt8]
            if i % 2 == 0 {
                b = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if b.count > 0 { b[0] &= 0x3F }
            } else {
                b = seed
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            if let m = try? STUNMessage.decode(b) {
                _ = m.verifyMessageIntegrity(key: [1])
                _ = m.fingerprintValid
                _ = m.encode()
            }
        }
    }
}
