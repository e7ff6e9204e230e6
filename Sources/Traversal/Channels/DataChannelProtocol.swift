/// How a channel delivers its messages (RFC 8831 §6.1 reliability options over PR-SCTP, RFC 3758).
public struct ChannelDelivery: Sendable, Hashable, CustomStringConvertible {
    /// When a message may be given up on.
    public enum Limit: Sendable, Hashable {
        /// Abandoned once it has waited this long unacknowledged (PR-SCTP timed reliability).
        case lifetime(Duration)
        /// Abandoned after this many retransmissions (PR-SCTP limited retransmission).
        case retransmits(Int)
    }

    /// Whether messages arrive in the order they were sent.
    public var ordered: Bool
    /// nil: every message arrives; else the limit after which a message may be abandoned.
    public var limit: Limit?

    /// Every message, in order (the default).
    public static let reliable = ChannelDelivery(ordered: true, limit: nil)
    /// Every message, in any order (no head-of-line blocking).
    public static let unordered = ChannelDelivery(ordered: false, limit: nil)

    /// Messages abandoned when not delivered within `lifetime` (live video: a late frame is useless).
    public static func partial(lifetime: Duration, ordered: Bool = true) -> ChannelDelivery {
        ChannelDelivery(ordered: ordered, limit: .lifetime(lifetime))
    }

    /// Messages abandoned after `maxRetransmits` retransmissions (0: sent once).
    public static func partial(maxRetransmits: Int, ordered: Bool = true) -> ChannelDelivery {
        ChannelDelivery(ordered: ordered, limit: .retransmits(maxRetransmits))
    }

    /// `reliable`, `unordered`, `partial(lifetime: 200 ms)`, …
    public var description: String {
        switch limit {
        case nil: return ordered ? "reliable" : "unordered"
        case .lifetime(let d): return "partial(lifetime: \(d.milliseconds) ms\(ordered ? "" : ", unordered"))"
        case .retransmits(let n): return "partial(maxRetransmits: \(n)\(ordered ? "" : ", unordered"))"
        }
    }
}

/// A channel's share of the path when several have data queued (RFC 8831 §6.4 priorities).
public enum ChannelPriority: UInt16, Sendable, Hashable, CaseIterable {
    /// Bulk transfers.
    case belowNormal = 128
    /// The default.
    case normal = 256
    /// Media.
    case high = 512
    /// Control messages (keyframe requests, …).
    case extraHigh = 1024

    /// The nearest named priority for a wire value.
    init(wire: UInt16) {
        self = Self.allCases.last { $0.rawValue <= wire } ?? .belowNormal
    }
}

/// The Data Channel Establishment Protocol (RFC 8832): a channel is announced with DATA_CHANNEL_OPEN on
/// its stream and confirmed with DATA_CHANNEL_ACK, both with PPID 50; user messages use the PPIDs of
/// RFC 8831 §8. The same messages WebRTC data channels use, so a browser peer speaks them too.
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Message Type |  Channel Type |            Priority           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Reliability Parameter                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |         Label Length          |       Protocol Length         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Label, then Protocol                       |
/// ```
///
/// Internal to the channel engine; `@_spi(Fuzzing)` exposes the codec to the fuzz targets only.
@_spi(Fuzzing) public enum DataChannelProtocol {
    /// RFC 8831 §8 payload protocol identifiers.
    enum PPID {
        /// DCEP control (RFC 8832 §8.1).
        static let control: UInt32 = 50
        /// A UTF-8 message.
        static let string: UInt32 = 51
        /// A binary message.
        static let binary: UInt32 = 53
        /// An empty UTF-8 message (sent as one byte, RFC 8831 §6.6).
        static let stringEmpty: UInt32 = 56
        /// An empty binary message.
        static let binaryEmpty: UInt32 = 57
    }

    /// DCEP message types (RFC 8832 §8.2.1).
    static let openType: UInt8 = 0x03
    static let ackType: UInt8 = 0x02
    /// Longest label or protocol accepted (bytes; the wire allows 65535).
    static let maxLabelLength = 1024

    /// A decoded DATA_CHANNEL_OPEN.
    @_spi(Fuzzing) public struct Open: Sendable, Equatable {
        /// Reliability and order (channel type and reliability parameter).
        @_spi(Fuzzing) public var delivery: ChannelDelivery
        /// The channel's priority.
        @_spi(Fuzzing) public var priority: ChannelPriority
        /// The label.
        @_spi(Fuzzing) public var label: String
        /// The sub-protocol.
        @_spi(Fuzzing) public var proto: String

