import NIOCore
import STUNLite
import TURNLite

/// STUN and TURN messages (RFC 8489, RFC 8656): decode, every typed attribute, integrity and
/// fingerprint checks, and the round trips the codec promises.
enum STUNCodecFuzz {
    static let target = FuzzTarget(
        name: "stun-codec",
        summary: "STUNMessage.decode, typed STUN/TURN attributes, re-encode round trip, stream framing",
        run: run, seeds: seeds)

    static let key = Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)

    static func run(_ data: [UInt8]) {
        _ = STUNMessage.looksLikeSTUN(data)
        if let size = try? STUNFrameDecoder.frameSize(ByteBuffer(bytes: data), allowsChannelData: true) {
            fuzzCheck(size >= 4 && size <= STUNMessage.headerSize + 0xFFFF, "frame size \(size)")
        }
        let message: STUNMessage
        do {
            message = try STUNMessage.decode(data)
        } catch {
            fuzzCheck(error.offset >= 0 && error.offset <= data.count, "error offset \(error.offset) of \(data.count)")
            return
        }
        _ = message.fingerprintValid
        _ = message.verifyMessageIntegrity(key: key)
        _ = message.verifyMessageIntegritySHA256(key: key)
        _ = message.unknownComprehensionRequired(known: STUNAttributeType.turnKnown)
        _ = message.isClassic

        // Every known attribute: decoding its value and re-encoding it gives the same value.
        let tid = message.transactionID
        roundTrip(MappedAddress.self, message, tid)
        roundTrip(XORMappedAddress.self, message, tid)
        roundTrip(AlternateServer.self, message, tid)
        roundTrip(ResponseOrigin.self, message, tid)
        roundTrip(OtherAddress.self, message, tid)
        roundTrip(SourceAddress.self, message, tid)
        roundTrip(ChangedAddress.self, message, tid)
        roundTrip(Username.self, message, tid)
        roundTrip(Realm.self, message, tid)
        roundTrip(Nonce.self, message, tid)
        roundTrip(Software.self, message, tid)
        roundTrip(Userhash.self, message, tid)
        roundTrip(ErrorCode.self, message, tid)
        roundTrip(UnknownAttributes.self, message, tid)
        roundTrip(PasswordAlgorithm.self, message, tid)
        roundTrip(PasswordAlgorithms.self, message, tid)
        roundTrip(ChangeRequest.self, message, tid)
        roundTrip(ResponsePort.self, message, tid)
        roundTrip(Padding.self, message, tid)
        roundTrip(ChannelNumber.self, message, tid)
        roundTrip(Lifetime.self, message, tid)
        roundTrip(XORPeerAddress.self, message, tid)
        roundTrip(XORRelayedAddress.self, message, tid)
        roundTrip(DataAttribute.self, message, tid)
        roundTrip(RequestedAddressFamily.self, message, tid)
        roundTrip(EvenPort.self, message, tid)
        roundTrip(RequestedTransport.self, message, tid)
        roundTrip(DontFragment.self, message, tid)
        roundTrip(ReservationToken.self, message, tid)

        // The codec keeps padding and header words, so a message without ignored attributes re-encodes
        // to its own bytes; with them, to a message that decodes to the same attributes.
        let encoded = message.encode()
        if message.ignoredAfterIntegrity.isEmpty {
            fuzzCheck(encoded == data, "re-encoding differs from the input")
        }
        guard let again = try? STUNMessage.decode(encoded) else {
            fuzzCheck(false, "re-encoded message does not decode")
            return
        }
        // Offsets move when ignored attributes are dropped; types, values and padding do not.
        func content(_ m: STUNMessage) -> [STUNAttribute] {
            m.attributes.map { STUNAttribute(type: $0.type, value: $0.value, wirePadding: $0.wirePadding) }
        }
        fuzzCheck(content(again) == content(message) && again.transactionID == tid
                    && again.method == message.method && again.messageClass == message.messageClass,
                  "re-encoded message decodes differently")
        // Signing anew gives a message that verifies with the same key.
        var unsigned = message
        unsigned.attributes.removeAll { [.messageIntegrity, .messageIntegritySHA256, .fingerprint].contains($0.type) }
        let signed = unsigned.encode(integrityKey: key, integritySHA256Key: key, fingerprint: true)
        if signed.count <= STUNLimits.maxMessageSize, let decoded = try? STUNMessage.decode(signed) {
            fuzzCheck(decoded.verifyMessageIntegrity(key: key) && decoded.verifyMessageIntegritySHA256(key: key)
                        && decoded.fingerprintValid == true, "a freshly signed message does not verify")
        }
    }

    static func roundTrip<A: STUNAttributeValue & Equatable>(_: A.Type, _ message: STUNMessage, _ tid: STUNTransactionID) {
        guard let value = try? message.attribute(A.self) else { return }
        let wire = value.stunValue(transactionID: tid)
        guard let back = try? A(stunValue: wire[...], transactionID: tid) else {
            fuzzCheck(false, "\(A.self) re-encoded does not decode")
            return
        }
        fuzzCheck(back == value, "\(A.self) round trip differs")
    }

    static func seeds() -> [(String, [UInt8])] {
        let tid = STUNTransactionID(bytes: hexBytes("b7e7a701bc34d686fa87dfae"))!
        var binding = STUNMessage(method: .binding, messageClass: .request, transactionID: tid)
        var out: [(String, [UInt8])] = [("binding-request", binding.encode())]
        binding.append(ChangeRequest(changeIP: true, changePort: true))
        binding.append(ResponsePort(40000))
        binding.append(Padding(count: 12))
        out.append(("rfc5780-request", binding.encode(fingerprint: true)))

        var success = STUNMessage(method: .binding, messageClass: .successResponse, transactionID: tid)
        success.append(XORMappedAddress(TransportAddress("192.0.2.1:32853")!))
        success.append(MappedAddress(TransportAddress("[2001:db8:1234:5678:11:2233:4455:6677]:32853")!))
        success.append(ResponseOrigin(TransportAddress("198.51.100.1:3478")!))
        success.append(OtherAddress(TransportAddress("198.51.100.2:3479")!))
        success.append(Software("trav"))
        out.append(("binding-success", success.encode(fingerprint: true)))

        var challenge = STUNMessage(method: .allocate, messageClass: .errorResponse, transactionID: tid)
        challenge.append(ErrorCode(ErrorCode.unauthenticated))
        challenge.append(Realm("example.org"))
        challenge.append(Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"))
        challenge.append(PasswordAlgorithms([.md5, .sha256]))
        challenge.append(UnknownAttributes([STUNAttributeType(0x0031), STUNAttributeType(0x8001)]))
        out.append(("allocate-401", challenge.encode(fingerprint: true)))

        var allocate = STUNMessage(method: .allocate, messageClass: .request, transactionID: tid)
        allocate.append(RequestedTransport.udp)
        allocate.append(RequestedAddressFamily(.ipv6))
        allocate.append(EvenPort(reserveNext: true))
        allocate.append(DontFragment())
        allocate.append(Lifetime(seconds: 600))
        allocate.append(Username("fuzz"))
        allocate.append(Realm("example.org"))
        allocate.append(Nonce("nonce"))
        allocate.append(PasswordAlgorithm(.sha256))
        allocate.append(Userhash(Array(repeating: 0xAB, count: 32)))
        out.append(("allocate-signed", allocate.encode(integrityKey: key, integritySHA256Key: key, fingerprint: true)))

        var allocated = STUNMessage(method: .allocate, messageClass: .successResponse, transactionID: tid)
        allocated.append(XORRelayedAddress(TransportAddress("203.0.113.5:49152")!))
        allocated.append(XORMappedAddress(TransportAddress("192.0.2.1:32853")!))
        allocated.append(Lifetime(seconds: 600))
        allocated.append(ReservationToken(Array(repeating: 7, count: 8)))
        out.append(("allocate-success", allocated.encode(integrityKey: key)))

        var bind = STUNMessage(method: .channelBind, messageClass: .request, transactionID: tid)
        bind.append(ChannelNumber(0x4001))
        bind.append(XORPeerAddress(TransportAddress("203.0.113.9:5000")!))
        out.append(("channel-bind", bind.encode(integrityKey: key)))

        var send = STUNMessage(method: .send, messageClass: .indication, transactionID: tid)
        send.append(XORPeerAddress(TransportAddress("[2001:db8::9]:5000")!))
        send.append(DataAttribute(Array("hello".utf8)))
        out.append(("send-indication", send.encode()))

        var alternate = STUNMessage(method: .binding, messageClass: .errorResponse, transactionID: tid)
        alternate.append(ErrorCode(ErrorCode.tryAlternate, reason: "elsewhere"))
        alternate.append(AlternateServer(TransportAddress("198.51.100.7:3478")!))
        out.append(("try-alternate", alternate.encode()))

        out += STUNVectors.rfc5769
        return out
    }
}

