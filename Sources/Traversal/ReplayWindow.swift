/// A sliding anti-replay window over 64-bit packet counters (RFC 6479, as WireGuard uses it).
///
/// Tracks the highest counter accepted and a ring bitmap of ``bitmapBits`` bits; counters more
/// than ``windowSize`` below the highest are too old. ``check(_:)`` does not change the window, so
/// a caller authenticates a packet first and only then ``accept(_:)``s its counter: forged packets
/// cannot move the window.
public struct ReplayWindow: Sendable, Hashable {
    /// Size of the ring bitmap in bits (RFC 6479 §2; WireGuard uses 8192, we use 2048).
    public static let bitmapBits = 2048
    /// Counters this far or further below the highest accepted one are rejected as too old.
    /// One 64-bit word of the ring is kept free so that advancing never clears live bits (RFC 6479 §2).
    public static let windowSize = UInt64(bitmapBits - 64)

    /// The verdict on a counter.
    public enum Verdict: Sendable, Hashable {
        /// Not seen before and inside the window.
        case fresh
        /// Already accepted once.
        case replayed
        /// Below the window: cannot be told apart from a replay.
        case tooOld
    }

    /// The ring bitmap, 64 counters per word.
    var words = [UInt64](repeating: 0, count: bitmapBits / 64)
    /// The highest counter accepted so far.
    public private(set) var highest: UInt64 = 0

    /// An empty window, in which every counter from 0 up is fresh.
    public init() {}

    /// Whether `counter` would be accepted, without recording it.
    public func check(_ counter: UInt64) -> Verdict {
        if counter > highest { return .fresh }
        if highest - counter >= Self.windowSize { return .tooOld }
        let (word, mask) = Self.position(of: counter)
        return words[word] & mask == 0 ? .fresh : .replayed
    }

    /// Records `counter` (after authenticating its packet); returns what ``check(_:)`` said before.
    @discardableResult
    public mutating func accept(_ counter: UInt64) -> Verdict {
        let verdict = check(counter)
        guard verdict == .fresh else { return verdict }
        if counter > highest {
            let wordCount = UInt64(words.count)
            let currentBlock = highest / 64
            let newBlock = counter / 64
            let toClear = min(newBlock - currentBlock, wordCount)
            var block = currentBlock
            for _ in 0..<toClear {
                block += 1
                words[Int(block % wordCount)] = 0
            }
            highest = counter
        }
        let (word, mask) = Self.position(of: counter)
        words[word] |= mask
        return verdict
    }

    /// The word index and bit mask of `counter` in the ring.
    static func position(of counter: UInt64) -> (Int, UInt64) {
        let bit = counter % UInt64(bitmapBits)
        return (Int(bit / 64), UInt64(1) << (bit % 64))
    }
}
