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

/// The server's Binding logic as a pure function of the request: no sockets, no clocks, no state
/// (RFC 8489 §6.3, RFC 5780 §6).
///
/// Anti-amplification: a reply is never larger than ``maxAmplification`` × the request. Optional
/// attributes are added in order of usefulness only while they fit; MAPPED-ADDRESS only for RFC 3489
/// requests, FINGERPRINT only when the request carried one, SOFTWARE only when configured.
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
        if !request.isClassic {
            for a in optionalAttributes(receivedOn: role, sendingFrom: sendFrom) {
                let s = size + 4 + ((a.value.count + 3) & ~3)
                if s <= budget {
                    response.attributes.append(a)
                    size = s
                }
            }
        }
        let encoded = response.encode(fingerprint: wantsFingerprint)
        guard encoded.count <= budget, size == encoded.count else { return nil }
        return STUNReply(bytes: encoded, from: sendFrom, to: destination)
    }

    /// The optional attributes of a success response to a non-classic request, in the order they are
    /// tried against the amplification budget: OTHER-ADDRESS and RESPONSE-ORIGIN when behaviour
    /// discovery is on (RFC 5780 §7.3–7.4), then SOFTWARE when configured (RFC 8489 §14.14).
    ///
    /// None of them is XORed, so they do not depend on the transaction: ``STUNUDPFastPath`` encodes them once per socket.
    func optionalAttributes(receivedOn role: STUNSocketRole, sendingFrom: STUNSocketRole) -> [STUNAttribute] {
        var scratch = STUNMessage(method: .binding, messageClass: .successResponse, transactionID: STUNTransactionID(high: 0, low: 0))
        if supportsBehaviourDiscovery {
            let other = STUNSocketRole(alternateIP: !role.alternateIP, alternatePort: !role.alternatePort)
            if let o = addresses[other] { scratch.append(OtherAddress(o)) }
            if let origin = addresses[sendingFrom] { scratch.append(ResponseOrigin(origin)) }
        }
        if let software { scratch.append(Software(software)) }
        return scratch.attributes
    }

    private func errorReply(_ code: Int, request: STUNMessage, source: TransportAddress, role: STUNSocketRole,
                            budget: Int, fingerprint: Bool, unknown: [STUNAttributeType] = []) -> STUNReply? {
        var response = STUNMessage(method: request.method, messageClass: .errorResponse,
                                   transactionID: request.transactionID, cookie: request.cookie)
        response.append(ErrorCode(code))
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
