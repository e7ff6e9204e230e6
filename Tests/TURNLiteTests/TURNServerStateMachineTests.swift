import Testing
import STUNLite
@testable import TURNLite

/// A client of the state machine: builds requests, answers challenges, reads responses.
struct MachineHarness {
    var machine: TURNServerStateMachine
    var now: Double = 1_700_000_000
    var ft = TURNFiveTuple(client: TransportAddress("198.51.100.20:5000")!, server: TransportAddress("198.51.100.1:3478")!,
                           transport: .udp)
    var username = "u"
    var password = "p"
    var realm: String?
    var nonce: String?
    static let relay = TransportAddress("198.51.100.1:50000")!

    init(_ configure: (inout TURNServerConfiguration) -> Void = { _ in }) {
        var c = TURNServerConfiguration(credentials: TURNCredentials(realm: "example.org", users: ["u": "p", "v": "q"]),
                                        nonceSecret: Array(repeating: 7, count: 32))
        configure(&c)
        machine = TURNServerStateMachine(configuration: c)
    }

    var key: [UInt8] { STUNCredentials.longTermKey(username: username, realm: realm ?? "", password: password) }

    /// Sends `m`, signed when a realm and nonce are known; returns the actions.
    mutating func send(_ m: STUNMessage, signed: Bool = true) -> [TURNServerAction] {
        var m = m
        var k: [UInt8]?
        if signed, let realm, let nonce {
            m.append(Username(username))
            m.append(Realm(realm))
            m.append(Nonce(nonce))
            k = key
        }
        return machine.receiveFromClient(m.encode(integrityKey: k, fingerprint: true), from: ft, now: now)
    }

    /// The single response in `actions`, decoded.
    func response(_ actions: [TURNServerAction]) -> STUNMessage? {
        for case .sendToClient(let to, let bytes) in actions where to == ft { return try? STUNMessage.decode(bytes) }
        return nil
    }

    static func code(_ m: STUNMessage?) -> Int? { (try? m?.attribute(ErrorCode.self))?.code }

    /// Sends `m`, answering one 401/438 challenge; returns the final response's actions.
    mutating func request(_ m: STUNMessage) -> [TURNServerAction] {
        var actions = send(m)
        let r = response(actions)
        if let code = Self.code(r), code == 401 || code == 438, let r {
            realm = (try? r.attribute(Realm.self))?.text
            nonce = (try? r.attribute(Nonce.self))?.text
            var again = m
            again.transactionID = .random()
            actions = send(again)
        }
        return actions
    }

    static func allocateRequest(_ build: (inout STUNMessage) -> Void = { _ in }) -> STUNMessage {
        var m = STUNMessage(method: .allocate, messageClass: .request)
        m.append(RequestedTransport.udp)
        build(&m)
        return m
    }

    /// Allocates and opens the relay at ``relay``; returns the allocation ID and the success response.
    mutating func allocate() throws -> (TURNAllocationID, STUNMessage) {
        let actions = request(Self.allocateRequest())
        guard case .openRelay(let id, .ipv4, false)? = actions.first else {
            throw TURNError(.badResponse, detail: "no openRelay: \(actions)")
        }
        let done = machine.relayOpened(id, at: Self.relay, now: now)
        guard let r = response(done) else { throw TURNError(.badResponse, detail: "no response") }
        return (id, r)
    }

    mutating func simple(_ method: STUNMethod, _ build: (inout STUNMessage) -> Void) -> STUNMessage? {
        var m = STUNMessage(method: method, messageClass: .request)
        build(&m)
        return response(request(m))
    }
}

/// The allocation logic without sockets, time moved by hand (RFC 8656 §5–12).
struct TURNServerStateMachineTests {
    let peer = TransportAddress("8.8.8.8:7000")!

    @Test func unauthenticatedAllocateIsChallengedAndCreatesNoState() throws {
        var h = MachineHarness()
        let r = h.response(h.send(MachineHarness.allocateRequest()))
        #expect(MachineHarness.code(r) == 401)
        #expect(try r?.attribute(Realm.self)?.text == "example.org")
        #expect(try r?.attribute(Nonce.self) != nil)
        #expect(r?.hasIntegrity == false)
        #expect(h.machine.allocationCount == 0)
        #expect(h.machine.allocation(for: h.ft) == nil)
    }

