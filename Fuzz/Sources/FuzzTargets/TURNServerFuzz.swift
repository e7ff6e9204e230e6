import STUNLite
import TURNLite

/// The TURN server state machine (RFC 8656) fed a sequence of client messages, ChannelData frames,
/// peer datagrams and clock steps. Messages that decode are signed with the test user's key and a
/// valid nonce first, so the fuzzer reaches the authenticated paths (Allocate, Refresh, permissions,
/// channels), not only the 401 challenge.
///
/// Input: records of `op (1) ‖ length (1) ‖ bytes`; `op & 3` picks the kind, `op >> 2` seconds pass.
enum TURNServerFuzz {
    static let target = FuzzTarget(
        name: "turn-server",
        summary: "TURNServerStateMachine: signed and raw client messages, ChannelData, peer datagrams, expiry",
        run: run, seeds: seeds)

    static let realm = "example.org"
    static let username = "fuzz"
    static let credentials = TURNCredentials(realm: realm, users: [username: "secret"])
    static let nonceSecret = Array("fuzz nonce secret".utf8)
    static let client = TURNFiveTuple(client: TransportAddress("192.0.2.10:40000")!,
                                      server: TransportAddress("192.0.2.1:3478")!, transport: .udp)
    static let peer = TransportAddress("203.0.113.9:5000")!
    static let relay = TransportAddress("192.0.2.1:49152")!
    static let start = 1_000_000.0

    static func configuration() -> TURNServerConfiguration {
        var c = TURNServerConfiguration(credentials: credentials, maxAllocationsPerUser: 2, maxAllocations: 4,
                                        maxPermissionsPerAllocation: 8, maxChannelsPerAllocation: 8,
                                        nonceSecret: nonceSecret)
        c.peerPolicy = TURNPeerPolicy(allowed: [IPPrefix("0.0.0.0/0")!, IPPrefix("::/0")!])
        return c
    }

    static func run(_ data: [UInt8]) {
        var server = TURNServerStateMachine(configuration: configuration())
        let nonces = TURNNonceIssuer(secret: nonceSecret)
        var now = start
        var relays: [TURNAllocationID] = []
        var i = 0
        var steps = 0
        while i + 2 <= data.count, steps < 64 {
            steps += 1
            let op = data[i]
            let length = min(Int(data[i + 1]), data.count - i - 2)
            let bytes = Array(data[(i + 2)..<(i + 2 + length)])
            i += 2 + length
            now += Double(op >> 2)
            var actions: [TURNServerAction]
            switch op & 3 {
            case 0:
                actions = server.receiveFromClient(bytes, from: client, now: now)
            case 1:
                actions = server.receiveFromClient(signed(bytes, nonce: nonces.issue(for: client.client, now: now), now: now) ?? bytes,
                                                   from: client, now: now)
            case 2:
                actions = server.receiveFromClient(ChannelData(channel: 0x4000 | UInt16(op >> 2), payload: bytes).encode(padded: false),
                                                   from: client, now: now)
            default:
                actions = relays.last.map { server.receiveFromPeer($0, peer: peer, bytes: bytes, now: now) } ?? []
            }
            // Carry out what the server asks, the way the I/O layer would.
            var rounds = 0
            while !actions.isEmpty, rounds < 8 {
                rounds += 1
                var next: [TURNServerAction] = []
                for action in actions {
                    switch action {
                    case .openRelay(let id, _, _), .openRelayReservingNext(let id, _), .adoptReservedRelay(let id, _):
                        relays.append(id)
                        next += server.relayOpened(id, at: relay, now: now)
                    case .sendToClient(_, let reply):
                        checkReply(reply)
                    case .sendToPeer, .closeRelay, .closeClient, .releaseReservation:
                        break
                    }
                }
                actions = next
            }
            _ = server.expire(now: now)
        }
        // Everything expires in the end.
        _ = server.expire(now: now + 2 * TURNTimers.maxAllocationLifetime)
        fuzzCheck(server.allocation(for: client) == nil, "an allocation outlived its lifetime")
    }

    /// What the server sends is well-formed.
    static func checkReply(_ reply: [UInt8]) {
        if let first = reply.first, ChannelData.looksLikeChannelData(first) {
            fuzzCheck((try? ChannelData.decode(reply)) != nil, "server sent malformed ChannelData")
        } else {
            fuzzCheck((try? STUNMessage.decode(reply)) != nil, "server sent a message that does not decode")
        }
    }

    /// `bytes` as a request from the test user: credentials replaced, then MESSAGE-INTEGRITY added.
    static func signed(_ bytes: [UInt8], nonce: String, now: Double) -> [UInt8]? {
        guard var message = try? STUNMessage.decode(bytes), let key = credentials.key(for: username, now: now) else { return nil }
        let replaced: [STUNAttributeType] = [.messageIntegrity, .messageIntegritySHA256, .fingerprint, .username, .realm, .nonce]
        message.attributes.removeAll { replaced.contains($0.type) }
        message.append(Username(username))
        message.append(Realm(realm))
        message.append(Nonce(nonce))
        return message.encode(integrityKey: key)
    }

    static func seeds() -> [(String, [UInt8])] {
        let tid = STUNTransactionID(high: 1, low: 2)
        func record(_ op: UInt8, _ bytes: [UInt8]) -> [UInt8] { [op, UInt8(bytes.count)] + bytes }
        func request(_ method: STUNMethod, _ build: (inout STUNMessage) -> Void) -> [UInt8] {
            var m = STUNMessage(method: method, messageClass: .request, transactionID: tid)
            build(&m)
            return m.encode()
        }
        let allocate = request(.allocate) { $0.append(RequestedTransport.udp); $0.append(Lifetime(seconds: 60)) }
        let permission = request(.createPermission) { $0.append(XORPeerAddress(peer)) }
        let bind = request(.channelBind) { $0.append(ChannelNumber(0x4001)); $0.append(XORPeerAddress(peer)) }
        let refresh = request(.refresh) { $0.append(Lifetime(seconds: 0)) }
        var send = STUNMessage(method: .send, messageClass: .indication, transactionID: tid)
        send.append(XORPeerAddress(peer))
        send.append(DataAttribute(Array("to peer".utf8)))
        return [
            ("unauthenticated-allocate", record(0, allocate)),
            ("allocate-permission-send", record(1, allocate) + record(1, permission) + record(0, send.encode()) + record(3, [1, 2, 3])),
            ("allocate-bind-channeldata", record(1, allocate) + record(1, bind) + record(2 | 4, [9, 9]) + record(3 | 8, [4, 5])),
            ("allocate-refresh-zero", record(1, allocate) + record(1 | 40, refresh)),
        ]
    }
}
