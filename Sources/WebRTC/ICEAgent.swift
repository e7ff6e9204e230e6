import STUNLite

/// PRIORITY: the priority a peer-reflexive candidate learnt from this check would have (RFC 8445 §7.1.1, §16.1).
public struct ICEPriority: STUNAttributeValue, Hashable {
    /// PRIORITY (0x0024).
    public static let attributeType = STUNAttributeType(0x0024)
    /// The priority.
    public var value: UInt32
    /// Wraps a priority.
    public init(_ value: UInt32) { self.value = value }
    /// Decodes 4 bytes.
    public init(stunValue v: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard v.count == 4 else { throw STUNDecodingError(.invalidAttributeLength, detail: "PRIORITY of \(v.count) bytes") }
        value = v.reduce(0) { $0 << 8 | UInt32($1) }
    }
    /// Encodes 4 bytes.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }
}

/// USE-CANDIDATE: the controlling agent nominates this pair (RFC 8445 §7.1.2, §16.1); no value.
public struct ICEUseCandidate: STUNAttributeValue, Hashable {
    /// USE-CANDIDATE (0x0025).
    public static let attributeType = STUNAttributeType(0x0025)
    /// The flag.
    public init() {}
    /// Accepts an empty value.
    public init(stunValue v: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard v.isEmpty else { throw STUNDecodingError(.invalidAttributeLength, detail: "USE-CANDIDATE of \(v.count) bytes") }
    }
    /// Encodes nothing.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { [] }
}

/// ICE-CONTROLLED / ICE-CONTROLLING: the sender's role and its tie-breaker (RFC 8445 §7.1.3, §16.1).
public struct ICERoleAttribute: Hashable, Sendable {
    /// ICE-CONTROLLED (0x8029).
    public static let controlled = STUNAttributeType(0x8029)
    /// ICE-CONTROLLING (0x802A).
    public static let controlling = STUNAttributeType(0x802A)

    /// The tie-breaker.
    public var tieBreaker: UInt64

    /// The attribute for `role` with `tieBreaker`.
    static func attribute(_ role: ICEAgent.Role, _ tieBreaker: UInt64) -> STUNAttribute {
        STUNAttribute(type: role == .controlling ? controlling : controlled,
                      value: (0..<8).map { UInt8(truncatingIfNeeded: tieBreaker >> (56 - 8 * $0)) })
    }

    /// The role and tie-breaker a message claims, if it carries exactly one well-formed role attribute.
    static func claimed(in message: STUNMessage) -> (ICEAgent.Role, UInt64)? {
        for a in message.attributes where a.type == controlled || a.type == controlling {
            guard a.value.count == 8 else { return nil }
            return (a.type == controlling ? .controlling : .controlled, a.value.reduce(0) { $0 << 8 | UInt64($1) })
        }
        return nil
    }
}

/// An ICE agent (RFC 8445) for one data stream with one component, as a state machine: it takes
/// datagrams and the time, and returns what to send and when a pair is selected. No sockets, no
/// clock of its own; `tick(now:)` at ``nextDeadline``.
///
/// ```
///  local candidates (socket id + address)  ×  remote candidates (trickled, or learnt from checks)
///     → pairs by priority (§6.1.2.3) → a check every Ta (§14.2), retransmitted (§14.3), triggered
///       checks first (§7.3.1.4)
///  incoming check (USERNAME "ours:theirs", MESSAGE-INTEGRITY with our password, FINGERPRINT)
///     → success response with XOR-MAPPED-ADDRESS; an unknown source becomes a peer-reflexive
///       candidate (§7.3.1.3); a role conflict is settled by tie-breaker (§7.3.1.1, 487)
///  controlled: a pair the peer nominated (USE-CANDIDATE) that has succeeded is selected (§7.3.1.5); a later
///              nomination of another pair moves the selection there (a browser switches pairs, e.g. relay → direct)
///  controlling: the first pair that succeeds is nominated with USE-CANDIDATE; selected on its success
///  then consent (RFC 7675): a check on the selected pair every 4–6 s; 30 s without an answer → consentExpired
/// ```
///
/// Checks that fail integrity are dropped without an answer (no reflection toward an address that
/// did not prove the password); pairs are bounded by ``maxPairs``.
public struct ICEAgent: Sendable {
    /// Which agent decides (RFC 8445 §6.1.1).
    public enum Role: Sendable, Hashable {
        /// Nominates (the browser, as the offerer).
        case controlling
        /// Follows the nomination (the camera).
        case controlled
    }

