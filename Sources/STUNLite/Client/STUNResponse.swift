import NIOCore

/// A response to one of our requests, with where it came from and how long it took.
public struct STUNResponse: Sendable {
    /// The decoded response.
    public var message: STUNMessage
    /// The address the response came from (differs from the server's when CHANGE-REQUEST was honoured).
    public var source: TransportAddress
    /// Our local address the transaction ran on.
    public var local: TransportAddress
    /// From the first send to the response.
    public var elapsed: TimeAmount
    /// How many times the request was sent.
    public var requestsSent: Int

    /// XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS when the server is an RFC 3489 one.
    public var mappedAddress: TransportAddress? {
        if let x = try? message.attribute(XORMappedAddress.self) { return x.address }
        return (try? message.attribute(MappedAddress.self))?.address
    }

    /// OTHER-ADDRESS, if the server offers RFC 5780 behaviour discovery.
    public var otherAddress: TransportAddress? { (try? message.attribute(OtherAddress.self))?.address }

    /// RESPONSE-ORIGIN, if present.
    public var responseOrigin: TransportAddress? { (try? message.attribute(ResponseOrigin.self))?.address }
}

/// Checks a decoded message as the answer to a transaction and turns error responses into errors.
enum STUNResponseCheck {
    static func accept(_ message: STUNMessage) -> Result<Void, STUNClientError>? {
        guard message.messageClass == .successResponse || message.messageClass == .errorResponse else { return nil }
        // RFC 8489 §7.3: a FINGERPRINT that does not match means this was not meant for us.
        if message.fingerprintValid == false { return nil }
        if message.messageClass == .errorResponse {
            let code = (try? message.attribute(ErrorCode.self)) ?? ErrorCode(500, reason: "missing ERROR-CODE")
            return .failure(STUNClientError(.errorResponse, errorCode: code, response: message))
        }
        return .success(())
    }
}
