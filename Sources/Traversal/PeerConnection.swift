import Crypto
import Foundation
import Logging
import NIOCore
import Synchronization

/// An authenticated, end-to-end encrypted connection between a viewer and a camera, on whatever
/// path won the race. Messages are delivered whole; on datagram paths they may be lost or
/// reordered (as video tolerates), never replayed or forged.
public final class PeerConnection: Sendable {
    /// Keepalives are sent this often by default, well under a NAT's UDP timeout (30 s in the lab, RFC 4787 §4.3 asks ≥ 2 min).
    public static let keepaliveInterval: Duration = .seconds(10)
    /// With nothing received for this long the connection is considered dead.
    public static let idleTimeout: Duration = .seconds(45)
    /// Keepalive intervals a connection accepts, others are clamped (at the top, the peer's ``idleTimeout`` still spans two).
    public static let keepaliveRange: ClosedRange<Duration> = .seconds(1) ... .seconds(20)
    /// Messages buffered in ``inbound`` before the oldest are dropped.
    public static let inboundBufferLimit = 1024

    /// Which side we are.
    public let role: ConnectionRole
    /// How the connection came to be, and every move to another path since.
    public var report: ConnectionReport {
        var r = report0
        r.moves = paths.moves
        return r
    }
    /// The strategy id of the path the session uses now: the race's winner until the session moves.
    public var path: String { paths.activeStrategy }
    /// Each move of the session to another path, as it happens (the ``ConnectionReport/moves`` to come);
    /// finishes when the connection closes. One consumer.
    public var pathMoves: AsyncStream<PathMove> { paths.moveEvents }
    /// The peer's Ed25519 identity key (on a viewer: the key behind the UID it asked for).
    public let peerIdentityKey: Curve25519.Signing.PublicKey
    /// The largest application message `send` accepts now: the first path's limit, lowered to a standby
    /// relay's when one joins (``ConnectorConfiguration/relayStandby``), so that a fallback to it refuses
    /// nothing this allowed. It never rises again during the session.
    public var maxMessageSize: Int {
        min(transport.maxMessageSize, messageCeiling.withLock { $0 } ?? .max) - PeerWire.sealedOverhead
    }
    /// Application messages from the peer; finishes when the connection closes.
    public let inbound: AsyncThrowingStream<[UInt8], any Error>
    /// How often this side sends keepalives; nil when it sends none (and so does not time out an idle peer either).
    public let keepalive: Duration?

    /// The report at establishment.
    private let report0: ConnectionReport
    /// The path the session was established on (its sizes hold for every path it moves to).
    private let transport: any PeerTransport
    /// The paths: the active one, the standby relay, candidates being tried.
    let paths: SessionPaths
    private let sealer: SessionSealer
    /// Opens what arrives on any path: one replay window for all, so a switch loses and repeats nothing.
    private let opener: Mutex<SecureDatagramChannel>
    /// Looks for a direct path while the relay carries the session (nil: the session stays where it is).
    let upgrade: PathUpgrade?
    /// Bounds checks toward the peer's unvalidated new addresses, across the process's sessions.
    let addressChecks: AddressCheckLimiter
    /// Upgrade offers and answers in flight.
    let exchange = UpgradeExchange()
    /// The SCTP association carrying channels (nil if the engine refused to start one).
    private let channels: Result<ChannelSession, any Error>
    private let continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let closed = Mutex(false)
    /// The migration's own tasks (an upgrade attempt, an announcement), one per slot.
    private let migrationTasks = Mutex<[MigrationTaskSlot: Task<Void, Never>]>([:])
    private let lastHeard = Mutex(ContinuousClock.now)
    /// The path MTU search (RFC 8899), on datagram paths that may carry more than their base size.
    private let mtuSearch: Mutex<PathMTUSearch?>
    /// Yields once the search's first round has every answer it waits for.
    private let mtuSettled: AsyncStream<Void>
    private let mtuSettledSink: AsyncStream<Void>.Continuation
    /// The largest SCTP packet a standby path carries: the channel engine never uses more, whatever the path MTU search finds.
    private let channelMTUCeiling = Mutex<Int?>(nil)
    /// The largest transport message a standby path carries, or the datagram base size for a stream session
    /// that may move to a datagram path (nil: neither).
    private let messageCeiling: Mutex<Int?>
    /// The channel engine's retransmission timing on a datagram path, for a session that started on a stream
    /// and may move to one (nil: it stays on one kind).
    private let datagramTiming: SCTPAssociation.Configuration?
    /// What a camera sends again when the viewer repeats its hello (its welcome).
    private let replayOnHello: (hello: [UInt8], welcome: [UInt8])?
    /// How this session connects its standby relay, kept (with the prepared relay it owns) while it may connect again.
    private let standbySource = Mutex<StandbySource?>(nil)