    /// One side's ICE credentials (`a=ice-ufrag`, `a=ice-pwd`).
    public struct Credentials: Sendable, Hashable {
        /// The username fragment.
        public var ufrag: String
        /// The password (the short-term credential's key, RFC 8489 §9.1).
        public var pwd: String
        /// Credentials with these values.
        public init(ufrag: String, pwd: String) {
            self.ufrag = ufrag
            self.pwd = pwd
        }
    }

    /// One of our candidates: the socket it is sent from and its address.
    public struct Local: Sendable, Hashable {
        /// The socket (the caller's identifier).
        public var socket: Int
        /// The address the peer sees (a host address; reflexive and relayed ones send from their base).
        public var address: TransportAddress
        /// Its priority.
        public var priority: UInt32
        /// A local candidate.
        public init(socket: Int, address: TransportAddress, priority: UInt32) {
            self.socket = socket
            self.address = address
            self.priority = priority
        }
    }

    /// What to do.
    public enum Action: Sendable, Hashable {
        /// Send `bytes` from `socket` to `to`.
        case send([UInt8], socket: Int, to: TransportAddress)
        /// The pair to carry the stream: send from `socket` to `remote`.
        case selected(socket: Int, remote: TransportAddress)
        /// Every pair failed (and no remote candidate is expected any more).
        case failed
        /// The peer stopped answering consent checks on the selected pair (RFC 7675 §5.1): stop sending on it.
        case consentExpired
    }

    /// Interval between new checks (RFC 8445 §14.2: Ta, 50 ms for one data stream).
    public static let pacing: Duration = .milliseconds(50)
    /// First retransmission timeout of a check (RFC 8445 §14.3 leaves it to the agent; 250 ms on a LAN-to-WAN check).
    public static let initialRTO: Duration = .milliseconds(250)
    /// Sends of one check before its pair fails (RFC 8489 §6.2.1: Rc = 7).
    public static let maxSends = 7
    /// Most candidate pairs kept (RFC 8445 §6.1.2.5 says limit them; 100 is its example).
    public static let maxPairs = 100
    /// Mean interval of consent checks on the selected pair, each drawn from 0.8–1.2× it (RFC 7675 §5.1).
    public static let consentInterval: Duration = .seconds(5)
    /// Without an answer to a consent check for this long, consent is lost (RFC 7675 §5.1).
    public static let consentTimeout: Duration = .seconds(30)

    private enum PairState: Sendable, Hashable { case waiting, inProgress, succeeded, failed }

    private struct Pair: Sendable {
        var local: Local
        var remote: TransportAddress
        var remotePriority: UInt32
        var state: PairState = .waiting
        var nominated = false
        /// The check in flight: transaction, sends so far, next retransmission.
        var transaction: STUNTransactionID?
        var sends = 0
        var retransmitAt: ContinuousClock.Instant?
        var useCandidate = false
        var triggered = false
        /// When the peer last nominated it (controlled role), to follow its latest choice.
        var nominatedAt: UInt64 = 0

        func priority(_ role: Role) -> UInt64 {
            let (g, d) = role == .controlling ? (UInt64(local.priority), UInt64(remotePriority)) : (UInt64(remotePriority), UInt64(local.priority))
            return (1 << 32) * min(g, d) + 2 * max(g, d) + (g > d ? 1 : 0)
        }
    }

