import STUNLite
import TURNLite

/// TURN ChannelData (RFC 8656 §12.4–12.5): header peek, decode, and encode ∘ decode.
enum ChannelDataFuzz {
    static let target = FuzzTarget(
        name: "channel-data",
        summary: "ChannelData.header/decode and the re-encode round trip, unpadded and padded",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        let header = ChannelData.header(data)
        guard let frame = try? ChannelData.decode(data) else { return }
        fuzzCheck(header?.channel == frame.channel && header?.length == frame.payload.count, "header and decode disagree")
        let plain = frame.encode(padded: false)
        fuzzCheck(Array(data.prefix(plain.count)) == plain, "unpadded re-encoding is not a prefix of the input")
        for encoded in [plain, frame.encode(padded: true)] {
            fuzzCheck((try? ChannelData.decode(encoded)) == frame, "re-encoded frame decodes differently")
        }
    }

    static func seeds() -> [(String, [UInt8])] {
        [
            ("empty", ChannelData(channel: 0x4000, payload: []).encode(padded: false)),
            ("short-udp", ChannelData(channel: 0x4001, payload: Array("hello".utf8)).encode(padded: false)),
            ("short-stream", ChannelData(channel: 0x4FFF, payload: Array("hello".utf8)).encode(padded: true)),
            ("rtp-sized", ChannelData(channel: 0x4123, payload: (0..<172).map { UInt8($0 & 0xFF) }).encode(padded: false)),
        ]
    }
}
