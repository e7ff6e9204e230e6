/// Which of an RFC 5780 server's sockets a datagram arrived on or leaves from.
///
/// The server listens on two IPs × two ports; `changedIP` and `changedPort` are relative to the primary.
public struct STUNSocketRole: Hashable, Sendable, CustomStringConvertible {
    /// True for the alternate IP address.
    public var alternateIP: Bool
    /// True for the alternate port.
    public var alternatePort: Bool

    /// Creates a role.
    public init(alternateIP: Bool, alternatePort: Bool) {
        self.alternateIP = alternateIP
        self.alternatePort = alternatePort
    }

    /// The primary socket (IP 1, port 1).
    public static let primary = STUNSocketRole(alternateIP: false, alternatePort: false)
    /// All four roles, primary first.
    public static let all: [STUNSocketRole] = [
        .primary, .init(alternateIP: false, alternatePort: true),
        .init(alternateIP: true, alternatePort: false), .init(alternateIP: true, alternatePort: true),
    ]

    /// `A1:P1` style name.
    public var description: String { "A\(alternateIP ? 2 : 1):P\(alternatePort ? 2 : 1)" }
}

/// The transport a request arrived over.
public enum STUNTransport: String, Sendable, Hashable, Codable {
    /// UDP (RFC 8489 §6.2.1).
    case udp
    /// TCP (RFC 8489 §6.2.2).
    case tcp
    /// TLS over TCP (RFC 8489 §6.2.3).
    case tls
}

/// The answer to one request: bytes, which socket sends them, and to where.
public struct STUNReply: Sendable, Equatable {
    /// The encoded response.
    public var bytes: [UInt8]
    /// The socket to send from (differs from the receiving one when CHANGE-REQUEST asked).
    public var from: STUNSocketRole
    /// The destination: the request's source, or its RESPONSE-PORT.
    public var to: TransportAddress
}

/// One optional attribute of a success response, in the order tried against the amplification budget.
enum STUNOptionalAttribute: Sendable {
    /// An attribute that depends only on the sockets: encoded once, the same for every client.
    case fixed(STUNAttribute)
    /// MAPPED-ADDRESS: the client's reflexive address in the clear (RFC 8489 §14.1), written per request.
    case mappedAddress
}

/// The server's Binding logic as a pure function of the request: no sockets, no clocks, no state
/// (RFC 8489 §6.3, RFC 5780 §6).
///
/// What a success response carries, in the order attributes are tried against the budget:
///
/// ```
/// RFC 5389+ request  XOR-MAPPED-ADDRESS, PADDING*, OTHER-ADDRESS+, MAPPED-ADDRESS+, RESPONSE-ORIGIN+, SOFTWARE°
/// RFC 3489 request   MAPPED-ADDRESS, PADDING*, CHANGED-ADDRESS+, SOURCE-ADDRESS
///   * when the request had PADDING: as long as the request's (RFC 5780 §6.1)
///   + with behaviour discovery on (an alternate IP: RFC 5780 §6.1; RFC 3489 §11.2.3, §11.2.5)
///   ° when configured (RFC 8489 §14.14)
/// ```
///
/// Anti-amplification: a reply is never larger than ``maxAmplification`` × the request. The first
/// attribute is always sent; each later one only if it fits, so the smallest request (a bare 20-byte
/// Binding, 60 bytes of budget) gets OTHER-ADDRESS and MAPPED-ADDRESS over IPv4 (56 bytes, enough
/// for coturn's `turnutils_natdiscovery` to check for an ALG) but not the RESPONSE-ORIGIN RFC 5780
/// §6.1 also asks for, which without CHANGE-REQUEST repeats the address the client sent to; a request
/// with FINGERPRINT or CHANGE-REQUEST (28 bytes) gets it too. Over IPv6 the addresses are 12 bytes
/// longer and fewer fit. A classic RFC 3489 client always gets both CHANGED-ADDRESS and SOURCE-ADDRESS over
/// IPv4 (56 bytes for a 20-byte request), so it can tell a symmetric NAT from a cone; a server without
/// an alternate IP sends it no CHANGED-ADDRESS and refuses its CHANGE-REQUEST with 420 (RFC 5780 §6),
/// so such a client fails loudly instead of misclassifying. PADDING is answered with PADDING of the
/// request's length, not the MTU RFC 5780 §6.1 suggests: that would amplify. PADDING with
/// RESPONSE-PORT is 400 (RFC 5780 §6.1, §7.5). FINGERPRINT only when the request carried one.
public struct STUNBindingResponder: Sendable {
    /// A response is at most this many times the size of its request.
    public static let maxAmplification = 3

    /// The server's transport addresses by role; only `.primary` when there is no alternate IP.
    public var addresses: [STUNSocketRole: TransportAddress]
    /// SOFTWARE to include, if any (off by default: it only costs bytes).
    public var software: String?

    /// Creates a responder for the given addresses.
    public init(addresses: [STUNSocketRole: TransportAddress], software: String? = nil) {
        self.addresses = addresses
        self.software = software
    }

    /// True when all four RFC 5780 sockets exist, so CHANGE-REQUEST can be honoured.
    public var supportsBehaviourDiscovery: Bool { addresses.count == 4 }