    /// Our role (it may change once, on a conflict).
    public private(set) var role: Role
    private let tieBreaker: UInt64
    private let local: Credentials
    private let remote: Credentials
    private let locals: [Local]
    private var pairs: [Pair] = []
    private var nextCheckAt: ContinuousClock.Instant
    /// Nominations received so far (controlled role): each nominated pair remembers its number.
    private var nominations: UInt64 = 0
    /// The selected pair, once there is one.
    public private(set) var selected: (socket: Int, remote: TransportAddress)?
    private var remoteCandidatesDone = false
    private var reportedFailure = false
    /// Consent on the selected pair (RFC 7675): the last answer, the next check, the one in flight.
    private var consentAnswered: ContinuousClock.Instant?
    private var consentCheckAt: ContinuousClock.Instant?
    private var consentTransaction: STUNTransactionID?
    /// Whether consent was lost (nothing more is sent or selected).
    public private(set) var consentLost = false

    /// An agent with these credentials and local candidates, starting at `now`.
    public init(role: Role, local: Credentials, remote: Credentials, locals: [Local], tieBreaker: UInt64 = .random(in: 0...UInt64.max),
                now: ContinuousClock.Instant) {
        self.role = role
        self.local = local
        self.remote = remote
        self.locals = locals
        self.tieBreaker = tieBreaker
        self.nextCheckAt = now
    }

    /// Adds a remote candidate (an IP literal; resolve mDNS names first) and pairs it with every local one of its family.
    public mutating func addRemote(_ address: TransportAddress, priority: UInt32) {
        for l in locals where l.address.ip.isIPv4 == address.ip.isIPv4 { addPair(l, address, priority) }
    }

    /// No more remote candidates will come (`a=end-of-candidates`): when every pair has failed, the agent fails.
    public mutating func remoteCandidatesComplete() { remoteCandidatesDone = true }

    /// When ``tick(now:)`` next has something to do.
    public var nextDeadline: ContinuousClock.Instant? {
        if selected != nil {
            guard !consentLost, let answered = consentAnswered, let check = consentCheckAt else { return nil }
            return min(check, answered + Self.consentTimeout)
        }
        guard !reportedFailure else { return nil }
        var next: ContinuousClock.Instant? = pairs.contains { $0.state == .waiting } ? nextCheckAt : nil
        for p in pairs { if let r = p.retransmitAt { next = next.map { min($0, r) } ?? r } }
        return next
    }

