import Crypto
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A device's printable, checksummed ID (UID), derived from its Ed25519 identity public key.
///
/// Form: `TRAV-XXXX-XXXX-XXXX-XXXX`, 16 symbols of Crockford's base32 alphabet
/// (`0123456789ABCDEFGHJKMNPQRSTVWXYZ`, 5 bits each, 80 bits in all):
///
/// ```
///  TRAV- s0 s1 s2 s3 - s4 … s14 s15
///        └──────── 75 bits of H ────────┘ └ check symbol (GF(32)) ┘
///  H = scrypt(SHA-256("trav/device-id/v1\0" ‖ Ed25519 public key), salt: "trav/device-id/v1",
///             N = 2^14, r = 8, p = 1)
/// ```
///
/// **Checksum.** The 16th symbol makes `Σ αⁱ·sᵢ = 0` over GF(32) (α a root of x⁵+x²+1, of order
/// 31). Because every weight αⁱ is distinct and non-zero, *every* single mistyped symbol and
/// *every* swap of two different symbols is detected; other random typos pass with probability
/// 1/32.
///
/// **Second-preimage resistance.** The remaining 75 bits carry the hash, so binding a chosen UID
/// to an attacker's key takes ~2^75 key-generation-plus-derivation trials, or 2^75/T to hit any
/// one of T registered devices. SHA-256 alone would leave that multi-target case within reach of
/// hardware that hashes ~2^30 keys per second per device (2^20 cameras → about a GPU-year). The
/// memory-hard scrypt step (16 MiB, tens of milliseconds, paid once when a UID is created or
/// checked) cuts a GPU to roughly 2^13 trials per second, which puts a targeted hijack near 2^62
/// GPU-seconds (~10^11 GPU-years) and even the "any of a million cameras" attack near 10^5
/// GPU-years. That is enough for a key that also proves possession in every handshake: the UID
/// only has to stop an attacker from *choosing* a key that matches someone else's UID.
public struct DeviceID: Hashable, Sendable, CustomStringConvertible {
    /// The fixed prefix of every printed UID.
    public static let prefix = "TRAV"
    /// Number of base32 symbols after the prefix (four groups of four).
    public static let symbolCount = 16
    /// Number of bits of the derived hash carried in the UID (the rest is the check symbol).
    public static let hashBitCount = 75
    /// Domain-separation label for the UID derivation.
    static let domain = Array("trav/device-id/v1".utf8)
    /// scrypt cost parameters of the stretching step (RFC 7914 §2): N, r, p.
    static let stretching = KeyDerivation.ScryptCost(rounds: 1 << 14, blockSize: 8, parallelism: 1)

    /// Crockford base32 alphabet, in value order.
    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    /// Symbol values (0...31), `symbolCount` of them, the last being the check symbol.
    let symbols: [UInt8]

    /// Derives the UID of an Ed25519 identity public key (costs one scrypt evaluation).
    public init(publicKey: Curve25519.Signing.PublicKey) {
        let digest = DeviceID.derive(publicKey: publicKey.rawRepresentation)
        var symbols = [UInt8]()
        symbols.reserveCapacity(DeviceID.symbolCount)
        for index in 0..<(DeviceID.symbolCount - 1) {
            symbols.append(DeviceID.fiveBits(of: digest, at: index * 5))
        }
        symbols.append(GF32.checkSymbol(for: symbols))
        self.symbols = symbols
    }