    /// Answers one datagram or stream frame; `nil` means drop it silently.
    public func respond(to bytes: [UInt8], from source: TransportAddress, on role: STUNSocketRole,
                        transport: STUNTransport) -> STUNReply? {
        guard let request = try? STUNMessage.decode(bytes) else { return nil }
        guard request.messageClass == .request else { return nil }
        if request.fingerprintValid == false { return nil }
        let budget = Self.maxAmplification * bytes.count

        var response = STUNMessage(method: request.method, messageClass: .successResponse,
                                   transactionID: request.transactionID, cookie: request.cookie)
        let wantsFingerprint = request.fingerprintValid == true

        guard request.method == .binding else {
            return errorReply(400, request: request, source: source, role: role, budget: budget, fingerprint: wantsFingerprint)
        }
        let unknown = request.unknownComprehensionRequired(known: STUNAttributeType.stunKnown)
        if !unknown.isEmpty {
            return errorReply(420, request: request, source: source, role: role, budget: budget,
                              fingerprint: wantsFingerprint, unknown: unknown)
        }
        let padding = request.attributes.first { $0.type == .padding }
        if padding != nil, request.contains(.responsePort) {
            // RFC 5780 §6.1, §7.5: a request may ask for a padded response or a redirected one, not both.
            return errorReply(400, request: request, source: source, role: role, budget: budget, fingerprint: wantsFingerprint,
                              reason: "PADDING with RESPONSE-PORT")
        }

        var sendFrom = role
        var destination = source
        if transport == .udp {
            if let change = try? request.attribute(ChangeRequest.self), change.changeIP || change.changePort {
                guard supportsBehaviourDiscovery else {
                    // RFC 5780 §6.1: a server without an alternate address answers 420 for CHANGE-REQUEST.
                    return errorReply(420, request: request, source: source, role: role, budget: budget,
                                      fingerprint: wantsFingerprint, unknown: [.changeRequest])
                }
                if change.changeIP { sendFrom.alternateIP.toggle() }
                if change.changePort { sendFrom.alternatePort.toggle() }
            }
            if let port = try? request.attribute(ResponsePort.self) {
                destination.port = port.port
            }
        }

        if request.isClassic {
            response.append(MappedAddress(source))
        } else {
            response.append(XORMappedAddress(source))
        }
        let trailer = wantsFingerprint ? 8 : 0
        var size = response.encodedSize + trailer
        var optional = STUNMessage(method: .binding, messageClass: .successResponse, transactionID: request.transactionID)
        if let padding { optional.append(Padding(count: padding.value.count)) }
        for attribute in optionalAttributes(receivedOn: role, sendingFrom: sendFrom, classic: request.isClassic) {
            switch attribute {
            case .fixed(let a): optional.attributes.append(a)
            case .mappedAddress: optional.append(MappedAddress(source))
            }
        }
        for a in optional.attributes {
            let s = size + 4 + ((a.value.count + 3) & ~3)
            if s <= budget {
                response.attributes.append(a)
                size = s
            }
        }
        let encoded = response.encode(fingerprint: wantsFingerprint)
        guard encoded.count <= budget, size == encoded.count else { return nil }
        return STUNReply(bytes: encoded, from: sendFrom, to: destination)
    }

    /// The optional attributes of a success response after the mapped address (and PADDING), in the
    /// order they are tried against the amplification budget (see the table above).
    ///
    /// Only MAPPED-ADDRESS depends on the client, so ``STUNUDPFastPath`` encodes the rest once per socket.
    func optionalAttributes(receivedOn role: STUNSocketRole, sendingFrom: STUNSocketRole, classic: Bool) -> [STUNOptionalAttribute] {
        // None of these is XORed, so no transaction ID enters them.
        func fixed<A: STUNAttributeValue>(_ a: A) -> STUNOptionalAttribute {
            .fixed(STUNAttribute(type: A.attributeType, value: a.stunValue(transactionID: STUNTransactionID(high: 0, low: 0))))
        }
        let other = addresses[STUNSocketRole(alternateIP: !role.alternateIP, alternatePort: !role.alternatePort)]
        let origin = addresses[sendingFrom]
        var out: [STUNOptionalAttribute] = []
        if classic {
            if supportsBehaviourDiscovery, let other { out.append(fixed(ChangedAddress(other))) }
            if let origin { out.append(fixed(SourceAddress(origin))) }
            return out
        }
        if supportsBehaviourDiscovery {
            if let other { out.append(fixed(OtherAddress(other))) }
            out.append(.mappedAddress)
            if let origin { out.append(fixed(ResponseOrigin(origin))) }
        }
        if let software { out.append(fixed(Software(software))) }
        return out
    }

    private func errorReply(_ code: Int, request: STUNMessage, source: TransportAddress, role: STUNSocketRole,
                            budget: Int, fingerprint: Bool, unknown: [STUNAttributeType] = [], reason: String? = nil) -> STUNReply? {
        var response = STUNMessage(method: request.method, messageClass: .errorResponse,
                                   transactionID: request.transactionID, cookie: request.cookie)
        response.append(ErrorCode(code, reason: reason))
        if !unknown.isEmpty { response.append(UnknownAttributes(unknown)) }
        let encoded = response.encode(fingerprint: fingerprint)
        guard encoded.count <= budget else { return nil }
        return STUNReply(bytes: encoded, from: role, to: source)
    }
}

extension STUNMessage {
    /// The size `encode()` would produce without integrity or fingerprint.
    public var encodedSize: Int {
        attributes.reduce(STUNMessage.headerSize) { $0 + 4 + (($1.value.count + 3) & ~3) }
    }
}