        /// An OPEN with these fields.
        @_spi(Fuzzing) public init(delivery: ChannelDelivery, priority: ChannelPriority, label: String, proto: String) {
            self.delivery = delivery
            self.priority = priority
            self.label = label
            self.proto = proto
        }
    }

    /// Why a control message was refused.
    @_spi(Fuzzing) public struct Malformed: Error, Equatable {
        /// What is wrong with it.
        @_spi(Fuzzing) public var reason: String
    }

    /// DATA_CHANNEL_OPEN for a channel (RFC 8832 §5.1).
    @_spi(Fuzzing) public static func encodeOpen(_ open: Open) -> [UInt8] {
        let (type, value): (UInt8, UInt32) = switch open.delivery.limit {
        case nil: (0x00, 0)
        case .retransmits(let n): (0x01, UInt32(clamping: n))
        case .lifetime(let d): (0x02, UInt32(clamping: Int(d.milliseconds.rounded(.up))))
        }
        let label = Array(open.label.utf8.prefix(maxLabelLength))
        let proto = Array(open.proto.utf8.prefix(maxLabelLength))
        var out: [UInt8] = [openType, type | (open.delivery.ordered ? 0 : 0x80)]
        out += be16(open.priority.rawValue) + be32(value) + be16(UInt16(label.count)) + be16(UInt16(proto.count))
        return out + label + proto
    }

    /// Parses a DCEP message: an OPEN, or nil for an ACK; throws on anything else.
    @_spi(Fuzzing) public static func decode(_ bytes: [UInt8]) throws(Malformed) -> Open? {
        guard let type = bytes.first else { throw Malformed(reason: "empty control message") }
        if type == ackType {
            guard bytes.count == 1 else { throw Malformed(reason: "ACK of \(bytes.count) bytes") }
            return nil
        }
        guard type == openType else { throw Malformed(reason: "unknown control message type \(type)") }
        guard bytes.count >= 12 else { throw Malformed(reason: "OPEN of \(bytes.count) bytes is shorter than its header") }
        let channelType = bytes[1]
        let priority = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        let value = bytes[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let labelLength = Int(bytes[8]) << 8 | Int(bytes[9])
        let protoLength = Int(bytes[10]) << 8 | Int(bytes[11])
        guard labelLength <= maxLabelLength, protoLength <= maxLabelLength else {
            throw Malformed(reason: "label or protocol longer than \(maxLabelLength) bytes")
        }
        guard bytes.count == 12 + labelLength + protoLength else {
            throw Malformed(reason: "OPEN announces \(12 + labelLength + protoLength) bytes, has \(bytes.count)")
        }
        let ordered = channelType & 0x80 == 0
        let limit: ChannelDelivery.Limit?
        switch channelType & 0x7F {
        case 0x00: limit = nil
        case 0x01: limit = .retransmits(Int(value))
        case 0x02: limit = .lifetime(.milliseconds(Int64(value)))
        default: throw Malformed(reason: "unknown channel type \(channelType)")
        }
        let label = String(decoding: bytes[12..<(12 + labelLength)], as: UTF8.self)
        let proto = String(decoding: bytes[(12 + labelLength)...], as: UTF8.self)
        return Open(delivery: ChannelDelivery(ordered: ordered, limit: limit), priority: ChannelPriority(wire: priority),
                    label: label, proto: proto)
    }

    /// DATA_CHANNEL_ACK (RFC 8832 §5.2).
    @_spi(Fuzzing) public static let ack: [UInt8] = [ackType]

    /// The engine's view of a delivery.
    static func engineDelivery(_ delivery: ChannelDelivery) -> SCTPAssociation.Delivery {
        switch delivery.limit {
        case nil: return .init(ordered: delivery.ordered, policy: 0, value: 0)
        case .lifetime(let d): return .init(ordered: delivery.ordered, policy: SCTPAssociation.Delivery.ttl,
                                            value: UInt32(clamping: max(1, Int(d.milliseconds.rounded(.up)))))
        case .retransmits(let n): return .init(ordered: delivery.ordered, policy: SCTPAssociation.Delivery.rtx, value: UInt32(clamping: n))
        }
    }

    private static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    private static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
}