    /// Parses a printed UID: case-insensitive, dashes and whitespace optional, the `TRAV` prefix
    /// optional, and Crockford's aliases accepted (`O` → `0`, `I`/`L` → `1`).
    public init(_ string: String) throws {
        var compact = [UInt8]()
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "-"), UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                continue
            case UInt8(ascii: "a")...UInt8(ascii: "z"):
                compact.append(byte - 32)
            default:
                compact.append(byte)
            }
        }
        let prefix = Array(DeviceID.prefix.utf8)
        if compact.count == DeviceID.symbolCount + prefix.count, compact.starts(with: prefix) {
            compact.removeFirst(prefix.count)
        }
        guard compact.count == DeviceID.symbolCount else {
            throw DeviceIDError(
                code: .invalidLength,
                detail: "expected \(DeviceID.symbolCount) symbols after \(DeviceID.prefix)-, got \(compact.count)")
        }
        var symbols = [UInt8]()
        symbols.reserveCapacity(compact.count)
        for (offset, byte) in compact.enumerated() {
            guard let value = DeviceID.value(of: byte) else {
                throw DeviceIDError(
                    code: .invalidCharacter,
                    detail: "symbol \(offset) is not in the base32 alphabet")
            }
            symbols.append(value)
        }
        guard GF32.syndrome(of: symbols) == 0 else {
            throw DeviceIDError(code: .checksumMismatch, detail: "check symbol does not match (typo?)")
        }
        self.symbols = symbols
    }

    /// Bytes of ``packed``: the 16 five-bit symbols, 80 bits.
    public static let packedLength = symbolCount * 5 / 8

    /// The UID in ``packedLength`` bytes (its symbols' 5-bit values, big-endian), for compact binary formats.
    public var packed: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: DeviceID.packedLength)
        for (index, symbol) in symbols.enumerated() {
            for bit in 0..<5 where symbol & (0x10 >> bit) != 0 {
                let position = index * 5 + bit
                bytes[position / 8] |= 0x80 >> UInt8(position % 8)
            }
        }
        return bytes
    }

    /// The UID packed in `bytes` (``packed``); nil for another length or a check symbol that does not match.
    public init?(packed bytes: some Collection<UInt8>) {
        let array = Array(bytes)
        guard array.count == DeviceID.packedLength else { return nil }
        let symbols = (0..<DeviceID.symbolCount).map { DeviceID.fiveBits(of: array, at: $0 * 5) }
        guard GF32.syndrome(of: symbols) == 0 else { return nil }
        self.symbols = symbols
    }

    /// The canonical printed form, `TRAV-XXXX-XXXX-XXXX-XXXX`.
    public var description: String {
        var text = DeviceID.prefix
        for (index, symbol) in symbols.enumerated() {
            if index % 4 == 0 { text.append("-") }
            text.append(Character(Unicode.Scalar(DeviceID.alphabet[Int(symbol)])))
        }
        return text
    }

    /// Whether `publicKey` is the key this UID was derived from.
    public func matches(publicKey: Curve25519.Signing.PublicKey) -> Bool {
        DeviceID(publicKey: publicKey) == self
    }

    /// Whether `rawKey` (32 bytes, as offers carry it) is a valid Ed25519 key this UID was derived from.
    public func matches(rawPublicKey rawKey: Data) -> Bool {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: rawKey) else { return false }
        return matches(publicKey: key)
    }

    /// Derivations kept in memory, so a connection checking the same key several times (cloud
    /// answer, handshake) pays for one scrypt; bounded, the oldest dropped first.
    static let derivationCacheLimit = 256
    private static let derivationCache = Mutex<(entries: [Data: [UInt8]], order: [Data])>(([:], []))

    /// `scrypt(SHA-256(domain ‖ 0x00 ‖ key))`, 32 bytes; memoised (see ``derivationCacheLimit``).
    static func derive(publicKey: Data) -> [UInt8] {
        if let hit = derivationCache.withLock({ $0.entries[publicKey] }) { return hit }
        let value = deriveUncached(publicKey: publicKey)
        derivationCache.withLock { cache in
            guard cache.entries[publicKey] == nil else { return }
            cache.entries[publicKey] = value
            cache.order.append(publicKey)
            if cache.order.count > derivationCacheLimit {
                cache.entries[cache.order.removeFirst()] = nil
            }
        }
        return value
    }

    private static func deriveUncached(publicKey: Data) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: domain + [0])
        hasher.update(data: publicKey)
        let hashed = Array(hasher.finalize())
        do {
            return try KeyDerivation.scrypt(password: hashed, salt: domain, cost: stretching, length: 32)
        } catch {
            // Fixed, valid parameters: only an allocation failure gets here.
            fatalError("scrypt with the fixed DeviceID parameters failed: \(error)")
        }
    }

    /// The 5-bit big-endian group starting at bit `bitOffset` of `bytes`.
    static func fiveBits(of bytes: [UInt8], at bitOffset: Int) -> UInt8 {
        let byteIndex = bitOffset / 8
        let high = UInt16(bytes[byteIndex]) << 8
        let low = byteIndex + 1 < bytes.count ? UInt16(bytes[byteIndex + 1]) : 0
        let window = high | low
        return UInt8((window >> (11 - UInt16(bitOffset % 8))) & 0x1F)
    }

    /// The value of an upper-case Crockford symbol, including its aliases.
    static func value(of byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "O"): return 0
        case UInt8(ascii: "I"), UInt8(ascii: "L"): return 1
        default: return alphabet.firstIndex(of: byte).map { UInt8($0) }
        }
    }
}

/// Why a printed UID was rejected.
public struct DeviceIDError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// Wrong number of symbols.
        public static let invalidLength = Code(name: "invalid-length")
        /// A character outside the base32 alphabet.
        public static let invalidCharacter = Code(name: "invalid-character")
        /// The check symbol does not match: a typo.
        public static let checksumMismatch = Code(name: "checksum-mismatch")
    }

    /// What went wrong.
    public let code: Code
    /// Where and why.
    public let detail: String
}

/// Arithmetic in GF(2⁵) modulo x⁵ + x² + 1, for the UID's check symbol.
enum GF32 {
    /// Product of two field elements (carry-less multiply, then reduce).
    static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var result: UInt8 = 0
        var a = a
        var b = b
        while b != 0 {
            if b & 1 != 0 { result ^= a }
            b >>= 1
            a <<= 1
            if a & 0x20 != 0 { a ^= 0x25 }
        }
        return result
    }

    /// αⁱ, α = x.
    static func power(_ exponent: Int) -> UInt8 {
        var value: UInt8 = 1
        for _ in 0..<(exponent % 31) { value = multiply(value, 2) }
        return value
    }

    /// `Σ αⁱ · symbolsᵢ`; zero for a valid UID.
    static func syndrome(of symbols: [UInt8]) -> UInt8 {
        var sum: UInt8 = 0
        for (index, symbol) in symbols.enumerated() { sum ^= multiply(power(index), symbol) }
        return sum
    }

    /// The symbol that, appended to `symbols`, makes the syndrome zero.
    static func checkSymbol(for symbols: [UInt8]) -> UInt8 {
        let partial = syndrome(of: symbols)
        // Solve α^n · c = partial: c = partial · α^(31 − n).
        return multiply(partial, power(31 - symbols.count))
    }
}
