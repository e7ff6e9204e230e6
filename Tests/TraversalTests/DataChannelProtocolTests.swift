import Testing
@_spi(Fuzzing) @testable import Traversal

/// The Data Channel Establishment Protocol codec (RFC 8832).
@Suite struct DataChannelProtocolTests {
    @Test(arguments: [
        ChannelDelivery.reliable, .unordered, .partial(lifetime: .milliseconds(250)), .partial(maxRetransmits: 0),
        .partial(maxRetransmits: 3, ordered: false), .partial(lifetime: .seconds(2), ordered: false),
    ])
    func openRoundTrips(delivery: ChannelDelivery) throws {
        let open = DataChannelProtocol.Open(delivery: delivery, priority: .high, label: "vidéo", proto: "h264")
        #expect(try DataChannelProtocol.decode(DataChannelProtocol.encodeOpen(open)) == open)
    }

    @Test func openMatchesTheRFCLayout() {
        // RFC 8832 §5.1: type 0x03, channel type 0x82 (timed, unordered), priority 256, value 100 ms, label "a".
        let bytes = DataChannelProtocol.encodeOpen(.init(delivery: .partial(lifetime: .milliseconds(100), ordered: false),
                                                         priority: .normal, label: "a", proto: ""))
        #expect(bytes == [0x03, 0x82, 0x01, 0x00, 0, 0, 0, 100, 0, 1, 0, 0, 0x61])
    }

    @Test func ackDecodesAsNoOpen() throws {
        #expect(try DataChannelProtocol.decode([0x02]) == nil)
    }

    @Test(arguments: [
        [UInt8](), [0x02, 0x00], [0x07], [0x03, 0x00, 0x01],
        [0x03, 0x05, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],                 // unknown channel type
        [0x03, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 5, 0, 0, 0x61],           // label longer than the message
        [0x03, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF],     // huge lengths
    ])
    func malformedControlMessagesAreRefused(bytes: [UInt8]) {
        #expect(throws: DataChannelProtocol.Malformed.self) { try DataChannelProtocol.decode(bytes) }
    }

    @Test func priorityFromTheWireRoundsDown() {
        #expect(ChannelPriority(wire: 0) == .belowNormal)
        #expect(ChannelPriority(wire: 300) == .normal)
        #expect(ChannelPriority(wire: 5000) == .extraHigh)
    }
}
