import STUNLite
import Testing
import WebRTC

/// Two ICE agents wired through an in-memory network on an injected clock: which datagrams get
/// through is the test's choice (a NAT or a firewall that drops some), nothing sleeps.
struct ICEAgentTests {
    static let browser = ICEAgent.Credentials(ufrag: "brws", pwd: "browser-password-0123456789")
    static let camera = ICEAgent.Credentials(ufrag: "camr", pwd: "camera-password-0123456789ab")

    static func address(_ text: String) -> TransportAddress { TransportAddress(text)! }

    /// A network of two agents; `reachable(from, to)` decides which datagrams arrive.
    struct Network {
        var a: ICEAgent
        var b: ICEAgent
        var now = ContinuousClock.now
        var selectedA: (Int, TransportAddress)?
        var selectedB: (Int, TransportAddress)?
        var failedA = false
        var failedB = false
        var consentExpiredAt: ContinuousClock.Instant?
        var datagrams = 0
        var reachable: (TransportAddress, TransportAddress) -> Bool
        /// Where each agent's sockets are: socket id → address as the other side sees it.
        let aSockets: [Int: TransportAddress]
        let bSockets: [Int: TransportAddress]

        /// Delivers `actions` from one side (a when `fromA`), recursively, then advances time to the next deadline; bounded.
        mutating func run(steps: Int = 2000, keepGoing: Bool = false, until: ContinuousClock.Instant? = nil) {
            var queue: [(Bool, ICEAgent.Action)] = a.tick(now: now).map { (true, $0) } + b.tick(now: now).map { (false, $0) }
            for _ in 0..<steps {
                while !queue.isEmpty {
                    let (fromA, action) = queue.removeFirst()
                    switch action {
                    case .send(let bytes, let socket, let to):
                        let from = (fromA ? aSockets : bSockets)[socket]!
                        datagrams += 1
                        guard reachable(from, to) else { continue }
                        if fromA, let s = bSockets.first(where: { $0.value == to })?.key {
                            queue += b.receive(bytes, from: from, on: s, now: now).map { (false, $0) }
                        } else if !fromA, let s = aSockets.first(where: { $0.value == to })?.key {
                            queue += a.receive(bytes, from: from, on: s, now: now).map { (true, $0) }
                        }
                    case .selected(let socket, let remote):
                        if fromA { selectedA = (socket, remote) } else { selectedB = (socket, remote) }
                    case .failed:
                        if fromA { failedA = true } else { failedB = true }
                    case .consentExpired:
                        if consentExpiredAt == nil { consentExpiredAt = now }
                    }
                }
                if (selectedA != nil && selectedB != nil && !keepGoing) || (failedA && failedB) || consentExpiredAt != nil { return }
                if let until, now >= until { return }
                guard let next = [a.nextDeadline, b.nextDeadline].compactMap({ $0 }).min() else { return }
                now = max(now, next)
                queue = a.tick(now: now).map { (true, $0) } + b.tick(now: now).map { (false, $0) }
            }
        }
    }

    /// A browser with a host and a srflx candidate, a camera with two host sockets.
    static func network(reachable: @escaping (TransportAddress, TransportAddress) -> Bool,
                        cameraTieBreaker: UInt64 = 1, browserRole: ICEAgent.Role = .controlling) -> Network {
        let t0 = ContinuousClock.now
        let aSockets = [0: address("198.51.100.20:50000")]
        let bSockets = [0: address("192.0.2.7:40000"), 1: address("192.0.2.8:40001")]
        var a = ICEAgent(role: browserRole, local: browser, remote: camera,
                         locals: [.init(socket: 0, address: aSockets[0]!, priority: ICECandidate.priority(kind: .host))],
                         tieBreaker: 2, now: t0)
        let b = ICEAgent(role: .controlled, local: camera, remote: browser,
                         locals: bSockets.sorted { $0.key < $1.key }.map { .init(socket: $0.key, address: $0.value, priority: ICECandidate.priority(kind: .host, localPreference: UInt32(65535 - $0.key))) },
                         tieBreaker: cameraTieBreaker, now: t0)
        for (_, addr) in bSockets { a.addRemote(addr, priority: ICECandidate.priority(kind: .host)) }
        a.remoteCandidatesComplete()
        // The camera hears of the browser's candidate only through its checks (peer reflexive), as with an mDNS name it cannot resolve.
        return Network(a: a, b: b, now: t0, reachable: reachable, aSockets: aSockets, bSockets: bSockets)
    }

