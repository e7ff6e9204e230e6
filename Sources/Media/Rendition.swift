/// One of the encodings a camera offers of the same picture: a main stream, a sub stream, or another profile,
/// each an H.264 Annex B stream with its own parameter sets, at its nominal bit rate.
///
/// A ``MediaSender`` given several picks one per viewer (``RenditionStateMachine``); frames name theirs by index
/// in ``MediaSender/Configuration/renditions`` (``MediaSender/send(_:rendition:)``), and the index travels in each
/// ``MediaPacket`` so a viewer knows which one it gets.
public struct Rendition: Sendable, Hashable {
    /// A name for logs and the command line (`main`, `sub`).
    public var name: String
    /// The encoder's average rate (bits per second): what a viewer's path must sustain to receive it whole.
    public var bitsPerSecond: Int

    /// A rendition.
    public init(name: String, bitsPerSecond: Int) {
        self.name = name
        self.bitsPerSecond = bitsPerSecond
    }
}

extension AnnexB {
    /// The average bit rate of a clip played at `fps` frames per second: its bytes over its duration
    /// (`units.count / fps` seconds). 0 for an empty clip.
    public static func bitsPerSecond(of units: [AccessUnit], fps: Int) -> Int {
        guard !units.isEmpty else { return 0 }
        let bytes = units.reduce(0) { $0 + $1.bytes.count }
        return bytes * 8 * max(1, fps) / units.count
    }
}