    @Test func challengesAreAtMostThreeTimesTheRequestOrNotSentAtAll() throws {
        for realm in ["trav", "example.org"] {
            var h = MachineHarness { $0.credentials.realm = realm }
            // The smallest valid Allocate: REQUESTED-TRANSPORT only, no FINGERPRINT.
            let request = MachineHarness.allocateRequest().encode()
            guard case .sendToClient(_, let challenge)? = h.machine.receiveFromClient(request, from: h.ft, now: h.now).first else {
                Issue.record("no challenge")
                continue
            }
            #expect(challenge.count <= TURNServerConfiguration.maxUnauthenticatedAmplification * request.count,
                    "\(challenge.count) bytes for \(request.count)")
            let m = try STUNMessage.decode(challenge)
            #expect(MachineHarness.code(m) == 401)
            #expect(try m.attribute(Realm.self)?.text == realm)
            #expect(try m.attribute(Nonce.self)?.text.utf8.count == TURNNonceIssuer.nonceLength)
            #expect(!m.contains(.software))
        }
        // A bare header cannot be answered within the bound: it gets nothing.
        var h = MachineHarness()
        let bare = STUNMessage(method: .allocate, messageClass: .request).encode()
        #expect(h.machine.receiveFromClient(bare, from: h.ft, now: h.now).isEmpty)
    }

    @Test func authenticatedAllocateOpensARelayAndAnswersSigned() throws {
        var h = MachineHarness()
        let (id, r) = try h.allocate()
        #expect(r.messageClass == .successResponse)
        #expect(try r.attribute(XORRelayedAddress.self)?.address == MachineHarness.relay)
        #expect(try r.attribute(XORMappedAddress.self)?.address == h.ft.client)
        #expect(try r.attribute(Lifetime.self)?.seconds == 600)
        #expect(r.verifyMessageIntegrity(key: h.key))
        #expect(h.machine.allocation(id)?.relayed == MachineHarness.relay)
    }

    @Test func wrongPasswordIsRefusedWith401() throws {
        var h = MachineHarness()
        h.password = "wrong"
        let r = h.response(h.request(MachineHarness.allocateRequest()))
        #expect(MachineHarness.code(r) == 401)
        #expect(h.machine.allocationCount == 0)
    }

    @Test func unknownUserAndWrongRealmAre401() throws {
        var h = MachineHarness()
        h.username = "nobody"
        #expect(MachineHarness.code(h.response(h.request(MachineHarness.allocateRequest()))) == 401)
        var g = MachineHarness()
        _ = g.send(MachineHarness.allocateRequest())
        g.realm = "other.org"
        g.nonce = "0000000000000000" + String(repeating: "0", count: 32)
        #expect(MachineHarness.code(g.response(g.send(MachineHarness.allocateRequest()))) == 438)
    }

    @Test func expiredNonceIsStale438WithAFreshNonce() throws {
        var h = MachineHarness()
        _ = h.response(h.request(STUNMessage(method: .binding, messageClass: .request)))
        _ = try h.allocate()
        let old = h.nonce
        h.now += TURNNonceIssuer.nonceLifetime + 1
        var m = STUNMessage(method: .refresh, messageClass: .request)
        m.append(Lifetime(seconds: 600))
        let r = h.response(h.send(m))
        #expect(MachineHarness.code(r) == 438)
        let fresh = try #require(try r?.attribute(Nonce.self)?.text)
        #expect(fresh != old)
        h.nonce = fresh
        var again = STUNMessage(method: .refresh, messageClass: .request)
        again.append(Lifetime(seconds: 600))
        #expect(h.response(h.send(again))?.messageClass == .successResponse)
    }

    @Test func nonceIsBoundToTheClientAddress() throws {
        var h = MachineHarness()
        _ = h.send(MachineHarness.allocateRequest())
        _ = h.request(MachineHarness.allocateRequest())
        h.ft.client = TransportAddress("198.51.100.20:5001")!
        #expect(MachineHarness.code(h.response(h.send(MachineHarness.allocateRequest()))) == 438)
    }

    @Test func missingUsernameWithIntegrityIs400() throws {
        var h = MachineHarness()
        let m = MachineHarness.allocateRequest()
        let bytes = m.encode(integrityKey: [1, 2, 3], fingerprint: true)
        let r = h.response(h.machine.receiveFromClient(bytes, from: h.ft, now: h.now))
        #expect(MachineHarness.code(r) == 400)
    }

    @Test func retransmittedAllocateGetsTheSameAnswerAndAnotherIs437() throws {
        var h = MachineHarness()
        _ = h.send(MachineHarness.allocateRequest())
        let r0 = h.response(h.send(MachineHarness.allocateRequest()))
        #expect(MachineHarness.code(r0) == 401)
        h.realm = try r0?.attribute(Realm.self)?.text
        h.nonce = try r0?.attribute(Nonce.self)?.text
        let req = MachineHarness.allocateRequest()
        guard case .openRelay(let id, _, _)? = h.send(req).first else { Issue.record("no relay"); return }
        let first = h.machine.relayOpened(id, at: MachineHarness.relay, now: h.now)
        // Same transaction (the client retransmits the identical bytes).
        var same = req
        same.append(Username(h.username)); same.append(Realm(h.realm!)); same.append(Nonce(h.nonce!))
        let again = h.machine.receiveFromClient(same.encode(integrityKey: h.key, fingerprint: true), from: h.ft, now: h.now)
        #expect(again == first)
        #expect(MachineHarness.code(h.response(h.send(MachineHarness.allocateRequest()))) == 437)
        #expect(h.machine.allocationCount == 1)
    }

    @Test func allocateChecksRequestedTransportAndFamily() throws {
        var h = MachineHarness()
        var m = STUNMessage(method: .allocate, messageClass: .request)
        #expect(MachineHarness.code(h.response(h.request(m))) == 400)
        m.append(RequestedTransport(protocolNumber: 6))
        #expect(MachineHarness.code(h.response(h.send(m))) == 442)
        var f = MachineHarness()
        f.machine = TURNServerStateMachine(configuration: TURNServerConfiguration(
            credentials: TURNCredentials(realm: "example.org", users: ["u": "p"]), relayFamilies: [.ipv4]))
        #expect(MachineHarness.code(f.response(f.request(MachineHarness.allocateRequest { $0.append(RequestedAddressFamily(.ipv6)) }))) == 440)
        #expect(MachineHarness.code(f.response(f.send(MachineHarness.allocateRequest { $0.append(ReservationToken([0, 0, 0, 0, 0, 0, 0, 1])) }))) == 508)
        #expect(f.machine.allocationCount == 0)
    }

    @Test func evenPortAndIPv6AreAskedOfTheIOLayer() throws {
        var h = MachineHarness()
        let a = h.request(MachineHarness.allocateRequest {
            $0.append(EvenPort(reserveNext: false))
            $0.append(RequestedAddressFamily(.ipv6))
        })
        guard case .openRelay(_, .ipv6, true)? = a.first else { Issue.record("\(a)"); return }
    }

    @Test func unknownComprehensionRequiredAttributeIs420() throws {
        var h = MachineHarness()
        let r = h.response(h.request(MachineHarness.allocateRequest {
            $0.attributes.append(STUNAttribute(type: STUNAttributeType(0x7777), value: [1, 2, 3, 4]))
        }))
        #expect(MachineHarness.code(r) == 420)
        #expect(try r?.attribute(UnknownAttributes.self)?.types == [STUNAttributeType(0x7777)])
    }

    @Test func lifetimeIsClampedBetweenDefaultAndMaximum() throws {
        for (asked, granted) in [(UInt32(10), UInt32(600)), (1200, 1200), (100_000, 3600)] {
            var h = MachineHarness()
            let a = h.request(MachineHarness.allocateRequest { $0.append(Lifetime(seconds: asked)) })
            guard case .openRelay(let id, _, _)? = a.first else { Issue.record("\(a)"); continue }
            let r = h.response(h.machine.relayOpened(id, at: MachineHarness.relay, now: h.now))
            #expect(try r?.attribute(Lifetime.self)?.seconds == granted)
        }
    }

    @Test func allocationExpiresUnlessRefreshed() throws {
        var h = MachineHarness()
        let (id, _) = try h.allocate()
        h.now += 599
        #expect(h.machine.expire(now: h.now).isEmpty)
        let r = h.simple(.refresh) { $0.append(Lifetime(seconds: 900)) }
        #expect(try r?.attribute(Lifetime.self)?.seconds == 900)
        h.now += 899
        #expect(h.machine.expire(now: h.now).isEmpty)
        h.now += 2
        #expect(h.machine.expire(now: h.now) == [.closeRelay(id)])
        #expect(h.machine.allocationCount == 0)
    }

    @Test func refreshWithZeroDeletesAndLaterRequestsAre437() throws {
        var h = MachineHarness()
        let (id, _) = try h.allocate()
        var m = STUNMessage(method: .refresh, messageClass: .request)
        m.append(Lifetime(seconds: 0))
        let actions = h.request(m)
        #expect(try h.response(actions)?.attribute(Lifetime.self)?.seconds == 0)
        #expect(actions.contains(.closeRelay(id)))
        #expect(h.machine.allocationCount == 0)
        #expect(MachineHarness.code(h.simple(.refresh) { _ in }) == 437)
    }

    @Test func anotherUserCannotTouchTheAllocation() throws {
        var h = MachineHarness()
        _ = try h.allocate()
        h.username = "v"
        h.password = "q"
        #expect(MachineHarness.code(h.simple(.refresh) { _ in }) == 441)
    }

    @Test func permissionLetsSendThroughAndExpiresAfter300s() throws {
        var h = MachineHarness()
        let (id, _) = try h.allocate()
        let send = TURNMessages.sendIndication(peer: peer, payload: [1, 2, 3])
        #expect(h.machine.receiveFromClient(send, from: h.ft, now: h.now).isEmpty)
        #expect(h.simple(.createPermission) { $0.append(XORPeerAddress(peer)) }?.messageClass == .successResponse)
        #expect(h.machine.receiveFromClient(send, from: h.ft, now: h.now) == [.sendToPeer(id, peer, [1, 2, 3])])
        // Permissions are per IP: another port of the same peer passes too (RFC 8656 §9).
        let otherPort = TransportAddress(ip: peer.ip, port: 1)
        #expect(h.machine.receiveFromPeer(id, peer: otherPort, bytes: [4], now: h.now).count == 1)
        h.now += TURNTimers.permissionLifetime - 1
        #expect(h.machine.receiveFromClient(send, from: h.ft, now: h.now).count == 1)
        h.now += 2
        _ = h.machine.expire(now: h.now)
        #expect(h.machine.receiveFromClient(send, from: h.ft, now: h.now).isEmpty)
        #expect(h.machine.receiveFromPeer(id, peer: peer, bytes: [4], now: h.now).isEmpty)
    }

    @Test func peerDataArrivesAsADataIndication() throws {
        var h = MachineHarness()
        let (id, _) = try h.allocate()
        _ = h.simple(.createPermission) { $0.append(XORPeerAddress(peer)) }
        let out = h.machine.receiveFromPeer(id, peer: peer, bytes: [5, 6], now: h.now)
        let m = try #require(h.response(out))
        #expect(m.method == .data && m.messageClass == .indication)
        #expect(try m.attribute(XORPeerAddress.self)?.address == peer)
        #expect(try m.attribute(DataAttribute.self)?.bytes == [5, 6])
    }

    static let refusedPeers = ["127.0.0.1", "0.0.0.0", "::1", "::ffff:127.0.0.1", "10.0.0.1", "169.254.169.254",
                               "2002:7f00:1::1", "64:ff9b::7f00:1", "::ffff:0:8.8.8.8", "::ffff:0:127.0.0.1",
                               "5f00::1", "5f00:ffff::1", "3fff::1", "3fff:fff::1"]

    @Test(arguments: refusedPeers) func specialPeerIsRefusedWith403(_ text: String) throws {
        var h = MachineHarness()
        let ip = IPAddress(text)!
        let family: TURNAddressFamily = ip.isIPv4 ? .ipv4 : .ipv6
        let a = h.request(MachineHarness.allocateRequest { if family == .ipv6 { $0.append(RequestedAddressFamily(.ipv6)) } })
        guard case .openRelay(let id, _, _)? = a.first else { Issue.record("\(a)"); return }
        _ = h.machine.relayOpened(id, at: ip.isIPv4 ? MachineHarness.relay : TransportAddress("[2001:db8::1]:50000")!, now: h.now)
        let p = TransportAddress(ip: ip, port: 9)
        #expect(MachineHarness.code(h.simple(.createPermission) { $0.append(XORPeerAddress(p)) }) == 403)
        #expect(MachineHarness.code(h.simple(.channelBind) {
            $0.append(ChannelNumber(0x4000))
            $0.append(XORPeerAddress(p))
        }) == 403)
        #expect(h.machine.allocation(id)?.permissions.isEmpty == true)
    }

    @Test func peersOnTheRelayHostAreRefusedUnlessALiveAllocationsRelayedAddress() throws {
        // The operator allows the relay's own network: the relay host is still off limits, but
        // for the relayed address of another live allocation (two allocations there talk, as tls-relay needs).
        let host = MachineHarness.relay.ip
        var h = MachineHarness {
            $0.relayHostAddresses = [host]
            $0.peerPolicy = TURNPeerPolicy(allowed: [IPPrefix("198.51.100.0/24")!])
        }
        let (id, _) = try h.allocate()
        let first = h.ft
        h.ft.client = TransportAddress("203.0.113.7:6000")!
        let other = TransportAddress(ip: host, port: 50_002)
        guard case .openRelay(let otherID, _, _)? = h.request(MachineHarness.allocateRequest()).first else {
            Issue.record("no second allocation")
            return
        }
        _ = h.machine.relayOpened(otherID, at: other, now: h.now)
        h.ft = first
        for port: UInt16 in [3478, 53, 50_004, 65_535] {
            let p = TransportAddress(ip: host, port: port)
            #expect(MachineHarness.code(h.simple(.createPermission) { $0.append(XORPeerAddress(p)) }) == 403, "\(p)")
            #expect(MachineHarness.code(h.simple(.channelBind) {
                $0.append(ChannelNumber(0x4001))
                $0.append(XORPeerAddress(p))
            }) == 403, "\(p)")
        }
        #expect(h.simple(.createPermission) { $0.append(XORPeerAddress(other)) }?.messageClass == .successResponse)
        #expect(h.simple(.channelBind) {
            $0.append(ChannelNumber(0x4000))
            $0.append(XORPeerAddress(other))
        }?.messageClass == .successResponse)
        // The permission is per IP, but the relay host's other ports stay unreachable through it.
        let toService = TURNMessages.sendIndication(peer: TransportAddress(ip: host, port: 3478), payload: [1])
        #expect(h.machine.receiveFromClient(toService, from: h.ft, now: h.now).isEmpty)
        let toOther = TURNMessages.sendIndication(peer: other, payload: [2])
        #expect(h.machine.receiveFromClient(toOther, from: h.ft, now: h.now) == [.sendToPeer(id, other, [2])])
        let frame = ChannelData(channel: 0x4000, payload: [3]).encode(padded: false)
        #expect(h.machine.receiveFromClient(frame, from: h.ft, now: h.now) == [.sendToPeer(id, other, [3])])
        // Once the other allocation is gone, its address is just another port of the relay host.
        h.ft.client = TransportAddress("203.0.113.7:6000")!
        #expect(h.simple(.refresh) { $0.append(Lifetime(seconds: 0)) }?.messageClass == .successResponse)
        h.ft = first
        #expect(h.machine.receiveFromClient(frame, from: h.ft, now: h.now).isEmpty)
        #expect(h.machine.receiveFromClient(toOther, from: h.ft, now: h.now).isEmpty)
        #expect(MachineHarness.code(h.simple(.createPermission) { $0.append(XORPeerAddress(other)) }) == 403)
    }

    @Test func allowListLetsLoopbackPeersThrough() throws {
        var h = MachineHarness { $0.peerPolicy = TURNPeerPolicy(allowed: [IPPrefix("127.0.0.0/8")!]) }
        _ = try h.allocate()
        let p = TransportAddress("127.0.0.1:9")!
        #expect(h.simple(.createPermission) { $0.append(XORPeerAddress(p)) }?.messageClass == .successResponse)
    }

    @Test func peerOfTheOtherFamilyIs443() throws {
        var h = MachineHarness()
        _ = try h.allocate()
        #expect(MachineHarness.code(h.simple(.createPermission) { $0.append(XORPeerAddress(TransportAddress("[2606:4700::1]:9")!)) }) == 443)
    }

    @Test func createPermissionIsAllOrNothing() throws {
        var h = MachineHarness()
        let (id, _) = try h.allocate()
        let r = h.simple(.createPermission) {
            $0.append(XORPeerAddress(peer))
            $0.append(XORPeerAddress(TransportAddress("10.1.1.1:1")!))
        }
        #expect(MachineHarness.code(r) == 403)
        #expect(h.machine.allocation(id)?.permissions.isEmpty == true)
    }

    @Test(arguments: [UInt16(0x0000), 0x3FFF, 0x5000, 0x7FFF, 0xFFFF])
    func channelNumberOutsideTheRangeIs400(_ number: UInt16) throws {
        var h = MachineHarness()
        _ = try h.allocate()
        let r = h.simple(.channelBind) {
            $0.append(ChannelNumber(number))
            $0.append(XORPeerAddress(peer))
        }
        #expect(MachineHarness.code(r) == 400)
    }

    @Test func channelBindRelaysChannelDataBothWaysAndExpires() throws {
        var h = MachineHarness()
        let (id, _) = try h.allocate()
        let r = h.simple(.channelBind) {
            $0.append(ChannelNumber(0x4FFF))
            $0.append(XORPeerAddress(peer))
        }
        #expect(r?.messageClass == .successResponse)
        let frame = ChannelData(channel: 0x4FFF, payload: [1, 2, 3]).encode(padded: false)
        #expect(h.machine.receiveFromClient(frame, from: h.ft, now: h.now) == [.sendToPeer(id, peer, [1, 2, 3])])
        #expect(h.machine.routeFromPeer(id, peer: peer, length: 3, now: h.now) == .channelData(0x4FFF, to: h.ft))
        #expect(h.machine.receiveFromPeer(id, peer: peer, bytes: [7], now: h.now)
                == [.sendToClient(h.ft, [0x4F, 0xFF, 0, 1, 7])])
        // Unbound channel: dropped.
        #expect(h.machine.receiveFromClient(ChannelData(channel: 0x4000, payload: [1]).encode(padded: false), from: h.ft, now: h.now).isEmpty)
        // Keep the permission alive but let the channel lapse.
        h.now += 299
        _ = h.simple(.createPermission) { $0.append(XORPeerAddress(peer)) }
        _ = h.simple(.refresh) { $0.append(Lifetime(seconds: 3600)) }
        h.now += 200
        _ = h.simple(.createPermission) { $0.append(XORPeerAddress(peer)) }
        h.now += 102
        _ = h.machine.expire(now: h.now)
        #expect(h.machine.receiveFromClient(frame, from: h.ft, now: h.now).isEmpty)
        #expect(h.machine.routeFromPeer(id, peer: peer, length: 3, now: h.now) == .dataIndication(to: h.ft))
    }

    @Test func channelAndPeerCannotBeReboundElsewhereEvenDuringCooldown() throws {
        var h = MachineHarness()
        _ = try h.allocate()
        let other = TransportAddress("1.1.1.1:7000")!
        let bind = { (h: inout MachineHarness, n: UInt16, p: TransportAddress) in
            h.simple(.channelBind) { $0.append(ChannelNumber(n)); $0.append(XORPeerAddress(p)) }
        }
        #expect(bind(&h, 0x4000, peer)?.messageClass == .successResponse)
        #expect(MachineHarness.code(bind(&h, 0x4000, other)) == 400)
        #expect(MachineHarness.code(bind(&h, 0x4001, peer)) == 400)
        _ = h.simple(.refresh) { $0.append(Lifetime(seconds: 3600)) }
        h.now += TURNTimers.channelLifetime + 10
        _ = h.machine.expire(now: h.now)
        #expect(MachineHarness.code(bind(&h, 0x4000, other)) == 400)
        #expect(bind(&h, 0x4000, peer)?.messageClass == .successResponse)
    }

    @Test func duplicatePeerAddressInChannelBindFirstWins() throws {
        var h = MachineHarness()
        let (id, _) = try h.allocate()
        let other = TransportAddress("1.1.1.1:7000")!
        _ = h.simple(.channelBind) {
            $0.append(ChannelNumber(0x4000))
            $0.append(XORPeerAddress(peer))
            $0.append(XORPeerAddress(other))
        }
        #expect(h.machine.allocation(id)?.channels[0x4000]?.peer == peer)
    }

    @Test func attributesAfterMessageIntegrityAreNotTrusted() throws {
        var h = MachineHarness()
        let (id, _) = try h.allocate()
        var m = STUNMessage(method: .createPermission, messageClass: .request)
        m.append(Username(h.username)); m.append(Realm(h.realm!)); m.append(Nonce(h.nonce!))
        var bytes = m.encode(integrityKey: h.key)
        // Smuggle XOR-PEER-ADDRESS after MESSAGE-INTEGRITY and fix the length.
        var tail = STUNMessage(method: .createPermission, messageClass: .request, transactionID: m.transactionID)
        tail.append(XORPeerAddress(peer))
        bytes += Array(tail.encode()[20...])
        let length = bytes.count - 20
        bytes[2] = UInt8(length >> 8); bytes[3] = UInt8(length & 0xFF)
        let r = h.response(h.machine.receiveFromClient(bytes, from: h.ft, now: h.now))
        #expect(MachineHarness.code(r) == 400)
        #expect(h.machine.allocation(id)?.permissions.isEmpty == true)
    }

    @Test func allocationQuotaPerUserIs486() throws {
        var h = MachineHarness { $0.maxAllocationsPerUser = 2 }
        _ = try h.allocate()
        h.ft.client.port += 1
        _ = try h.allocate()
        h.ft.client.port += 1
        #expect(MachineHarness.code(h.response(h.request(MachineHarness.allocateRequest()))) == 486)
        #expect(h.machine.allocationCount == 2)
        // Another user has a quota of their own.
        h.username = "v"; h.password = "q"
        _ = try h.allocate()
        #expect(h.machine.allocationCount == 3)
    }

    @Test func bandwidthQuotaDropsTheExcess() throws {
        var h = MachineHarness { $0.bandwidthPerUser = 1000 }
        let (id, _) = try h.allocate()
        _ = h.simple(.channelBind) { $0.append(ChannelNumber(0x4000)); $0.append(XORPeerAddress(peer)) }
        var passed = 0
        for _ in 0..<20 where h.machine.routeChannelData(channel: 0x4000, length: 100, from: h.ft, now: h.now) != nil { passed += 1 }
        #expect(passed == 10)
        h.now += 0.5
        #expect(h.machine.routeFromPeer(id, peer: peer, length: 400, now: h.now) != nil)
        #expect(h.machine.routeFromPeer(id, peer: peer, length: 400, now: h.now) == nil)
    }

    @Test func aUserOverItsBandwidthIsRefusedAnotherAllocationNamingTheCut() throws {
        var h = MachineHarness { $0.bandwidthPerUser = 1000 }
        _ = try h.allocate()
        _ = h.simple(.channelBind) { $0.append(ChannelNumber(0x4000)); $0.append(XORPeerAddress(peer)) }
        h.ft.client.port += 1
        _ = try h.allocate()
        #expect(h.machine.allocationCount == 2, "under its bandwidth a user may allocate again")
        h.ft.client.port -= 1
        #expect(h.machine.routeChannelData(channel: 0x4000, length: 1000, from: h.ft, now: h.now) != nil)
        #expect(h.machine.routeChannelData(channel: 0x4000, length: 1000, from: h.ft, now: h.now) == nil, "cut")
        h.ft.client.port += 2
        let refused = try #require(h.response(h.request(MachineHarness.allocateRequest())))
        let error = try #require(try refused.attribute(ErrorCode.self))
        #expect(error.code == 486)
        #expect(error.reason == TURNRefusal.bandwidth.reason)
        let s = h.machine.takeStatistics()
        #expect(s.refusals["bandwidth"] == 1)
        #expect(s.bandwidthCuts == ["user-bandwidth": 1] && s.bandwidthCutBytes == ["user-bandwidth": 1000])
        // Once the cut is older than the hold, the user may allocate again.
        h.now += TURNServerConfiguration.defaultBandwidthCutHoldSeconds
        _ = try h.allocate()
        #expect(h.machine.allocationCount == 3)
    }

    @Test func challengesAreRateLimitedPerSource() throws {
        var h = MachineHarness { $0.challengeBurst = 3; $0.challengeRatePerSecond = 1 }
        var answered = 0
        for _ in 0..<10 where h.response(h.send(MachineHarness.allocateRequest(), signed: false)) != nil { answered += 1 }
        #expect(answered == 3)
        h.now += 1
        #expect(h.response(h.send(MachineHarness.allocateRequest(), signed: false)) != nil)
        h.ft.client = TransportAddress("198.51.100.21:5000")!
        #expect(h.response(h.send(MachineHarness.allocateRequest(), signed: false)) != nil)
        #expect(h.machine.allocationCount == 0)
    }

    @Test func restCredentialsWorkUntilTheirExpiry() throws {
        var h = MachineHarness { $0.credentials.restSecret = Array("s3cret".utf8) }
        h.username = "\(Int(h.now) + 60):alice"
        h.password = TURNCredentials.restPassword(secret: "s3cret", username: h.username)
        _ = try h.allocate()
        var late = MachineHarness { $0.credentials.restSecret = Array("s3cret".utf8) }
        late.username = "\(Int(late.now) - 1):alice"
        late.password = TURNCredentials.restPassword(secret: "s3cret", username: late.username)
        #expect(MachineHarness.code(late.response(late.request(MachineHarness.allocateRequest()))) == 401)
    }

    @Test func tcpClientsGetPaddedChannelDataAndLoseAllocationsOnDisconnect() throws {
        var h = MachineHarness()
        h.ft.transport = .tcp
        let (id, _) = try h.allocate()
        _ = h.simple(.channelBind) { $0.append(ChannelNumber(0x4000)); $0.append(XORPeerAddress(peer)) }
        #expect(h.machine.receiveFromPeer(id, peer: peer, bytes: [1], now: h.now) == [.sendToClient(h.ft, [0x40, 0, 0, 1, 1, 0, 0, 0])])
        #expect(h.machine.clientDisconnected(h.ft) == [.closeRelay(id)])
        #expect(h.machine.allocationCount == 0)
    }

    @Test func aStreamWithoutAnAllocationIsClosedAtTheDeadlineWhateverItSends() throws {
        var h = MachineHarness { $0.streamAuthenticationTimeout = 10 }
        h.ft.transport = .tcp
        h.machine.clientConnected(h.ft, now: h.now)
        // Bytes and unauthenticated requests do not extend the deadline.
        for _ in 0..<9 {
            h.now += 1
            _ = h.send(MachineHarness.allocateRequest(), signed: false)
            #expect(h.machine.expire(now: h.now).isEmpty)
        }
        #expect(h.machine.nextDeadline == h.now + 1)
        h.now += 1
        #expect(h.machine.expire(now: h.now) == [.closeClient(h.ft)])
    }

    @Test func aStreamThatAllocatesStaysUntilItsAllocationGoes() throws {
        var h = MachineHarness { $0.streamAuthenticationTimeout = 10 }
        h.ft.transport = .tcp
        h.machine.clientConnected(h.ft, now: h.now)
        h.now += 5
        let (id, _) = try h.allocate()
        h.now += 500
        #expect(h.machine.expire(now: h.now).isEmpty)
        h.now += 200
        #expect(h.machine.expire(now: h.now) == [.closeRelay(id)], "the allocation expires; the connection gets its deadline")
        h.now += 9
        #expect(h.machine.expire(now: h.now).isEmpty)
        h.now += 1
        #expect(h.machine.expire(now: h.now) == [.closeClient(h.ft)])
        #expect(h.machine.clientDisconnected(h.ft).isEmpty)
        #expect(h.machine.nextDeadline == nil)
    }

    @Test func relayFailureAnswers508AndForgetsTheAllocation() throws {
        var h = MachineHarness()
        let a = h.request(MachineHarness.allocateRequest())
        guard case .openRelay(let id, _, _)? = a.first else { Issue.record("\(a)"); return }
        #expect(MachineHarness.code(h.response(h.machine.relayFailed(id))) == 508)
        #expect(h.machine.allocationCount == 0)
    }

    @Test func garbageNeverTraps() throws {
        var h = MachineHarness()
        var rng = SystemRandomNumberGenerator()
        let valid = MachineHarness.allocateRequest().encode(fingerprint: true)
        for i in 0..<5000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = valid
                for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            } else {
                bytes = (0..<Int.random(in: 0..<64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if !bytes.isEmpty, i % 4 == 1 { bytes[0] = 0x40 }
            }
            _ = h.machine.receiveFromClient(bytes, from: h.ft, now: h.now)
        }
        #expect(h.machine.allocationCount == 0)
    }
}
