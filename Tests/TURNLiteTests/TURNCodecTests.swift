import NIOCore
import Testing
import STUNLite
@testable import TURNLite

/// TURN attributes and ChannelData framing (RFC 8656 §12.4–12.5, §18).
struct TURNCodecTests {
    let peer = TransportAddress("203.0.113.7:4000")!
    let peer6 = TransportAddress("[2001:db8::7]:4000")!

    @Test func everyAttributeRoundTripsThroughAMessage() throws {
        var m = STUNMessage(method: .allocate, messageClass: .request)
        m.append(ChannelNumber(0x4001))
        m.append(Lifetime(seconds: 1234))
        m.append(XORPeerAddress(peer6))
        m.append(DataAttribute([1, 2, 3]))
        m.append(XORRelayedAddress(peer))
        m.append(RequestedAddressFamily(.ipv6))
        m.append(EvenPort(reserveNext: true))
        m.append(RequestedTransport.udp)
        m.append(DontFragment())
        m.append(ReservationToken([1, 2, 3, 4, 5, 6, 7, 8]))
        let d = try STUNMessage.decode(m.encode(fingerprint: true))
        #expect(d.method == .allocate)
        #expect(try d.attribute(ChannelNumber.self) == ChannelNumber(0x4001))
        #expect(try d.attribute(Lifetime.self)?.seconds == 1234)
        #expect(try d.attribute(XORPeerAddress.self)?.address == peer6)
        #expect(try d.attribute(DataAttribute.self)?.bytes == [1, 2, 3])
        #expect(try d.attribute(XORRelayedAddress.self)?.address == peer)
        #expect(try d.attribute(RequestedAddressFamily.self)?.family == .ipv6)
        #expect(try d.attribute(EvenPort.self)?.reserveNext == true)
        #expect(try d.attribute(RequestedTransport.self) == .udp)
        #expect(try d.attribute(DontFragment.self) != nil)
        #expect(try d.attribute(ReservationToken.self)?.token == [1, 2, 3, 4, 5, 6, 7, 8])
    }

    @Test func methodsPackIntoTheRFCMessageTypes() throws {
        // RFC 8656 §18.1: Allocate request 0x0003, success 0x0103, Send indication 0x0016, Data indication 0x0017.
        #expect(STUNMessageType.pack(method: .allocate, messageClass: .request) == 0x0003)
        #expect(STUNMessageType.pack(method: .allocate, messageClass: .successResponse) == 0x0103)
        #expect(STUNMessageType.pack(method: .send, messageClass: .indication) == 0x0016)
        #expect(STUNMessageType.pack(method: .data, messageClass: .indication) == 0x0017)
        #expect(STUNMessageType.pack(method: .channelBind, messageClass: .errorResponse) == 0x0119)
    }

    @Test func malformedAttributesNameTheAttribute() throws {
        var m = STUNMessage(method: .allocate, messageClass: .request)
        m.attributes.append(STUNAttribute(type: .lifetime, value: [0, 0, 1]))
        m.attributes.append(STUNAttribute(type: .requestedTransport, value: [17]))
        m.attributes.append(STUNAttribute(type: .dontFragment, value: [1]))
        let d = try STUNMessage.decode(m.encode())
        #expect(throws: STUNDecodingError.self) { try d.attribute(Lifetime.self) }
        do {
            _ = try d.attribute(RequestedTransport.self)
            Issue.record("short REQUESTED-TRANSPORT accepted")
        } catch {
            #expect(error.attribute == .requestedTransport)
            #expect(error.code == .invalidAttributeLength)
        }
        #expect(throws: STUNDecodingError.self) { try d.attribute(DontFragment.self) }
    }

    @Test func channelDataPadsOnlyForStreams() throws {
        let c = ChannelData(channel: 0x4000, payload: [9, 8, 7, 6, 5])
        #expect(c.encode(padded: false) == [0x40, 0x00, 0x00, 0x05, 9, 8, 7, 6, 5])
        #expect(c.encode(padded: true) == [0x40, 0x00, 0x00, 0x05, 9, 8, 7, 6, 5, 0, 0, 0])
        #expect(try ChannelData.decode(c.encode(padded: true)) == c)
        #expect(try ChannelData.decode(c.encode(padded: false)) == c)
    }

    @Test func channelDataRejectsBadLengthsWithoutTrapping() throws {
        #expect(throws: STUNDecodingError.self) { try ChannelData.decode([0x40, 0x00, 0x00, 0x09, 1, 2]) }
        #expect(throws: STUNDecodingError.self) { try ChannelData.decode([0x40, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5]) }
        #expect(throws: STUNDecodingError.self) { try ChannelData.decode([0x00, 0x01]) }
        #expect(throws: STUNDecodingError.self) { try ChannelData.decode([]) }
        #expect(ChannelData.header([0x7F, 0xFF, 0xFF, 0xFF]) != nil)
        #expect(ChannelData.header([0x80, 0, 0, 0]) == nil)
    }

    @Test func streamFramerSplitsPaddedChannelDataAndSTUN() throws {
        var buffer = ByteBuffer(bytes: ChannelData(channel: 0x4000, payload: [1]).encode(padded: true))
        #expect(try STUNFrameDecoder.frameSize(buffer, allowsChannelData: true) == 8)
        buffer = ByteBuffer(bytes: STUNMessage(method: .refresh, messageClass: .request).encode())
        #expect(try STUNFrameDecoder.frameSize(buffer, allowsChannelData: true) == 20)
    }
}
