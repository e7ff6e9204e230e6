import Foundation
@_spi(Fuzzing) import Strategies
import Traversal

/// LAN discovery datagrams (`find` / `here`): the parser both the camera's responder and the viewer's
/// finder run on every datagram from the LAN, and the round trip of what passes.
enum LANDiscoveryFuzz {
    static let target = FuzzTarget(
        name: "lan-discovery",
        summary: "LANDiscovery.Message.decode for find and here datagrams; encode round trip",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        for type in ["find", "here"] {
            guard let message = LANDiscovery.Message.decode(data, type: type) else { continue }
            fuzzCheck(data.count <= LANDiscovery.maxDatagram && message.offer.candidates.count <= PeerOffer.maxCandidates,
                      "a datagram over the limits passed")
            guard let encoded = try? JSONEncoder().encode(message) else { continue }
            fuzzCheck(LANDiscovery.Message.decode(Array(encoded), type: type) == message || encoded.count > LANDiscovery.maxDatagram,
                      "\(type) does not survive re-encoding")
        }
    }

    static func seeds() -> [(String, [UInt8])] {
        let identity = try! DeviceIdentity(seed: Array(repeating: 9, count: 32))
        let device = DeviceID(publicKey: identity.publicKey).description
        let offer = PeerOffer(identityKey: identity.publicKey.rawRepresentation, candidates: [
            Candidate(strategy: "direct-lan", kind: .host, address: "192.168.1.20:40000"),
            Candidate(strategy: "direct-lan", kind: .host, transport: "tcp", address: "[fe80::1%eth0]:40001", detail: ["if": "eth0"]),
        ], strategies: ["direct-lan"])
        let find = LANDiscovery.Message(type: "find", deviceID: device, requestID: "lan-0a1b2c3d", offer: offer)
        let here = LANDiscovery.Message(type: "here", requestID: "lan-0a1b2c3d", offer: offer)
        return [("find", Array(try! JSONEncoder().encode(find))), ("here", Array(try! JSONEncoder().encode(here)))]
    }
}
