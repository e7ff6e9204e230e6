/// A STUN method: the 12-bit number that names what a message does (RFC 8489 §5, §18.2).
public struct STUNMethod: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 12-bit method number; higher bits are masked off.
    public let rawValue: UInt16

    /// Creates a method from its number, keeping the low 12 bits (RFC 8489 §5).
    public init(rawValue: UInt16) { self.rawValue = rawValue & 0x0FFF }

    /// Binding (0x001), the only method STUN itself defines (RFC 8489 §18.2).
    public static let binding = STUNMethod(rawValue: 0x001)

    /// A readable name: `binding` or the hexadecimal number.
    public var description: String {
        self == .binding ? "binding" : "method(0x\(String(rawValue, radix: 16)))"
    }
}

/// The class of a STUN message (RFC 8489 §5).
public enum STUNClass: UInt8, Hashable, Sendable, CustomStringConvertible, CaseIterable {
    /// A request, answered by a success or error response.
    case request = 0b00
    /// An indication, never answered.
    case indication = 0b01
    /// A success response.
    case successResponse = 0b10
    /// An error response, carrying ERROR-CODE.
    case errorResponse = 0b11

    /// A readable name.
    public var description: String {
        switch self {
        case .request: "request"
        case .indication: "indication"
        case .successResponse: "success"
        case .errorResponse: "error"
        }
    }
}

/// The 14-bit message type packing of method and class (RFC 8489 §5, figure 3).
///
/// ```
///   0                 1
///   2  3  4 5 6 7 8 9 0 1 2 3 4 5
///  +--+--+-+-+-+-+-+-+-+-+-+-+-+-+
///  |M |M |M|M|M|C|M|M|M|C|M|M|M|M|
///  |11|10|9|8|7|1|6|5|4|0|3|2|1|0|
///  +--+--+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public enum STUNMessageType {
    /// Packs a method and a class into the 16-bit type field.
    @inlinable
    public static func pack(method: STUNMethod, messageClass: STUNClass) -> UInt16 {
        let m = method.rawValue
        let c = UInt16(messageClass.rawValue)
        return (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
    }

    /// Unpacks the 16-bit type field into method and class; the two top bits are ignored.
    @inlinable
    public static func unpack(_ type: UInt16) -> (method: STUNMethod, messageClass: STUNClass) {
        let m = (type & 0x000F) | ((type & 0x00E0) >> 1) | ((type & 0x3E00) >> 2)
        let c = ((type >> 4) & 0b01) | ((type >> 7) & 0b10)
        return (STUNMethod(rawValue: m), STUNClass(rawValue: UInt8(c))!)
    }
}