    /// What connects a standby: the relay prepared for the session, the strategy (to allocate a fresh end), the
    /// peer's offer (its relayed candidate replaced when the peer renews its end), the context.
    struct StandbySource: Sendable {
        var prepared: any PreparedStrategy
        var maker: any TraversalStrategy
        var remote: PeerOffer
        var context: StrategyContext

        /// The strategy id.
        var strategy: String { maker.id }

        /// Those of `candidates` that are this strategy's relayed addresses.
        func relayed(in candidates: [Candidate]) -> [Candidate] {
            candidates.filter { $0.strategy == strategy && $0.kind == .relayed }
        }
    }

    /// Takes over a channel already used for the hello exchange: its send counter and replay window carry on
    /// (one copy only seals, the other only opens), so no nonce is ever reused.
    /// `keepalive` (clamped to ``keepaliveRange``) nil sends none: a NAT then forgets an idle path after its UDP timeout (for tests that show it).
    init(role: ConnectionRole, report: ConnectionReport, peerIdentity: Curve25519.Signing.PublicKey, transport: any PeerTransport,
         channel: SecureDatagramChannel, replayOnHello: (hello: [UInt8], welcome: [UInt8])?,
         keepalive: Duration? = PeerConnection.keepaliveInterval,
         upgrade: PathUpgrade? = nil, addressChecks: AddressCheckLimiter = .shared) {
        self.role = role
        self.addressChecks = addressChecks
        self.keepalive = keepalive.map { min(max($0, Self.keepaliveRange.lowerBound), Self.keepaliveRange.upperBound) }
        self.report0 = report
        self.peerIdentityKey = peerIdentity
        self.transport = transport
        // A relayed datagram session looks for direct paths: the channel engine's packet size, fixed when it
        // connects, is the relay's (the smallest). So does a session on a stream path (TCP), which keeps the
        // stream to fall back to as a relayed session keeps the relay.
        let upgrades = upgrade.map { !$0.strategies.isEmpty } ?? false
        let fromStream = !transport.isDatagram
        let migrates = upgrades && (transport.isRelayed || fromStream)
        // A direct datagram path on a socket that hears other addresses follows the peer when its NAT rebinds;
        // with a relay standby (``keepStandby``) it falls back to it, and from there looks for direct again.
        let follows = transport.isDatagram && !transport.isRelayed && transport is any RebindablePeerTransport
        self.upgrade = (migrates || follows) && upgrades ? upgrade : nil
        let machine = migrates || follows ? PathMigrationStateMachine(
            deciding: role == .viewer, configuration: upgrade?.configuration ?? .init(), start: migrates ? .relay : .direct,
            now: .now, nonceSeed: .random(in: 0 ... .max)) : nil
        let paths = SessionPaths(initial: transport, strategy: report.path ?? "", machine: machine)
        self.paths = paths
        let sealer = SessionSealer(paths: paths, channel: channel)
        self.sealer = sealer
        self.opener = Mutex(channel)
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [UInt8].self, throwing: (any Error).self,
                                                                    bufferingPolicy: .bufferingNewest(Self.inboundBufferLimit))
        self.inbound = stream
        self.continuation = continuation
        // A stream session that may move to a datagram path keeps to the datagram base size from the start
        // (channel packets and unreliable messages alike): chunks cut larger could never cross a datagram path.
        let carried = fromStream && migrates ? min(transport.maxMessageSize, PathMTUSearch.basePLPMTU) : transport.maxMessageSize
        messageCeiling = Mutex(fromStream && migrates ? carried : nil)
        // usrsctp's AF_CONN packets come out up to ``SCTPAssociation/mtuOverrun`` bytes over the MTU it is given.
        let limit = carried - PeerWire.sealedOverhead - SCTPAssociation.mtuOverrun
        var sctp: SCTPAssociation.Configuration = transport.isDatagram
            ? .datagram(pathMTU: limit, roundTripMs: report.roundTripMs) : .stream(pathMTU: min(limit, Self.streamPathMTU))
        // Its retransmission timer is the datagram one once it moves to a datagram path (TCP repairs losses itself, UDP does not).
        datagramTiming = fromStream && migrates ? .datagram(pathMTU: limit) : nil
        sctp.heartbeats = self.keepalive != nil
        (mtuSettled, mtuSettledSink) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        // Probing sends packets on its own schedule, so a session that asked to go quiet when idle does not probe.
        mtuSearch = transport.isDatagram && transport.probeMessageSize > transport.maxMessageSize && self.keepalive != nil
            ? Mutex(PathMTUSearch(base: transport.maxMessageSize, limit: transport.probeMessageSize)) : Mutex(nil)
        self.channels = Result {
            try ChannelSession(role: role, configuration: sctp, logger: Logger(label: "trav.channels")) { packet in
                try? await sealer.send(.sctp, packet)
            }
        }
        self.replayOnHello = replayOnHello
        startTasks()
        // With a path MTU search, the association connects once the first round has answered (``startTasks``):
        // the engine's packet size is fixed when it connects.
        if !mtuSearch.withLock({ $0 != nil }) { (try? channels.get())?.connect() }
    }

    /// The SCTP packet size on stream paths (TCP): larger than a datagram, so fewer seals per byte.
    static let streamPathMTU = 16_384

    /// Opens a channel to the peer (RFC 8832) and returns once the peer has acknowledged it.
    public func openChannel(label: String, delivery: ChannelDelivery = .reliable,
                            priority: ChannelPriority = .normal) async throws -> PeerChannel {
        try await channels.get().open(label: label, delivery: delivery, priority: priority)
    }

    /// Channels the peer opens, in the order they arrive; finishes when the connection closes.
    public var incomingChannels: AsyncStream<PeerChannel> {
        (try? channels.get().incoming) ?? AsyncStream { $0.finish() }
    }

    /// Bytes the connection's channels have sent that the peer has not yet acknowledged.
    public var channelBufferedAmount: Int { (try? channels.get().bufferedAmount) ?? 0 }

    /// The channel engine's smoothed round-trip time in ms and congestion window in bytes, once established.
    public var channelPathStatus: (srttMs: Int, congestionWindow: Int)? {
        (try? channels.get().status).flatMap { $0 }.map { ($0.srttMs, $0.cwnd) }
    }

    /// The largest transport message the session uses now: the path's base size until the path MTU search
    /// (RFC 8899) finds that larger ones arrive.
    public var pathMessageSize: Int {
        mtuSearch.withLock { $0?.current } ?? transport.maxMessageSize
    }

    /// The channel engine's path MTU.
    var channelPathMTU: Int? {
        (try? channels.get().status).flatMap { $0 }.map(\.mtu)
    }

    /// The channel engine's initial retransmission timeout (ms).
    var channelRTOInitial: UInt32? { (try? channels.get())?.configuration.rtoInitial }

    /// The channel engine's retransmission timer bounds in force (ms): initial, minimum, maximum.
    var channelRetransmissionBounds: (initial: UInt32, min: UInt32, max: UInt32)? { (try? channels.get())?.retransmissionBounds }

    /// Largest engine packet sent so far (never above the path's limit).
    var largestChannelPacket: Int { (try? channels.get().largestPacketSize) ?? 0 }

    /// Sends one unreliable datagram message (at most ``maxMessageSize`` bytes): it may be lost or reordered,
    /// as on the path itself; use a channel for anything that must arrive.
    public func send(_ message: [UInt8]) async throws {
        guard message.count <= maxMessageSize else {
            throw TraversalError(code: .messageTooLarge, detail: "\(message.count) bytes, at most \(maxMessageSize) on \(path)")
        }
        try await sendSealed(.application, message)
    }

    /// Closes the connection and tells the peer.
    public func close() async {
        try? await sendSealed(.close, [])
        shutdown(error: nil)
        await paths.closeAll()
    }

    func sendSealed(_ type: SessionMessageType, _ body: [UInt8]) async throws {
        try await sealer.send(type, body)
    }

    /// Seals and sends on one path of the set (probes and answers, which prove that path), to its peer
    /// address or to `address`, a new one being checked.
    func sendSealed(_ type: SessionMessageType, _ body: [UInt8], on path: SessionPathID, to address: SocketAddress? = nil) async throws {
        try await sealer.send(type, body, on: path, to: address)
    }

    deinit {
        // Dropped without close(): release the association, the tasks and every path all the same.
        shutdown(error: nil)
        let paths = self.paths
        Task { await paths.closeAll() }
    }

    /// Keeps `task` to cancel it when the connection shuts down (at once, if it already has).
    /// Keeps `task` in `slot`, replacing (and cancelling) the one there: at most one per slot, so a long
    /// session holds a bounded number however many attempts it makes.
    func keep(_ task: Task<Void, Never>, in slot: MigrationTaskSlot) {
        let replaced = migrationTasks.withLock { t -> Task<Void, Never>? in
            guard !closed.withLock({ $0 }) else { return task }
            return t.updateValue(task, forKey: slot)
        }
        replaced?.cancel()
    }

    func shutdown(error: (any Error)?) {
        closed.withLock { $0 = true }
        if let error { continuation.finish(throwing: error) } else { continuation.finish() }
        (try? channels.get())?.close(reason: error.map { "\($0)" } ?? "connection closed")
        let all = tasks.withLock { t -> [Task<Void, Never>] in
            let copy = t
            t = []
            return copy
        }
        for t in all { t.cancel() }
        for t in migrationTasks.withLock({ t in defer { t = [:] }; return Array(t.values) }) { t.cancel() }
        paths.stopReading()
        releaseStandbySource()
    }

    /// Closes the prepared relay standbys are connected with: the session will connect none again.
    private func releaseStandbySource() {
        guard let source = standbySource.withLock({ s in defer { s = nil }; return s }) else { return }
        Task { await source.prepared.close() }
    }

    private func startTasks() {
        paths.startReader(for: .initial) { [weak self] path, result, source in await self?.arrived(result, on: path, from: source) ?? false }
        // The connection is held only for each turn, never across the sleep: a dropped connection is released
        // (its deinit cancels this task and closes its paths) even while its migration rules wait.
        let migrator: Task<Void, Never>? = !paths.hasMachine ? nil : Task { [weak self] in
            var wake = ContinuousClock.now
            while !Task.isCancelled {
                try? await Task.sleep(until: wake, clock: .continuous)
                guard let self, !Task.isCancelled, let next = await self.migrationStep() else { return }
                wake = next
            }
        }
        guard let interval = keepalive else {
            // No keepalives: a peer configured alike is silent while idle, so silence proves nothing.
            tasks.withLock { $0 = migrator.map { [$0] } ?? [] }
            return
        }
        let prober = Task { [weak self] in
            await self?.perform(self?.mtuSearch.withLock { $0?.start(now: .now) } ?? [])
            // The first round: until every probe is answered (or ``PathMTUSearch/initialWait``), then connect
            // the channel engine with the size found. A packet from the peer's engine connects it sooner.
            if let settled = self?.mtuSettled {
                _ = try? await withDeadline(PathMTUSearch.initialWait) {
                    for await _ in settled { return }
                }
            }
            (try? self?.channels.get())?.connect()
            // Bounded: each pass either sleeps until the search's next deadline or ends when it has none.
            while !Task.isCancelled {
                guard let due = self?.mtuSearch.withLock({ $0?.nextDeadline }) ?? nil else { return }
                try? await Task.sleep(until: due, clock: .continuous)
                guard let self, !Task.isCancelled else { return }
                await self.perform(self.mtuSearch.withLock { $0?.tick(now: .now) } ?? [])
            }
        }
        let keeper = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self, !Task.isCancelled else { return }
                if ContinuousClock.now - self.lastHeard.withLock({ $0 }) > Self.idleTimeout {
                    self.shutdown(error: TraversalError(code: .closed, detail: "nothing heard for \(Self.idleTimeout)"))
                    await self.paths.closeAll()
                    return
                }
                try? await self.sendSealed(.keepalive, [])
            }
        }
        tasks.withLock { $0 = [keeper, prober] + (migrator.map { [$0] } ?? []) }
    }

    /// Handles what a path's reader got: a frame (from `newSource`, when that is not the address the path sends
    /// to), or the path's end. Returns false to stop reading.
    func arrived(_ result: Result<[UInt8], any Error>, on path: SessionPathID, from newSource: SocketAddress? = nil) async -> Bool {
        let frame: [UInt8]
        switch result {
        case .success(let f):
            frame = f
        case .failure(let error):
            // The active path failing ends the session; a standby or candidate failing only leaves the set.
            if paths.isActive(path) {
                shutdown(error: TraversalError(code: .closed, detail: "\(error)"))
            } else {
                paths.withMachine { $0.lost(path, now: .now) }
                await paths.remove(path)
            }
            return false
        }
        // The viewer repeats its hello, the same sealed frame, until our welcome arrives: the replay window
        // refuses the copies, so they are known by their bytes and answered (else a lost welcome left the
        // viewer waiting out its access timeout).
        if let replayOnHello, frame == replayOnHello.hello {
            try? await sendSealed(.welcome, replayOnHello.welcome)
            return true
        }
        guard frame.first == PeerWire.sealed, let (plain, counter) = try? opener.withLock({ o -> ([UInt8], UInt64) in
                  let packet = Array(frame.dropFirst())
                  return (try o.open(packet), UInt64(bigEndianBytes: packet[..<SecureDatagramChannel.counterLength]))
              }),
              let type = plain.first.flatMap(SessionMessageType.init(rawValue:)) else { return true }
        // Opened, so its counter is in the window; it is the newest if it is the highest on its path.
        let newest = paths.isNewest(counter, on: path)
        lastHeard.withLock { $0 = .now }
        if let newSource {
            // Authentic and fresh, from an address the path does not send to: the peer's NAT may have rebound.
            await performMigration(paths.withMachine {
                $0.heard(from: newSource, on: path, bytes: frame.count, newest: newest, now: .now)
            } ?? [])
        } else {
            paths.heard(on: path)
        }
        let body = Array(plain.dropFirst())
        switch type {
        case .application:
            continuation.yield(body)
        case .sctp:
            (try? channels.get())?.input(body)
        case .close:
            shutdown(error: nil)
            await paths.closeAll()
            return false
        case .hello:
            // A hello sealed afresh: answer it too.
            if let replayOnHello { try? await sendSealed(.welcome, replayOnHello.welcome) }
        case .pathProbe:
            // Acknowledge a probe only if it arrived at the size it claims (so the size is proven).
            if body.count >= 2, Int(body[0]) << 8 | Int(body[1]) == frame.count {
                try? await sendSealed(.pathProbeAck, [body[0], body[1]])
            }
        case .pathProbeAck:
            if body.count == 2 {
                let size = Int(body[0]) << 8 | Int(body[1])
                let (actions, settled) = mtuSearch.withLock { s -> ([PathMTUSearch.Action], Bool) in
                    let a = s?.acknowledged(size: size, now: .now) ?? []
                    return (a, s?.isSettled ?? true)
                }
                await perform(actions)
                if settled { mtuSettledSink.yield() }
            }
        case .pathOffer, .pathAnswer, .pathCheck, .pathCheckAnswer, .pathSwitch, .standbyOffer:
            await migrationMessage(type, body, on: path, from: newSource, frameBytes: frame.count)
        case .keepalive, .welcome, .denied:
            break
        }
        return true
    }

    /// Whether the session can keep a relay as standby: it runs on a direct datagram path that has migration rules.
    var canKeepStandby: Bool {
        transport.isDatagram && !transport.isRelayed && paths.withMachine({ $0.standby == nil }) == true
    }

    /// Connects `prepared` (a relay, ``ConnectorConfiguration/relayStandby``) in the background and adds its
    /// path to the set as the standby a dead direct path falls back to. The deciding side keeps `prepared` to
    /// connect a fresh standby when that one dies (``PathMigrationStateMachine/Action/connectStandby(attempt:replacing:)``);
    /// the other side keeps `strategy` to allocate a fresh end of its own when its end dies. Both close what they
    /// keep when the session closes. From then on the channel engine sends packets no larger than the standby
    /// carries, so a fallback loses none.
    func keepStandby(_ prepared: any PreparedStrategy, strategy: any TraversalStrategy, remote: PeerOffer, context: StrategyContext) {
        let source = StandbySource(prepared: prepared, maker: strategy, remote: remote, context: context)
        let kept = standbySource.withLock { s -> Bool in
            guard s == nil, !closed.withLock({ $0 }) else { return false }
            s = source
            return true
        }
        guard kept else {
            Task { await prepared.close() }
            return
        }
        for case .connectStandby(let attempt, let replacing) in paths.withMachine({ $0.standbyWanted(now: .now) }) ?? [] {
            connectStandby(attempt, replacing: replacing)
        }
    }

    /// Connects standby attempt `attempt` in the background (one at a time: a newer one cancels it) and tells
    /// the migration rules how it went. On the side that does not decide, a replacement is a fresh end of its own
    /// (``renewStandbyEnd(_:)``).
    func connectStandby(_ attempt: UInt32, replacing: Bool) {
        keep(Task { [weak self] in
            guard let source = self?.standbySource.withLock({ $0 }), let deciding = self?.paths.withMachine({ $0.deciding }) else { return }
            let transport = deciding || !replacing
                ? try? await source.prepared.connect(remote: source.remote, context: source.context)
                : await self?.renewStandbyEnd(source)
            guard let self else {
                await transport?.close()
                return
            }
            // The other side's first end is spent (handed to the path) or unused: closed now. It keeps the strategy
            // to renew its end only if that end joined; otherwise it will connect none again.
            if !deciding, !replacing {
                await source.prepared.close()
                if transport == nil { self.releaseStandbySource() }
            }
            guard let transport, transport.isDatagram, let path = self.paths.add(transport, strategy: source.strategy) else {
                await transport?.close()
                await self.performMigration(self.paths.withMachine { $0.standbyFailed(attempt: attempt, now: .now) } ?? [])
                return
            }
            self.lowerSizes(to: transport)
            self.paths.startReader(for: path) { [weak self] path, result, source in await self?.arrived(result, on: path, from: source) ?? false }
            guard self.paths.withMachine({ $0.standbyConnected(path, attempt: attempt, now: .now) }) == true else {
                await self.paths.remove(path)
                return
            }
            if replacing, let move = self.paths.standbyReplaced(by: path) {
                source.context.logger.info("relay standby replaced", metadata: ["route": "\(move.route)", "attempt": "\(attempt)"])
            } else {
                source.context.logger.info("relay standing by", metadata: ["route": "\(transport.pathDescription)"])
            }
        }, in: .standby)
    }

    /// Times the side renewing its end of the standby offers it, ``standbyOfferInterval`` apart, while the peer has not reached it.
    static let standbyOfferSends = 20
    /// Wait between offers of a renewed standby end.
    static let standbyOfferInterval: Duration = .milliseconds(500)

    /// Allocates a fresh end of the standby (this side's own died), offers its relayed address sealed on the active
    /// path until the peer reaches it, and returns the path once the peer has (nil: no allocation, or no peer in time).
    private func renewStandbyEnd(_ source: StandbySource) async -> (any PeerTransport)? {
        guard let fresh = try? await source.maker.prepare(source.context) else { return nil }
        let candidates = source.relayed(in: fresh.candidates)
        let offer = PeerOffer(identityKey: Data(), candidates: candidates, strategies: [source.strategy])
        guard !candidates.isEmpty, let body = try? JSONEncoder().encode(offer), body.count <= maxMessageSize else {
            await fresh.close()
            return nil
        }
        source.context.logger.info("offering a renewed relay standby end", metadata: ["relayed": "\(candidates[0].address)"])
        let sender = Task { [weak self] in
            for _ in 0..<Self.standbyOfferSends {
                try? await self?.sendSealed(.standbyOffer, Array(body))
                try? await Task.sleep(for: Self.standbyOfferInterval)
            }
        }
        defer { sender.cancel() }
        let transport = try? await fresh.connect(remote: source.remote, context: source.context)
        await fresh.close()
        return transport
    }

    /// The peer offered a fresh end of the standby (`body`: JSON ``PeerOffer``): the deciding side takes its relayed
    /// candidate in place of the old one and lets the migration rules replace its own end toward it.
    func standbyOffered(_ body: [UInt8]) async {
        guard paths.withMachine({ $0.deciding }) == true,
              let offer = try? JSONDecoder().decode(PeerOffer.self, from: Data(body)),
              offer.candidates.count <= PeerOffer.maxCandidates else { return }
        let renewed = standbySource.withLock { s -> Bool in
            guard var source = s else { return false }
            let fresh = source.relayed(in: offer.candidates)
            let old = source.relayed(in: source.remote.candidates)
            // Offered again while the peer waits for us: already taken.
            guard !fresh.isEmpty, fresh != old else { return false }
            source.remote.candidates = source.remote.candidates.filter { $0.strategy != source.strategy } + fresh
            s = source
            return true
        }
        guard renewed else { return }
        upgrade?.context.logger.info("peer renewed its relay standby end", metadata: ["relayed": "\(offer.candidates[0].address)"])
        await performMigration(paths.withMachine { $0.peerRenewedStandby(now: .now) } ?? [])
    }

    /// Gives the channel engine the retransmission timing of a datagram path when a session that started on a
    /// stream moves to one (UDP loses packets; TCP repaired them itself). It keeps that timing if it falls back to
    /// the stream: what the dead datagram path lost must be sent again soon, not after the stream's 3 s minimum.
    func retune(for path: SessionPathID) {
        guard let datagramTiming, paths.transport(of: path)?.isDatagram == true else { return }
        (try? channels.get())?.setRetransmissionTiming(datagramTiming)
    }

    /// Lowers what the session sends, unreliable messages and channel packets alike, to what `standby` carries.
    private func lowerSizes(to standby: any PeerTransport) {
        messageCeiling.withLock { $0 = min($0 ?? .max, standby.maxMessageSize) }
        let mtu = standby.maxMessageSize - PeerWire.sealedOverhead - SCTPAssociation.mtuOverrun
        let lowered = channelMTUCeiling.withLock { c -> Int in
            let v = min(c ?? mtu, mtu)
            c = v
            return v
        }
        (try? channels.get())?.setPathMTU(min(channelPathMTU ?? lowered, lowered))
    }

    /// Carries out the path MTU search's actions.
    private func perform(_ actions: [PathMTUSearch.Action]) async {
        for action in actions {
            switch action {
            case .sendProbe(let size):
                let padding = size - PeerWire.sealedOverhead - 2
                guard padding >= 0 else { continue }
                try? await sendSealed(.pathProbe, [UInt8(size >> 8), UInt8(size & 0xFF)] + [UInt8](repeating: 0, count: padding))
            case .use(let size):
                let mtu = size - PeerWire.sealedOverhead - SCTPAssociation.mtuOverrun
                (try? channels.get())?.setPathMTU(min(mtu, channelMTUCeiling.withLock { $0 } ?? mtu))
            }
        }
    }
}

/// Seals session messages and sends them on the active path (or a given one); one counter sequence for all senders and paths.
final class SessionSealer: Sendable {
    private let paths: SessionPaths
    private let channel: Mutex<SecureDatagramChannel>

    init(paths: SessionPaths, channel: SecureDatagramChannel) {
        self.paths = paths
        self.channel = Mutex(channel)
    }

    /// Seals `body` as a message of `type` and sends it on the active path.
    func send(_ type: SessionMessageType, _ body: [UInt8]) async throws {
        let packet = try channel.withLock { try $0.seal([type.rawValue] + body) }
        try await paths.send([PeerWire.sealed] + packet, counts: type.expectsTraffic)
    }

    /// Seals `body` as a message of `type` and sends it on `path`, to `address` when given.
    func send(_ type: SessionMessageType, _ body: [UInt8], on path: SessionPathID, to address: SocketAddress? = nil) async throws {
        let packet = try channel.withLock { try $0.seal([type.rawValue] + body) }
        if let address {
            try await paths.send([PeerWire.sealed] + packet, on: path, to: address)
        } else {
            try await paths.send([PeerWire.sealed] + packet, on: path)
        }
    }
}
