import Media

/// The media plane's parsers: `MediaPacket(decoding:)` and the H.264 Annex B splitter.
enum MediaFuzz {
    static let target = FuzzTarget(
        name: "media",
        summary: "MediaPacket(decoding:) with its round trip, AnnexB.accessUnits with its invariants",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        if let packet = MediaPacket(decoding: data) {
            fuzzCheck(MediaPacket(decoding: packet.encoded()) == packet, "media packet round trip differs")
        }
        // The access units are consecutive pieces of the stream that end at its end.
        let units = AnnexB.accessUnits(data)
        let joined = units.flatMap(\.bytes)
        fuzzCheck(joined.count <= data.count && Array(data.suffix(joined.count)) == joined, "access units are not the stream's tail")
    }

    static func seeds() -> [(String, [UInt8])] {
        let sps: [UInt8] = [0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80]
        let pps: [UInt8] = [0, 0, 0, 1, 0x68, 0xCE, 0x3C, 0x80]
        let idr: [UInt8] = [0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33]
        let slice: [UInt8] = [0, 0, 1, 0x41, 0x9A, 0x22, 0x11]
        let aud: [UInt8] = [0, 0, 0, 1, 0x09, 0xF0]
        let stream = aud + sps + pps + idr + aud + slice + slice
        let packet = MediaPacket(frame: MediaFrame(timestamp: .milliseconds(40), isKeyframe: true, data: sps + pps + idr),
                                 sequence: 1, gop: 1, index: 0, capturedAtMicros: 1_700_000_000_000_000)
        let audio = MediaPacket(frame: MediaFrame(kind: .audio, timestamp: .milliseconds(20), isKeyframe: false, data: [1, 2, 3]),
                                sequence: 9, gop: 0, index: 0, capturedAtMicros: 0)
        return [("annexb-stream", stream), ("video-packet", packet.encoded()), ("audio-packet", audio.encoded())]
    }
}
