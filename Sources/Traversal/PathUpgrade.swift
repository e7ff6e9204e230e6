import Foundation
import Logging
import NIOCore
import Synchronization

/// What a relayed session uses to look for a direct path while it runs (``PathMigrationStateMachine``).
///
/// ```
/// viewer (decides)                      relay path                           camera
///   gather (fresh token) ── pathOffer{n, token, candidates} ──────────────►  gather (same token)
///                        ◄─────────────── pathAnswer{n, token, candidates} ──
///   connect(answer) … punch …  ◄──────── direct path ────────►  … connect(offer)
///   pathCheck{nonce} ──────────────────── direct ────────────────────────►
///                    ◄─────────────────── direct ──────────── pathCheckAnswer{nonce}
///   switch; pathSwitch{epoch} ─────────── direct ────────────────────────►  switch
/// ```
/// Every message is sealed in the session, so only the peer can offer, answer, confirm or move a path.
struct PathUpgrade: Sendable {
    /// Strategies run again in the background (by default those with ``TraversalStrategy/upgradesRelayedSessions``).
    var strategies: [any TraversalStrategy]
    /// The context they run in (session token replaced per attempt; no relay).
    var context: StrategyContext
    /// How long one gathering may take.
    var gatherTimeout: Duration
    /// The rules' timing.
    var configuration: PathMigrationStateMachine.Configuration
}

/// An upgrade offer or answer: attempt number, the attempt's probe token and the candidates.
///
/// ```
/// +----------------------+-------------------+------------------------+
/// | attempt (4, big-end.)| session token (8) | JSON PeerOffer         |
/// +----------------------+-------------------+------------------------+
/// ```
struct PathOfferMessage: Sendable {
    /// Bytes of the token.
    static let tokenLength = 8
    /// Times the deciding side sends its offer, ``resendInterval`` apart, while no answer comes.
    static let maxSends = 10
    /// Wait between sends of an offer.
    static let resendInterval: Duration = .milliseconds(300)

    var attempt: UInt32
    var token: [UInt8]
    var offer: PeerOffer

    /// The message, dropping trailing candidates until it fits `limit` bytes; nil if not even one fits.
    func encoded(fitting limit: Int) -> [UInt8]? {
        var trimmed = offer
        while true {
            guard let json = try? JSONEncoder().encode(trimmed) else { return nil }
            let bytes = attempt.bigEndianBytes + token + Array(json)
            if bytes.count <= limit { return bytes }
            guard trimmed.candidates.count > 1 else { return nil }
            trimmed.candidates.removeLast()
        }
    }

    init(attempt: UInt32, token: [UInt8], offer: PeerOffer) {
        self.attempt = attempt
        self.token = token
        self.offer = offer
    }

    /// Decodes a message; nil when malformed or carrying more than ``PeerOffer/maxCandidates``.
    init?(decoding body: [UInt8]) {
        guard body.count > 4 + Self.tokenLength,
              let offer = try? JSONDecoder().decode(PeerOffer.self, from: Data(body[(4 + Self.tokenLength)...])),
              offer.candidates.count <= PeerOffer.maxCandidates else { return nil }
        self.attempt = UInt32(bigEndianBytes: body[0..<4])
        self.token = Array(body[4..<(4 + Self.tokenLength)])
        self.offer = offer
    }
}

/// Answers the deciding side waits for, and the answer the other side sent last (sent again when the offer repeats).
final class UpgradeExchange: Sendable {
    private struct State {
        var waiting: [UInt32: AsyncStream<PathOfferMessage>.Continuation] = [:]
        var lastAnswer: (attempt: UInt32, body: [UInt8])?
    }

    private let state = Mutex(State())

    /// A stream that receives the answer to `attempt`.
    func expectAnswer(_ attempt: UInt32) -> AsyncStream<PathOfferMessage> {
        let (stream, sink) = AsyncStream.makeStream(of: PathOfferMessage.self, bufferingPolicy: .bufferingNewest(1))
        state.withLock { $0.waiting[attempt] = sink }
        return stream
    }

    /// Stops waiting for `attempt`'s answer.
    func forget(_ attempt: UInt32) {
        state.withLock { $0.waiting.removeValue(forKey: attempt) }?.finish()
    }