    /// Sends the next check when Ta has passed, and retransmits or fails checks whose time has come.
    public mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        if selected != nil { return consent(now: now) }
        guard !reportedFailure else { return [] }
        var actions: [Action] = []
        for i in pairs.indices {
            guard pairs[i].state == .inProgress, let at = pairs[i].retransmitAt, now >= at else { continue }
            if pairs[i].sends >= Self.maxSends {
                pairs[i].state = .failed
                pairs[i].retransmitAt = nil
            } else {
                actions.append(send(i, now: now))
            }
        }
        if now >= nextCheckAt, let i = nextPair() {
            actions.append(send(i, now: now))
            nextCheckAt = now + Self.pacing
        }
        if remoteCandidatesDone, !pairs.isEmpty, pairs.allSatisfy({ $0.state == .failed }) {
            reportedFailure = true
            actions.append(.failed)
        }
        return actions
    }

    /// A datagram that arrived on `socket` from `source`: a check to answer or a response to one of ours.
    /// Anything else (not STUN, failed integrity, unknown transaction) is ignored.
    public mutating func receive(_ bytes: [UInt8], from source: TransportAddress, on socket: Int, now: ContinuousClock.Instant) -> [Action] {
        guard let message = try? STUNMessage.decode(bytes), message.method == .binding, !message.isClassic else { return [] }
        switch message.messageClass {
        case .request: return request(message, from: source, on: socket, now: now)
        case .successResponse, .errorResponse: return response(message, from: source, now: now)
        default: return []
        }
    }

    // MARK: Checks

    private mutating func addPair(_ l: Local, _ address: TransportAddress, _ priority: UInt32) {
        guard pairs.count < Self.maxPairs, !pairs.contains(where: { $0.local.socket == l.socket && $0.remote == address }) else { return }
        pairs.append(Pair(local: l, remote: address, remotePriority: priority))
    }

    /// A triggered check first, else the highest-priority waiting pair.
    private func nextPair() -> Int? {
        let waiting = pairs.indices.filter { pairs[$0].state == .waiting }
        return waiting.first { pairs[$0].triggered } ?? waiting.max { pairs[$0].priority(role) < pairs[$1].priority(role) }
    }

    private mutating func send(_ i: Int, now: ContinuousClock.Instant) -> Action {
        let transaction = pairs[i].transaction ?? .random()
        pairs[i].transaction = transaction
        pairs[i].state = .inProgress
        pairs[i].sends += 1
        pairs[i].retransmitAt = now + Self.initialRTO * (1 << min(pairs[i].sends - 1, 6))
        return .send(check(from: pairs[i].local, transaction: transaction, useCandidate: pairs[i].useCandidate),
                     socket: pairs[i].local.socket, to: pairs[i].remote)
    }

    /// A connectivity check (RFC 8445 §7.2.2): USERNAME "theirs:ours", PRIORITY, our role, MESSAGE-INTEGRITY
    /// with their password, FINGERPRINT.
    private func check(from local: Local, transaction: STUNTransactionID, useCandidate: Bool) -> [UInt8] {
        var m = STUNMessage(method: .binding, messageClass: .request, transactionID: transaction)
        m.append(Username(remote.ufrag + ":" + self.local.ufrag))
        m.append(ICEPriority(ICECandidate.priority(kind: .prflx, localPreference: local.priority >> 8 & 0xFFFF)))
        m.attributes.append(ICERoleAttribute.attribute(role, tieBreaker))
        if useCandidate { m.append(ICEUseCandidate()) }
        return m.encode(integrityKey: Array(remote.pwd.utf8), fingerprint: true)
    }

    /// RFC 7675 §5.1: a check on the selected pair every 4–6 s; none answered for 30 s loses consent.
    private mutating func consent(now: ContinuousClock.Instant) -> [Action] {
        guard !consentLost, let (socket, peer) = selected, let answered = consentAnswered, let due = consentCheckAt,
              let pair = pairs.first(where: { $0.local.socket == socket && $0.remote == peer }) else { return [] }
        if now - answered >= Self.consentTimeout {
            consentLost = true
            return [.consentExpired]
        }
        guard now >= due else { return [] }
        consentCheckAt = now + Self.consentInterval * Double.random(in: 0.8...1.2)
        let transaction = STUNTransactionID.random()
        consentTransaction = transaction
        return [.send(check(from: pair.local, transaction: transaction, useCandidate: false), socket: socket, to: peer)]
    }

    private mutating func request(_ m: STUNMessage, from source: TransportAddress, on socket: Int, now: ContinuousClock.Instant) -> [Action] {
        // RFC 8445 §7.3: USERNAME "ours:theirs", integrity with our password, FINGERPRINT present.
        guard let name = try? m.attribute(Username.self), name.text.hasPrefix(local.ufrag + ":"),
              m.verifyMessageIntegrity(key: Array(local.pwd.utf8)), m.contains(.fingerprint),
              let l = locals.first(where: { $0.socket == socket }) else { return [] }
        if let (theirs, theirTieBreaker) = ICERoleAttribute.claimed(in: m), theirs == role {
            // §7.3.1.1: the larger tie-breaker controls; the other switches, or answers 487.
            let weControl = tieBreaker >= theirTieBreaker
            if (role == .controlling) == weControl {
                var e = STUNMessage(method: .binding, messageClass: .errorResponse, transactionID: m.transactionID)
                e.append(ErrorCode(487, reason: "Role Conflict"))
                return [.send(e.encode(integrityKey: Array(local.pwd.utf8), fingerprint: true), socket: socket, to: source)]
            }
            switchRole()
        }
        var ok = STUNMessage(method: .binding, messageClass: .successResponse, transactionID: m.transactionID)
        ok.append(XORMappedAddress(source))
        var actions: [Action] = [.send(ok.encode(integrityKey: Array(local.pwd.utf8), fingerprint: true), socket: socket, to: source)]
        // §7.3.1.3–7.3.1.4: learn a peer-reflexive candidate; trigger a check on the pair unless it already succeeded.
        if !pairs.contains(where: { $0.local.socket == socket && $0.remote == source }) {
            addPair(l, source, (try? m.attribute(ICEPriority.self))?.value ?? ICECandidate.priority(kind: .prflx))
        }
        guard let i = pairs.firstIndex(where: { $0.local.socket == socket && $0.remote == source }) else { return actions }
        if role == .controlled, m.contains(ICEUseCandidate.attributeType) {
            pairs[i].nominated = true
            nominations += 1
            pairs[i].nominatedAt = nominations
        }
        switch pairs[i].state {
        case .succeeded:
            if followsNomination(i) { actions += select(i, now: now) }
        case .waiting, .failed:
            pairs[i].state = .waiting
            pairs[i].sends = 0
            pairs[i].triggered = true
            nextCheckAt = min(nextCheckAt, now)
            // Once a pair is selected the timer keeps only consent: a pair the peer nominates after that is checked
            // back at once, and again each time the peer repeats its check (no retransmission timer runs for it).
            if selected == nil {
                actions += tick(now: now)
            } else if pairs[i].nominated {
                actions.append(send(i, now: now))
            }
        case .inProgress:
            if selected != nil, pairs[i].nominated { actions.append(send(i, now: now)) }
        }
        return actions
    }

    private mutating func response(_ m: STUNMessage, from source: TransportAddress, now: ContinuousClock.Instant) -> [Action] {
        if let consent = consentTransaction, m.transactionID == consent, m.messageClass == .successResponse,
           source == selected?.remote, m.verifyMessageIntegrity(key: Array(remote.pwd.utf8)) {
            consentTransaction = nil
            consentAnswered = now
            return []
        }
        guard let i = pairs.firstIndex(where: { $0.transaction == m.transactionID && $0.state == .inProgress }),
              m.verifyMessageIntegrity(key: Array(remote.pwd.utf8)) else { return [] }
        pairs[i].transaction = nil
        pairs[i].retransmitAt = nil
        if m.messageClass == .errorResponse {
            if (try? m.attribute(ErrorCode.self))?.code == 487 {
                // §7.2.5.1: switch role and check again.
                switchRole()
                pairs[i].state = .waiting
                pairs[i].sends = 0
                pairs[i].triggered = true
            } else {
                pairs[i].state = .failed
            }
            return []
        }
        // §7.2.5.2.1: the response must come from where the check went.
        guard source == pairs[i].remote else {
            pairs[i].state = .failed
            return []
        }
        pairs[i].state = .succeeded
        if role == .controlling {
            if pairs[i].useCandidate { return select(i, now: now) }
            guard !pairs.contains(where: { $0.useCandidate }) else { return [] }
            // Nominate the first pair that works (§8.1.1), with a check carrying USE-CANDIDATE.
            pairs[i].useCandidate = true
            pairs[i].sends = 0
            return [send(i, now: now)]
        }
        return followsNomination(i) ? select(i, now: now) : []
    }

    /// Whether succeeded pair `i` is to be selected: nominated, and either nothing is selected yet or it is the
    /// peer's latest nomination and not the selected pair already (the controlling agent decides, RFC 8445 §8.1.1).
    private func followsNomination(_ i: Int) -> Bool {
        guard pairs[i].nominated, pairs[i].state == .succeeded else { return false }
        guard let (socket, remote) = selected else { return true }
        let latest = pairs.indices.max { pairs[$0].nominatedAt < pairs[$1].nominatedAt }
        return latest == i && !(pairs[i].local.socket == socket && pairs[i].remote == remote)
    }

    private mutating func select(_ i: Int, now: ContinuousClock.Instant) -> [Action] {
        selected = (pairs[i].local.socket, pairs[i].remote)
        consentAnswered = now
        consentCheckAt = now + Self.consentInterval
        return [.selected(socket: pairs[i].local.socket, remote: pairs[i].remote)]
    }

    private mutating func switchRole() {
        role = role == .controlling ? .controlled : .controlling
    }
}
