import DatagramIO
import STUNLite
import TURNLite

/// Authenticated TURN requests over a flood lane's own UDP socket, one at a time and blocking: how a
/// lane allocates, binds its channel and frees its allocation on the same 5-tuple it floods from
/// (RFC 8656 §7–12; long-term credentials by ``TURNClientCredentials``, RFC 8489 §9.2).
///
/// Setup happens before the clock starts, on loopback, so retransmission is a fixed short interval
/// rather than RFC 8489's backoff; every wait is bounded.
struct TURNFloodSession {
    /// Wait for an answer before sending a request again, milliseconds.
    static let retransmitMilliseconds = 100
    /// Sends of one request before giving up (2 s in all).
    static let attempts = 20
    /// Receive room for an answer.
    static let maxAnswerBytes = 2048

    /// The lane's socket, connected to the server.
    let socket: MultiMessageSocket
    /// What the server's challenges taught so far.
    private var credentials: TURNClientCredentials

    /// A session on `socket` for `username`/`password`.
    init(socket: MultiMessageSocket, username: String, password: String) {
        self.socket = socket
        credentials = TURNClientCredentials(username: username, password: password)
    }

    /// Runs one request to success, answering 401/438 challenges; throws on an error answer or silence.
    mutating func request(_ method: STUNMethod, _ build: (inout STUNMessage) -> Void) throws(FloodError) -> STUNMessage {
        var transaction = TURNClientCredentials.Transaction()
        for _ in 0...TURNClient.maxChallengeRounds {
            var m = STUNMessage(method: method, messageClass: .request)
            build(&m)
            let key = credentials.sign(&m, in: &transaction)
            let response = try exchange(m.encode(integrityKey: key, fingerprint: true), m.transactionID, method)
            if let key, response.hasIntegrity, !response.verifyMessageIntegrity(key: key) {
                throw FloodError("\(method): response MESSAGE-INTEGRITY does not verify")
            }
            if response.messageClass == .successResponse { return response }
            do {
                try credentials.absorb(response, method: method, in: &transaction)
            } catch {
                throw FloodError("\(method) to \(socket.peer): \(error)")
            }
        }
        throw FloodError("\(method) to \(socket.peer): too many challenges")
    }

    /// Sends `bytes` until the response to `transaction` arrives (other datagrams are skipped).
    private func exchange(_ bytes: [UInt8], _ transaction: STUNTransactionID, _ method: STUNMethod) throws(FloodError) -> STUNMessage {
        for _ in 0..<Self.attempts {
            _ = try socket.send(bytes)
            let deadline = FloodClock.now() + Double(Self.retransmitMilliseconds) / 1000
            while case let left = deadline - FloodClock.now(), left > 0 {
                guard let answer = try socket.receive(waitingMilliseconds: Int32((left * 1000).rounded(.up)),
                                                      maxBytes: Self.maxAnswerBytes) else { continue }
                if let m = try? STUNMessage.decode(answer), m.transactionID == transaction,
                   m.messageClass == .successResponse || m.messageClass == .errorResponse {
                    return m
                }
            }
        }
        throw FloodError("\(method) to \(socket.peer): no answer in \(Self.attempts * Self.retransmitMilliseconds) ms")
    }
}