    /// Hands an answer to whoever waits for its attempt (others are stale and dropped).
    func deliver(_ answer: PathOfferMessage) {
        _ = state.withLock { $0.waiting[answer.attempt] }?.yield(answer)
    }

    /// Remembers the answer sent for `attempt`.
    func answered(_ attempt: UInt32, body: [UInt8]) {
        state.withLock { $0.lastAnswer = (attempt, body) }
    }

    /// The answer sent for `attempt`, if it is the last one.
    func answer(for attempt: UInt32) -> [UInt8]? {
        state.withLock { s in s.lastAnswer.flatMap { $0.attempt == attempt ? $0.body : nil } }
    }
}

/// Where the migration keeps a task: one upgrade attempt and one announcement at a time (a newer one replaces it).
enum MigrationTaskSlot: Hashable, Sendable {
    case attempt
    case announcement
    /// Connecting the relay that stands by beside a direct path.
    case standby
}

extension PeerConnection {
    /// One turn of the migration rules: carries out what is due and returns when to turn again (their next
    /// deadline, at least every probe interval, as sends change them), or nil when the session has no rules.
    func migrationStep() async -> ContinuousClock.Instant? {
        guard let interval = paths.withMachine({ $0.configuration.probeInterval }) else { return nil }
        await performMigration(paths.withMachine { $0.tick(now: .now) } ?? [])
        let next = paths.withMachine { $0.nextDeadline } ?? nil
        return min(next ?? .now + interval, .now + interval)
    }

    /// Handles a sealed migration message of `frameBytes` bytes that arrived on `path` (from `newSource`, when
    /// that is not the address the path sends to).
    func migrationMessage(_ type: SessionMessageType, _ body: [UInt8], on path: SessionPathID, from newSource: SocketAddress? = nil,
                          frameBytes: Int = 0) async {
        guard paths.hasMachine else { return }
        switch type {
        case .pathCheck:
            guard body.count == 8 else { return }
            if let newSource {
                // Answered where it came from (so the peer sees that address work), within that address's budget.
                guard paths.withMachine({ $0.mayAnswer(on: path, to: newSource, bytes: frameBytes) }) == true,
                      addressChecks.admit(newSource, now: .now) == nil else { return }
                try? await sendSealed(.pathCheckAnswer, body, on: path, to: newSource)
            } else {
                try? await sendSealed(.pathCheckAnswer, body, on: path)
            }
        case .pathCheckAnswer:
            guard body.count == 8 else { return }
            let nonce = UInt64(bigEndianBytes: body[...])
            await performMigration(paths.withMachine { m in
                newSource.map { m.answered(on: path, from: $0, nonce: nonce, now: .now) } ?? m.answered(on: path, nonce: nonce, now: .now)
            } ?? [])
        case .pathSwitch:
            guard body.count == 4 else { return }
            let epoch = UInt32(bigEndianBytes: body[...])
            await performMigration(paths.withMachine { $0.peerSwitched(to: path, epoch: epoch, now: .now) } ?? [])
        case .pathOffer:
            guard let offer = PathOfferMessage(decoding: body) else { return }
            let actions = paths.withMachine { $0.peerOffered(attempt: offer.attempt, now: .now) } ?? []
            if actions.isEmpty, let again = exchange.answer(for: offer.attempt) {
                // Our answer was lost: the offer came again.
                try? await sendSealed(.pathAnswer, again)
            }
            await performMigration(actions, peerOffer: offer)
        case .pathAnswer:
            if let answer = PathOfferMessage(decoding: body) { exchange.deliver(answer) }
        case .standbyOffer:
            await standbyOffered(body)
        default:
            return
        }
    }

