import NIOCore
import Testing
@testable import STUNLite

/// The UDP fast path gives exactly the responder's replies for the shapes it takes, and declines the rest.
@Suite struct STUNUDPFastPathTests {
    static let base = STUNBindingResponderTests.self
    static let short = STUNBindingResponder(addresses: base.full.addresses, software: "trav")
    static let long = STUNBindingResponder(addresses: base.full.addresses, software: String(repeating: "s", count: 40))
    static let singleWithSoftware = STUNBindingResponder(addresses: base.single.addresses, software: "trav")
    static let responders = [base.single, base.full, short, long, singleWithSoftware]
    static let sources = [base.client, base.client6, TransportAddress("127.0.0.1:1")!, TransportAddress("[::1]:65535")!]

    /// A request built with the codec, given attributes and a fingerprint.
    static func request(_ build: (inout STUNMessage) -> Void = { _ in }, fingerprint: Bool = false,
                        method: STUNMethod = .binding, messageClass: STUNClass = .request) -> [UInt8] {
        var m = STUNMessage(method: method, messageClass: messageClass)
        build(&m)
        return m.encode(fingerprint: fingerprint)
    }

    /// Requests the fast path answers itself.
    static let taken: [(String, [UInt8])] = [
        ("plain", request()),
        ("with FINGERPRINT", request(fingerprint: true)),
    ]

    /// Requests it must hand to the responder (which answers some and drops others).
    static let declined: [(String, [UInt8])] = {
        var classic = request()
        classic[4] ^= 0xFF
        var classicFingerprint = request(fingerprint: true)
        classicFingerprint[4] ^= 0xFF
        var badFingerprint = request(fingerprint: true)
        badFingerprint[badFingerprint.count - 1] ^= 1
        var wrongLength = request()
        wrongLength[3] = 4
        var notSTUN = request()
        notSTUN[0] |= 0xC0
        var fingerprintLengthLie = request(fingerprint: true)
        fingerprintLengthLie[23] = 8
        let eightOptional = request { $0.attributes.append(STUNAttribute(type: STUNAttributeType(0xC001), value: [1, 2, 3, 4])) }
        return [
            ("classic RFC 3489", classic),
            ("classic with FINGERPRINT", classicFingerprint),
            ("CHANGE-REQUEST both", request { $0.append(ChangeRequest(changeIP: true, changePort: true)) }),
            ("CHANGE-REQUEST none", request { $0.append(ChangeRequest(changeIP: false, changePort: false)) }),
            ("CHANGE-REQUEST with FINGERPRINT", request({ $0.append(ChangeRequest(changeIP: false, changePort: true)) }, fingerprint: true)),
            ("RESPONSE-PORT", request { $0.append(ResponsePort(5555)) }),
            ("PADDING", request { $0.append(Padding(count: 0)) }),
            ("PADDING with FINGERPRINT", request({ $0.append(Padding(count: 4)) }, fingerprint: true)),
            ("PADDING with RESPONSE-PORT", request { $0.append(ResponsePort(5555)); $0.append(Padding(count: 4)) }),
            ("classic CHANGE-REQUEST", STUNBindingResponderTests.classicTestII),
            ("unknown comprehension-required", request { $0.attributes.append(STUNAttribute(type: STUNAttributeType(0x7ABC), value: [1, 2, 3, 4])) }),
            ("unknown comprehension-optional", eightOptional),
            ("SOFTWARE in request", request { $0.append(Software("client")) }),
            ("bad FINGERPRINT", badFingerprint),
            ("FINGERPRINT with wrong attribute length", fingerprintLengthLie),
            ("length field disagrees", wrongLength),
            ("first two bits set", notSTUN),
            ("truncated header", Array(request().prefix(19))),
            ("one byte too many", request() + [0]),
            ("indication", request(messageClass: .indication)),
            ("success response", request(messageClass: .successResponse)),
            ("error response", request(messageClass: .errorResponse)),
            ("other method", request(method: STUNMethod(rawValue: 0x003))),
            ("other method with FINGERPRINT", request(fingerprint: true, method: STUNMethod(rawValue: 0x0FF))),
            ("empty", []),
        ]
    }()