/// RFC 5769 §2 sample messages and RFC 8489 Appendix B.1 (errata 6268).
enum STUNVectors {
    static let rfc5769: [(String, [UInt8])] = [
        ("rfc5769-request", hexBytes("""
            000100582112a442b7e7a701bc34d686fa87dfae
            802200105354554e207465737420636c69656e74
            002400046e0001ff
            80290008932ff9b151263b36
            000600096576746a3a68367659202020
            000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
            80280004e57a3bcf
            """)),
        ("rfc5769-response-v4", hexBytes("""
            0101003c2112a442b7e7a701bc34d686fa87dfae
            8022000b7465737420766563746f7220
            002000080001a147e112a643
            000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7
            80280004c07d4c96
            """)),
        ("rfc5769-response-v6", hexBytes("""
            010100482112a442b7e7a701bc34d686fa87dfae
            8022000b7465737420766563746f7220
            002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9
            00080014a382954e4be67bf11784c97c8292c275bfe3ed41
            80280004c8fb0b4c
            """)),
        ("rfc5769-long-term", hexBytes("""
            000100602112a44278ad3433c6ad72c029da412e
            00060012e3839ee38388e383aae38383e382afe382b90000
            0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473
            41
            0014000b6578616d706c652e6f726700
            00080014f67024656dd64a3e02b8e0712e85c9a28ca89666
            """)),
        ("rfc8489-sha256", hexBytes("""
            000100902112a44278ad3433c6ad72c029da412e
            001e00204a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704
            001500296f624d61744a6f7332414141 43662f2f3439396b39353464364f4c33346f4c394653547679363473 41000000
            0014000b6578616d706c652e6f726700
            001d000400020000
            001c0020b5c7bf005b6c52a21c51c5e892f8192413 6296cb927c431493 09278cc6518e65
            """)),
    ]
}