    /// Carries out the migration rules' actions (`peerOffer`: the offer an ``PathMigrationStateMachine/Action/answerUpgrade(attempt:)`` answers).
    func performMigration(_ actions: [PathMigrationStateMachine.Action], peerOffer: PathOfferMessage? = nil) async {
        let logger = upgrade?.context.logger ?? Logger(label: "trav.paths")
        for action in actions {
            switch action {
            case .beginUpgrade(let attempt):
                keep(Task { [weak self] in await self?.offerUpgrade(attempt) }, in: .attempt)
            case .answerUpgrade(let attempt):
                guard let peerOffer, peerOffer.attempt == attempt else { continue }
                keep(Task { [weak self] in await self?.answerUpgrade(peerOffer) }, in: .attempt)
            case .probe(let path, let nonce):
                try? await sendSealed(.pathCheck, nonce.bigEndianBytes, on: path)
            case .switchTo(let path, let reason):
                retune(for: path)
                if let move = paths.activate(path, reason: reason) {
                    logger.info("session moved", metadata: ["from": "\(move.from)", "to": "\(move.to)", "route": "\(move.route)",
                                                            "reason": "\(reason.rawValue)"])
                }
            case .announce(let path, let epoch):
                // Sent a few times: a lost announcement only leaves the peer sending on the other path a while.
                keep(Task { [weak self] in
                    for _ in 0..<Self.announcements {
                        try? await self?.sendSealed(.pathSwitch, epoch.bigEndianBytes, on: path)
                        try? await Task.sleep(for: Self.announcementInterval)
                    }
                }, in: .announcement)
            case .abandon(let path):
                // Closed on its own: a dead relay connection's close waits out a deallocation nobody answers.
                await paths.remove(path, waiting: false)
            case .checkAddress(let path, let address, let nonce):
                // Within the session's budget; the process's caps per destination and in all come on top.
                if let refusal = addressChecks.admit(address, now: .now) {
                    logger.debug("address check not sent", metadata: ["address": "\(address)", "refusal": "\(refusal.name)"])
                    continue
                }
                try? await sendSealed(.pathCheck, nonce.bigEndianBytes, on: path, to: address)
            case .rebind(let path, let address):
                let standby = paths.withMachine { $0.standby == path } == true
                if let move = paths.rebind(path, to: address, standby: standby) {
                    logger.info(move.reason == .standbyReplaced ? "peer replaced the relay standby" : "peer rebound",
                                metadata: ["path": "\(move.to)", "route": "\(move.route)"])
                }
            case .connectStandby(let attempt, let replacing):
                connectStandby(attempt, replacing: replacing)
            }
        }
    }

    /// Times a move is announced.
    static let announcements = 3
    /// Wait between announcements of one move.
    static let announcementInterval: Duration = .milliseconds(50)

    /// The deciding side's attempt: gather, offer until answered, connect.
    private func offerUpgrade(_ attempt: UInt32) async {
        guard let upgrade else {
            await performMigration(paths.withMachine { $0.upgradeFailed(attempt: attempt, now: .now) } ?? [])
            return
        }
        var token = [UInt8](repeating: 0, count: PathOfferMessage.tokenLength)
        for i in token.indices { token[i] = .random(in: 0 ... .max) }
        let context = upgrade.context.forUpgrade(token: token, budget: nil)
        let prepared = await gatherUpgrade(upgrade, context: context)
        let offer = PeerOffer(identityKey: Data(), candidates: prepared.flatMap { $0.1.candidates }, strategies: prepared.map { $0.0 })
        guard !prepared.isEmpty, let message = PathOfferMessage(attempt: attempt, token: token, offer: offer).encoded(fitting: maxMessageSize) else {
            for (_, p) in prepared { await p.close() }
            await performMigration(paths.withMachine { $0.upgradeFailed(attempt: attempt, now: .now) } ?? [])
            return
        }
        let answers = exchange.expectAnswer(attempt)
        let sender = Task { [weak self] in
            for _ in 0..<PathOfferMessage.maxSends {
                try? await self?.sendSealed(.pathOffer, message)
                try? await Task.sleep(for: PathOfferMessage.resendInterval)
            }
        }
        let answer = try? await withDeadline(PathOfferMessage.resendInterval * PathOfferMessage.maxSends) {
            for await a in answers { return a }
            throw CancellationError()
        }
        sender.cancel()
        exchange.forget(attempt)
        guard let answer else {
            for (_, p) in prepared { await p.close() }
            await performMigration(paths.withMachine { $0.upgradeFailed(attempt: attempt, now: .now) } ?? [])
            return
        }
        await connectCandidate(attempt, prepared, remote: answer.offer, context: context)
    }

