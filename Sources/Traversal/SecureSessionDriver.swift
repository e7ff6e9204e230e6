import Crypto
import Foundation

/// The first byte of every datagram or stream message between peers, so one socket can carry STUN
/// (first byte 0–3, RFC 7983), strategy probes and the secure session side by side.
public enum PeerWire {
    /// Reachability probes of strategies (their format is the strategy's own).
    public static let probe: UInt8 = 0xD1
    /// A Noise handshake message.
    public static let handshake: UInt8 = 0xD2
    /// A sealed secure-session packet (explicit counter, ciphertext, tag).
    public static let sealed: UInt8 = 0xD3
    /// Bytes a sealed packet adds to a session message: wire type, counter, tag, message type.
    public static let sealedOverhead = 1 + SecureDatagramChannel.counterLength + Noise.tagLength + 1

    /// True for message types the Connector consumes (a transport hands only these on).
    public static func isSessionMessage(_ bytes: [UInt8]) -> Bool {
        bytes.first == handshake || bytes.first == sealed
    }
}

/// Types of plaintext messages inside the secure session.
enum SessionMessageType: UInt8 {
    case hello = 0x01
    case welcome = 0x02
    case denied = 0x03
    case application = 0x10
    case keepalive = 0x11
    case close = 0x12
    /// An SCTP packet of the connection's channel association (RFC 9260, carried as RFC 8261 carries it in DTLS).
    case sctp = 0x13
    /// A path MTU probe (RFC 8899 §4.1): the probed size (2 bytes, big-endian), then padding up to it.
    case pathProbe = 0x14
    /// Acknowledges a ``pathProbe`` that arrived whole: the probed size (2 bytes, big-endian).
    case pathProbeAck = 0x15
    /// Offers upgrade candidates (``PathMigrationStateMachine``): attempt (4 bytes), session token (8), JSON ``PeerOffer``.
    case pathOffer = 0x16
    /// Answers a ``pathOffer`` with our candidates, in the same format.
    case pathAnswer = 0x17
    /// Asks for an answer on the path it came by: a nonce (8 bytes).
    case pathCheck = 0x18
    /// Answers a ``pathCheck`` on the same path: its nonce (8 bytes).
    case pathCheckAnswer = 0x19
    /// The sender now sends on the path this came by: its move epoch (4 bytes, only grows).
    case pathSwitch = 0x1A
    /// A fresh end of the relay standby, offered by the side whose own end died (``PathMigrationStateMachine/peerRenewedStandby(now:)``):
    /// JSON ``PeerOffer`` with the new relayed candidate.
    case standbyOffer = 0x1B
}

/// What the viewer presents inside the encrypted session.
struct SessionHello: Codable {
    /// `password` or `paired-key`.
    var kind: String
    /// The password, for `password`.
    var password: String?

    /// The hello presenting `credential`.
    init(_ credential: AccessCredential) {
        switch credential {
        case .password(let p): (kind, password) = ("password", p)
        case .pairedKey: (kind, password) = ("paired-key", nil)
        }
    }

    /// The credential it presents (any kind but `password` presents the paired key).
    var credential: AccessCredential { kind == "password" ? .password(password ?? "") : .pairedKey }
}

/// Runs the identity-bound Noise handshake over a ``PeerTransport``, with retransmission on datagram paths.
enum SecureSessionDriver {
    /// Interval between retransmissions of an unanswered handshake or hello message.
    static let retransmitInterval: Duration = .milliseconds(200)

    /// The viewer's side: initiator; returns the session and the final message, unsent: the caller
    /// sends it only on the winning path, repeating it until the camera answers.
    /// The responder must hold `peerKey`, which the caller checks against the UID before sending the final message.
    static func initiate(over transport: any PeerTransport, identity: DeviceIdentity,
                         pinning peerKey: Curve25519.Signing.PublicKey) async throws -> (SecureSession, [UInt8]) {
        var machine = SecureHandshakeStateMachine.initiator(identity: identity, pinning: peerKey)
        let first = [PeerWire.handshake] + (try machine.start())
        let sent = ContinuousClock.now
        let resender = repeatSending(first, over: transport)
        defer { resender.cancel() }
        while true {
            let frame = try await transport.receive()
            guard frame.first == PeerWire.handshake else { continue }
            let action: SecureHandshakeAction
            do {
                action = try machine.receive(Array(frame.dropFirst()))
            } catch let error as SecureHandshakeError {
                throw error
            } catch {
                continue  // a stray or corrupted message; the state is unchanged, keep waiting
            }
            switch action {
            case .sendAndComplete(let last, var session):
                // Not sent here: only the path that wins the race sends the final message, so the
                // camera completes on the same path as the viewer (the caller repeats it with hello).
                session.roundTrip = ContinuousClock.now - sent
                return (session, [PeerWire.handshake] + last)
            case .send(let next):
                try await transport.send([PeerWire.handshake] + next)
            case .complete(var session):
                session.roundTrip = ContinuousClock.now - sent
                return (session, [])
            }
        }
    }

    /// The camera's side: responder; answers repeats of the first message with its cached reply.
    static func respond(over transport: any PeerTransport, identity: DeviceIdentity) async throws -> SecureSession {
        var machine = SecureHandshakeStateMachine.responder(identity: identity)
        var firstSeen: [UInt8]?
        var reply: [UInt8]?
        var replied: ContinuousClock.Instant?
        while true {
            let frame = try await transport.receive()
            guard frame.first == PeerWire.handshake else { continue }
            if let reply, frame == firstSeen {
                try await transport.send(reply)
                continue
            }
            let action: SecureHandshakeAction
            do {
                action = try machine.receive(Array(frame.dropFirst()))
            } catch {
                continue
            }
            switch action {
            case .send(let bytes):
                let r = [PeerWire.handshake] + bytes
                reply = r
                firstSeen = frame
                replied = .now
                try await transport.send(r)
            case .sendAndComplete(let bytes, let session):
                try await transport.send([PeerWire.handshake] + bytes)
                return session
            case .complete(var session):
                // From our reply to the viewer's final message: a round trip, plus whatever the viewer
                // waited before sending it (its check of our key).
                session.roundTrip = replied.map { ContinuousClock.now - $0 }
                return session
            }
        }
    }

    /// Sends `message` now and again every ``retransmitInterval`` until cancelled (datagram paths only).
    static func repeatSending(_ messages: [UInt8]..., over transport: any PeerTransport) -> Task<Void, Never> {
        Task {
            var first = true
            repeat {
                if !first && !transport.isDatagram { return }
                first = false
                for m in messages { try? await transport.send(m) }
                try? await Task.sleep(for: retransmitInterval)
            } while !Task.isCancelled
        }
    }
}
