import Crypto
import Foundation
import NIOCore
import NIOEmbedded
import Traversal

/// The cloud's signalling frames: the input both as a byte stream through `CloudFrameDecoder` (length
/// prefixes, JSON, validation) and as one frame body; every message that passes re-encodes and decodes
/// to itself.
enum CloudFrameFuzz {
    static let target = FuzzTarget(
        name: "cloud-frame",
        summary: "CloudFrameDecoder over a byte stream and CloudFrameDecoder.message(from:) on one body; encode round trip",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        if let message = try? CloudFrameDecoder.message(from: ByteBuffer(bytes: data)) {
            roundTrip(message)
        }
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(CloudFrameDecoder()))
        defer { _ = try? channel.finish() }
        // Two writes, split where the first byte says, so partial frames are exercised too.
        let split = data.isEmpty ? 0 : Int(data[0]) % (data.count + 1)
        for part in [data[..<split], data[split...]] {
            do {
                try channel.writeInbound(ByteBuffer(bytes: part))
            } catch {
                return
            }
            while let message = try? channel.readInbound(as: CloudMessage.self) { roundTrip(message) }
        }
    }

    static func roundTrip(_ message: CloudMessage) {
        var buffer = ByteBufferAllocator().buffer(capacity: 256)
        guard (try? CloudFrameEncoder().encode(data: message, out: &buffer)) != nil else { return }
        buffer.moveReaderIndex(forwardBy: CloudProtocol.lengthPrefixSize)
        fuzzCheck((try? CloudFrameDecoder.message(from: buffer)) == message, "\(message.type) does not survive re-encoding")
    }

    static func seeds() -> [(String, [UInt8])] {
        let identity = try! DeviceIdentity(seed: Array(repeating: 7, count: 32))
        let device = DeviceID(publicKey: identity.publicKey).description
        let key = identity.publicKey.rawRepresentation
        let offer = PeerOffer(identityKey: key, candidates: [
            Candidate(strategy: "direct-lan", kind: .host, address: "192.168.1.20:40000"),
            Candidate(strategy: "udp-hole-punch", kind: .serverReflexive, address: "198.51.100.4:61000", detail: ["nat": "easy"]),
            Candidate(strategy: "tcp-simultaneous-open", kind: .host, transport: "tcp", address: "[2001:db8::20]:40001"),
        ], strategies: ["direct-lan", "udp-hole-punch", "tcp-simultaneous-open", "tls-relay"])
        let relay = RelayGrant(urls: ["turns:relay.example.org:443"], username: "1700000000:viewer", password: "c2VjcmV0", expires: 1_700_000_000)
        let answerKey = Data(repeating: 9, count: CloudProtocol.answerKeyLength).base64EncodedString()
        let sealed = Data((0..<96).map { UInt8($0) }).base64EncodedString()
        let messages: [(String, CloudMessage)] = [
            ("register", .register(deviceID: device, publicKey: key.base64EncodedString())),
            ("challenge", .challenge(nonce: Data(repeating: 1, count: CloudProtocol.nonceLength).base64EncodedString())),
            ("prove", .prove(signature: Data(repeating: 2, count: CloudProtocol.signatureLength).base64EncodedString())),
            ("registered", .registered(observedAddress: "198.51.100.4:61000", keepaliveSeconds: 25)),
            ("ping", .ping),
            ("introduce", .introduce(requestID: "r-1", deviceID: device, offer: offer)),
            ("offer", .offer(requestID: "r-1", offer: offer, relay: relay)),
            ("answer", .answer(requestID: "r-1", offer: offer)),
            ("decline", .decline(requestID: "r-1")),
            ("start", .start(requestID: "r-1", answer: offer, relay: relay)),
            ("error", .error(requestID: "r-1", code: "rate-limited", message: "try again in 5 s")),
            ("introduce-keyed", .introduce(requestID: "r-2", deviceID: device, offer: offer, answerKey: answerKey)),
            ("offer-keyed", .offer(requestID: "r-2", offer: offer, relay: relay, requester: "198.51.100.9", answerKey: answerKey)),
            ("answer-sealed", .answer(requestID: "r-2", offer: PeerOffer(identityKey: key, candidates: [], strategies: []), sealed: sealed)),
            ("start-sealed", .start(requestID: "r-2", answer: nil, relay: nil, sealed: sealed)),
        ]
        var out: [(String, [UInt8])] = []
        var stream: [UInt8] = []
        for (name, message) in messages {
            var buffer = ByteBufferAllocator().buffer(capacity: 256)
            try! CloudFrameEncoder().encode(data: message, out: &buffer)
            let frame = Array(buffer.readableBytesView)
            out.append((name + "-frame", frame))
            out.append((name + "-body", Array(frame.dropFirst(CloudProtocol.lengthPrefixSize))))
            if stream.count < 1024 { stream += frame }
        }
        out.append(("stream", [0] + stream))
        return out
    }
}