    @Test func bothSidesSelectTheSamePairAndTheCameraLearnsTheBrowserFromItsChecks() {
        var net = Self.network { _, _ in true }
        net.run()
        let (aSocket, aRemote) = try! #require(net.selectedA)
        let (bSocket, bRemote) = try! #require(net.selectedB)
        #expect(aSocket == 0 && bRemote == Self.address("198.51.100.20:50000"))
        #expect(net.bSockets[bSocket] == aRemote, "the camera sends from the socket the browser nominated")
        #expect(net.datagrams < 40, "\(net.datagrams) datagrams")
    }

    @Test func aPathThatDropsEverythingFailsAndTheOtherIsSelected() {
        // The camera's first socket is unreachable both ways.
        let dead = Self.address("192.0.2.7:40000")
        var net = Self.network { from, to in from != dead && to != dead }
        net.run()
        #expect(net.selectedA?.1 == Self.address("192.0.2.8:40001"))
        #expect(net.selectedB?.0 == 1)
    }

    @Test func nothingGetsThroughAndTheControllingAgentFailsAfterItsRetransmissions() {
        var net = Self.network { _, _ in false }
        net.run()
        #expect(net.failedA && net.selectedA == nil && net.selectedB == nil)
        // Two pairs, each sent Rc = 7 times.
        #expect(net.datagrams == 2 * ICEAgent.maxSends, "\(net.datagrams)")
    }

    @Test func aRoleConflictIsSettledByTheTieBreaker() {
        // Both think they are controlled; the browser's tie-breaker (2) is larger, so it takes control.
        var net = Self.network(reachable: { _, _ in true }, cameraTieBreaker: 1, browserRole: .controlled)
        net.run()
        #expect(net.a.role == .controlling && net.b.role == .controlled)
        #expect(net.selectedA != nil && net.selectedB != nil)
    }