    func fast(_ responder: STUNBindingResponder, _ role: STUNSocketRole, _ bytes: [UInt8], _ source: TransportAddress) -> [UInt8]? {
        let path = STUNUDPFastPath(responder: responder, role: role)
        let allocator = ByteBufferAllocator()
        // Replies are appended after whatever the burst buffer holds; a prefix proves the offsets are relative.
        let prefix: [UInt8] = [0xEE, 0xEE, 0xEE]
        var out = allocator.buffer(bytes: prefix)
        guard let length = path.reply(to: allocator.buffer(bytes: bytes), from: source, appendingTo: &out) else {
            #expect(Array(out.readableBytesView) == prefix, "a declined request writes nothing")
            return nil
        }
        #expect(out.readableBytes == prefix.count + length)
        #expect(out.readBytes(length: prefix.count) == prefix)
        return out.readBytes(length: length)
    }

    @Test func repliesAreByteIdenticalToTheResponder() throws {
        var compared = 0
        for responder in Self.responders {
            for role in STUNSocketRole.all where responder.addresses[role] != nil {
                for source in Self.sources {
                    for (name, bytes) in Self.taken {
                        let reply = try #require(fast(responder, role, bytes, source), "\(name) declined")
                        let expected = try #require(responder.respond(to: bytes, from: source, on: role, transport: .udp))
                        #expect(reply == expected.bytes, "\(name) from \(source) on \(role)")
                        #expect(expected.from == role && expected.to == source, "the fast path only answers in place")
                        compared += 1
                    }
                }
            }
        }
        #expect(compared == 2 * 4 * (1 + 4 + 4 + 4 + 1))
    }

    @Test func everyOtherShapeGoesToTheResponder() {
        for responder in Self.responders {
            for role in STUNSocketRole.all where responder.addresses[role] != nil {
                for source in Self.sources {
                    for (name, bytes) in Self.declined {
                        #expect(fast(responder, role, bytes, source) == nil, "\(name) should be declined")
                    }
                }
            }
        }
    }

    @Test func malformedAndBadFingerprintAreDroppedOverall() {
        // What the fast path declines and the responder drops never gets an answer.
        let dropped = ["bad FINGERPRINT", "length field disagrees", "first two bits set", "truncated header",
                       "one byte too many", "indication", "success response", "error response", "empty",
                       "FINGERPRINT with wrong attribute length"]
        for (name, bytes) in Self.declined where dropped.contains(name) {
            #expect(Self.base.full.respond(to: bytes, from: Self.base.client, on: .primary, transport: .udp) == nil, "\(name)")
        }
    }

    @Test func repliesKeepTheAmplificationBoundAndDecode() throws {
        for responder in Self.responders {
            for source in Self.sources {
                for (name, bytes) in Self.taken {
                    let reply = try #require(fast(responder, .primary, bytes, source))
                    #expect(reply.count <= STUNBindingResponder.maxAmplification * bytes.count, "\(name): \(reply.count) bytes")
                    let m = try STUNMessage.decode(reply)
                    #expect(m.messageClass == .successResponse && m.method == .binding)
                    #expect(try m.attribute(XORMappedAddress.self)?.address == source)
                    #expect(m.fingerprintValid == (bytes.count == STUNUDPFastPath.fingerprintedRequestSize ? true : nil))
                }
            }
        }
        // With behaviour discovery, MAPPED-ADDRESS is written by the fast path itself; a fingerprinted request over IPv4 has room for all.
        for source in [Self.base.client, TransportAddress("127.0.0.1:1")!] {
            let reply = try #require(fast(Self.base.full, .primary, Self.request(fingerprint: true), source))
            let m = try STUNMessage.decode(reply)
            #expect(try m.attribute(MappedAddress.self)?.address == source)
            #expect(m.attributes.map(\.type) == [.xorMappedAddress, .otherAddress, .mappedAddress, .responseOrigin, .fingerprint])
        }
        // A 40-byte SOFTWARE never fits a 20-byte request's 60-byte budget alongside the RFC 5780 attributes.
        let plain = try #require(fast(Self.long, .primary, Self.request(), Self.base.client))
        #expect(try !STUNMessage.decode(plain).contains(.software))
    }
}
