@_spi(Fuzzing) import Traversal

/// The channel establishment protocol (RFC 8832): DATA_CHANNEL_OPEN / ACK decoding and the OPEN round trip.
enum DataChannelFuzz {
    static let target = FuzzTarget(
        name: "data-channel",
        summary: "DataChannelProtocol.decode (RFC 8832 OPEN/ACK) and encodeOpen round trip",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        // `try?` flattens: nil is an error or an ACK.
        guard let open = try? DataChannelProtocol.decode(data) else { return }
        guard let back = try? DataChannelProtocol.decode(DataChannelProtocol.encodeOpen(open)) else {
            fuzzCheck(false, "a re-encoded OPEN does not decode")
            return
        }
        fuzzCheck(back == open, "OPEN round trip differs")
    }

    static func seeds() -> [(String, [UInt8])] {
        let opens: [(String, DataChannelProtocol.Open)] = [
            ("control", .init(delivery: .reliable, priority: .extraHigh, label: "control", proto: "")),
            ("video", .init(delivery: .partial(lifetime: .milliseconds(200)), priority: .high, label: "video", proto: "trav-media")),
            ("audio", .init(delivery: .partial(maxRetransmits: 0, ordered: false), priority: .high, label: "audio", proto: "")),
            ("bulk", .init(delivery: .unordered, priority: .belowNormal, label: "bulk", proto: "files")),
        ]
        return opens.map { ("open-" + $0.0, DataChannelProtocol.encodeOpen($0.1)) } + [("ack", DataChannelProtocol.ack)]
    }
}