    @Test func consentIsKeptWhileThePeerAnswersAndLostThirtySecondsAfterItStops() {
        var net = Self.network { _, _ in true }
        net.run()
        let selectedAt = net.now
        // A minute of answered consent checks: nothing expires, a check goes out every 4–6 s.
        let before = net.datagrams
        net.run(keepGoing: true, until: selectedAt + .seconds(60))
        #expect(net.consentExpiredAt == nil)
        let checks = net.datagrams - before
        #expect(checks >= 2 * 10 && checks <= 2 * 2 * 16, "\(checks) datagrams for a minute of consent (checks and answers, both sides)")
        // The browser goes away: consent ends 30 s after the last answer, never sooner.
        let silentFrom = net.now
        net.reachable = { _, _ in false }
        net.run(keepGoing: true, until: silentFrom + .seconds(120))
        let expired = try! #require(net.consentExpiredAt)
        #expect(expired - silentFrom >= .seconds(24) && expired - silentFrom <= ICEAgent.consentTimeout + .seconds(1), "\(expired - silentFrom)")
        let lost = [net.a, net.b].filter(\.consentLost)
        #expect(!lost.isEmpty)
        for var agent in lost { #expect(agent.tick(now: expired + .seconds(100)).isEmpty, "nothing more is sent once consent is lost") }
    }

    @Test func checksWithoutThePasswordAreDroppedUnanswered() {
        let t0 = ContinuousClock.now
        var camera = ICEAgent(role: .controlled, local: Self.camera, remote: Self.browser,
                              locals: [.init(socket: 0, address: Self.address("192.0.2.7:40000"), priority: 1)], now: t0)
        var forged = STUNMessage(method: .binding, messageClass: .request)
        forged.append(Username("camr:brws"))
        let wrongKey = forged.encode(integrityKey: Array("not-the-password-at-all".utf8), fingerprint: true)
        #expect(camera.receive(wrongKey, from: Self.address("203.0.113.66:9"), on: 0, now: t0) == [])
        var otherUser = STUNMessage(method: .binding, messageClass: .request)
        otherUser.append(Username("someone:brws"))
        #expect(camera.receive(otherUser.encode(integrityKey: Array(Self.camera.pwd.utf8), fingerprint: true),
                               from: Self.address("203.0.113.66:9"), on: 0, now: t0) == [])
        #expect(camera.receive(Array("not stun at all".utf8), from: Self.address("203.0.113.66:9"), on: 0, now: t0) == [])
        #expect(camera.nextDeadline == nil, "no pair was learnt from them")
    }

    @Test func checksArePacedOnePerTa() {
        let t0 = ContinuousClock.now
        var agent = ICEAgent(role: .controlling, local: Self.browser, remote: Self.camera,
                             locals: [.init(socket: 0, address: Self.address("198.51.100.20:50000"), priority: 1)], now: t0)
        for port in 40000..<40005 { agent.addRemote(Self.address("192.0.2.7:\(port)"), priority: UInt32(port)) }
        #expect(agent.tick(now: t0).count == 1)
        #expect(agent.tick(now: t0 + .milliseconds(49)).isEmpty)
        let next = agent.tick(now: t0 + ICEAgent.pacing)
        guard case .send(_, 0, let to)? = next.first, next.count == 1 else {
            Issue.record("one check per Ta: \(next)")
            return
        }
        #expect(to.port == 40003, "highest priority first (40004 went first)")
    }

    @Test func theCameraFollowsTheBrowsersLatestNomination() throws {
        let t0 = ContinuousClock.now
        let own = Self.address("192.0.2.7:40000")
        var camera = ICEAgent(role: .controlled, local: Self.camera, remote: Self.browser,
                              locals: [.init(socket: 0, address: own, priority: 1)], now: t0)
        var selections: [TransportAddress] = []
        /// The browser nominates its pair from `source` (as Chromium moves from a relayed pair to a direct one) and
        /// answers the camera's check back on it, if the pair has not succeeded yet (then the camera checks back).
        func nominate(from source: TransportAddress, at now: ContinuousClock.Instant, checkedBack: Bool = true) throws {
            var m = STUNMessage(method: .binding, messageClass: .request)
            m.append(Username("camr:brws"))
            m.append(ICEPriority(1000))
            m.attributes.append(STUNAttribute(type: ICERoleAttribute.controlling, value: [0, 0, 0, 0, 0, 0, 0, 9]))
            m.append(ICEUseCandidate())
            var actions = camera.receive(m.encode(integrityKey: Array(Self.camera.pwd.utf8), fingerprint: true), from: source, on: 0, now: now)
            let checks = actions.compactMap { action -> STUNMessage? in
                guard case .send(let bytes, _, let to) = action, to == source, let check = try? STUNMessage.decode(bytes),
                      check.messageClass == .request else { return nil }
                return check
            }
            #expect(checks.isEmpty != checkedBack, "the camera checks a new pair back, not one that succeeded")
            guard let check = checks.first else { return }
            var ok = STUNMessage(method: .binding, messageClass: .successResponse, transactionID: check.transactionID)
            ok.append(XORMappedAddress(own))
            actions += camera.receive(ok.encode(integrityKey: Array(Self.browser.pwd.utf8), fingerprint: true), from: source, on: 0, now: now)
            for case .selected(_, let remote) in actions { selections.append(remote) }
        }
        let relayed = Self.address("203.0.113.10:50000"), direct = Self.address("198.51.100.20:50000")
        try nominate(from: relayed, at: t0)
        try nominate(from: direct, at: t0 + .milliseconds(100))
        #expect(selections == [relayed, direct])
        #expect(camera.selected?.remote == direct)
        // Nominating the selected pair again changes nothing.
        try nominate(from: direct, at: t0 + .milliseconds(200), checkedBack: false)
        #expect(selections == [relayed, direct])
    }
}
