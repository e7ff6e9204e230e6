/// The 96-bit transaction ID that pairs a response with its request (RFC 8489 §6).
public struct STUNTransactionID: Hashable, Sendable, CustomStringConvertible {
    /// High 32 bits of the ID as sent on the wire (big-endian).
    public let high: UInt32
    /// Low 64 bits of the ID as sent on the wire (big-endian).
    public let low: UInt64

    /// Creates an ID from its two halves.
    public init(high: UInt32, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Creates an ID from exactly 12 bytes; `nil` for any other count.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 12 else { return nil }
        var h: UInt32 = 0
        var l: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 4 { h = h << 8 | UInt32(b) } else { l = l << 8 | UInt64(b) }
        }
        self.init(high: h, low: l)
    }

    /// A fresh ID from the system's cryptographically secure generator (RFC 8489 §6: uniformly random).
    public static func random() -> STUNTransactionID {
        var rng = SystemRandomNumberGenerator()
        return STUNTransactionID(high: rng.next(), low: rng.next())
    }

    /// The 12 bytes as sent on the wire.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(12)
        for s in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: high >> UInt32(s))) }
        for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: low >> UInt64(s))) }
        return out
    }

    /// Lower-case hexadecimal, 24 digits.
    public var description: String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
