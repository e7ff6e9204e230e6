import Foundation

/// One encoded frame: an H.264/H.265 access unit in Annex B form, or an audio frame.
public struct MediaFrame: Sendable, Hashable {
    /// What the frame carries.
    public enum Kind: UInt8, Sendable, Hashable {
        /// A video access unit.
        case video = 1
        /// An audio frame (each one decodable alone).
        case audio = 2
    }

    /// Video or audio.
    public var kind: Kind
    /// Presentation time from the start of the stream.
    public var timestamp: Duration
    /// True for a video frame a decoder can start at (an IDR access unit with its parameter sets).
    public var isKeyframe: Bool
    /// The encoded bytes.
    public var data: [UInt8]

    /// A frame.
    public init(kind: Kind = .video, timestamp: Duration, isKeyframe: Bool, data: [UInt8]) {
        self.kind = kind
        self.timestamp = timestamp
        self.isKeyframe = isKeyframe
        self.data = data
    }
}

/// A frame as it travels on the media channel, with what the receiver needs to check the stream.
///
/// ```
///  0       1       2               4               8              12              16
/// +-------+-------+---------------+---------------+---------------+---------------+
/// | kind  | flags | rend. | rsvd. |   sequence    |      gop      | index in gop  |
/// +-------+-------+---------------+---------------+---------------+---------------+
/// |        presentation time (µs)     |    sender's wall clock at capture (µs)    |
/// +-----------------------------------+-------------------------------------------+
/// | frame bytes …
/// ```
///
/// `sequence` counts every frame of its kind the camera produced, sent or dropped, so gaps are drops;
/// `gop` counts keyframes and `index` counts frames since the last one, so a receiver can check that
/// it never got a frame whose reference was dropped (flag bit 0: keyframe). `rend.` is the frame's
/// ``Rendition`` (its index among the camera's; 0 for a camera with one stream).
public struct MediaPacket: Sendable, Hashable {
    /// Bytes of the header.
    public static let headerLength = 32

    /// The frame.
    public var frame: MediaFrame
    /// Frames of this kind produced before this one.
    public var sequence: UInt32
    /// Keyframes produced up to and including this frame's GOP.
    public var gop: UInt32
    /// Position in its GOP (0 for the keyframe).
    public var index: UInt32
    /// The sender's wall clock when the camera offered the frame (its capture; µs since 1970), for latency
    /// (capture → complete frame at the viewer) where clocks agree.
    public var capturedAtMicros: UInt64
    /// The rendition the frame belongs to (an index among the camera's ``Rendition``s).
    public var rendition: UInt8

    /// A packet.
    public init(frame: MediaFrame, sequence: UInt32, gop: UInt32, index: UInt32, capturedAtMicros: UInt64, rendition: UInt8 = 0) {
        self.frame = frame
        self.sequence = sequence
        self.gop = gop
        self.index = index
        self.capturedAtMicros = capturedAtMicros
        self.rendition = rendition
    }

    /// The wire form.
    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.headerLength + frame.data.count)
        out.append(frame.kind.rawValue)
        out.append(frame.isKeyframe ? 1 : 0)
        out += [rendition, 0]
        Self.append(sequence, to: &out)
        Self.append(gop, to: &out)
        Self.append(index, to: &out)
        Self.append(UInt64(max(0, frame.timestamp.microseconds)), to: &out)
        Self.append(capturedAtMicros, to: &out)
        out += frame.data
        return out
    }

    /// Parses the wire form; nil if it is not a media packet.
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= Self.headerLength, let kind = MediaFrame.Kind(rawValue: bytes[0]), bytes[1] & 0xFE == 0 else { return nil }
        func u32(_ at: Int) -> UInt32 { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
        func u64(_ at: Int) -> UInt64 { bytes[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        let micros = u64(16)
        guard micros <= UInt64(Int64.max) else { return nil }
        frame = MediaFrame(kind: kind, timestamp: .microseconds(Int64(micros)), isKeyframe: bytes[1] & 1 == 1,
                           data: Array(bytes[Self.headerLength...]))
        sequence = u32(4)
        gop = u32(8)
        index = u32(12)
        capturedAtMicros = u64(24)
        rendition = bytes[2]
    }

    private static func append<T: FixedWidthInteger>(_ v: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.bigEndian) { out += $0 }
    }
}

extension Duration {
    /// Whole microseconds.
    var microseconds: Int64 {
        components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000
    }
}

/// Microseconds since 1970 on this host's wall clock.
func wallClockMicros() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec / 1000)
}