    /// The other side's part: gather with the offer's token, answer, connect.
    private func answerUpgrade(_ offer: PathOfferMessage) async {
        guard let upgrade, offer.token.count == PathOfferMessage.tokenLength else { return }
        // The peer is authenticated, but what we send toward its offered addresses stays bounded by the offer's size.
        let budget = ProbeAllowance(ProbeBudget(offerBytes: (try? JSONEncoder().encode(offer.offer).count) ?? 0, vouched: nil))
        let context = upgrade.context.forUpgrade(token: offer.token, budget: budget)
        let prepared = await gatherUpgrade(upgrade, context: context)
        let answer = PeerOffer(identityKey: Data(), candidates: prepared.flatMap { $0.1.candidates }, strategies: prepared.map { $0.0 })
        guard !prepared.isEmpty,
              let message = PathOfferMessage(attempt: offer.attempt, token: offer.token, offer: answer).encoded(fitting: maxMessageSize) else {
            for (_, p) in prepared { await p.close() }
            await performMigration(paths.withMachine { $0.upgradeFailed(attempt: offer.attempt, now: .now) } ?? [])
            return
        }
        exchange.answered(offer.attempt, body: message)
        try? await sendSealed(.pathAnswer, message)
        await connectCandidate(offer.attempt, prepared, remote: offer.offer, context: context)
    }

    /// Runs every prepared strategy the peer also offers; the first path connected joins the set as a candidate.
    private func connectCandidate(_ attempt: UInt32, _ prepared: [(String, any PreparedStrategy)], remote: PeerOffer,
                                  context: StrategyContext) async {
        let usable = prepared.filter { remote.strategies.contains($0.0) }
        let winner: (String, any PeerTransport)? = await withTaskGroup(of: (String, (any PeerTransport)?).self) { group in
            for (id, p) in usable {
                group.addTask { (id, try? await p.connect(remote: remote, context: context)) }
            }
            var first: (String, any PeerTransport)?
            for await (id, transport) in group {
                guard let transport else { continue }
                if first == nil {
                    first = (id, transport)
                    group.cancelAll()
                } else {
                    await transport.close()
                }
            }
            return first
        }
        for (_, p) in prepared { await p.close() }
        guard let winner else {
            await performMigration(paths.withMachine { $0.upgradeFailed(attempt: attempt, now: .now) } ?? [])
            return
        }
        let (strategy, transport) = winner
        guard let path = paths.add(transport, strategy: strategy) else {
            await transport.close()
            return
        }
        paths.startReader(for: path) { [weak self] path, result, source in await self?.arrived(result, on: path, from: source) ?? false }
        await performMigration(paths.withMachine { $0.candidateConnected(path, attempt: attempt, now: .now) } ?? [])
    }

    /// Prepares every upgrade strategy within the gather timeout; a late one is closed when it finishes.
    private func gatherUpgrade(_ upgrade: PathUpgrade, context: StrategyContext) async -> [(String, any PreparedStrategy)] {
        await withTaskGroup(of: (String, (any PreparedStrategy)?).self) { group in
            for s in upgrade.strategies {
                group.addTask {
                    let work = Task { try await s.prepare(context) }
                    switch await result(of: work, within: upgrade.gatherTimeout) {
                    case .success(let p)?: return (s.id, p)
                    case .failure?: return (s.id, nil)
                    case nil:
                        work.cancel()
                        Task { if let p = try? await work.value { await p.close() } }
                        return (s.id, nil)
                    }
                }
            }
            var out: [(String, any PreparedStrategy)] = []
            for await (id, p) in group { if let p { out.append((id, p)) } }
            return out
        }
    }
}

extension StrategyContext {
    /// This context for one upgrade attempt: its token, no relay, `budget` for probes toward the peer's addresses.
    func forUpgrade(token: [UInt8], budget: ProbeAllowance?) -> StrategyContext {
        var c = self
        c.sessionToken = token
        c.relay = nil
        c.renewRelay = nil
        c.probeBudget = budget
        return c
    }
}
