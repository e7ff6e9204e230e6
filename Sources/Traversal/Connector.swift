import Crypto
import Foundation
import Logging
import SourceLimits
import Synchronization

/// How a camera decides who may watch: a password, paired viewer keys, or both.
public struct CameraAccessPolicy: Sendable {
    /// The password check (a salted scrypt hash; the password itself is not kept).
    public var passwordVerifier: PasswordVerifier?
    /// Viewer identity keys allowed without a password.
    public var pairedViewers: [Curve25519.Signing.PublicKey]
    /// Limits on password guessing (per source address, per camera, concurrent checks).
    public var limits: PasswordAttemptLimits

    /// Creates a policy.
    public init(passwordVerifier: PasswordVerifier?, pairedViewers: [Curve25519.Signing.PublicKey] = [],
                limits: PasswordAttemptLimits = PasswordAttemptLimits()) {
        self.passwordVerifier = passwordVerifier
        self.pairedViewers = pairedViewers
        self.limits = limits
    }

    /// A policy with one password, hashed with `parameters` (the standard scrypt cost by default).
    public static func password(_ password: String, parameters: PasswordVerifier.Parameters = .standard,
                                limits: PasswordAttemptLimits = PasswordAttemptLimits()) throws -> CameraAccessPolicy {
        CameraAccessPolicy(passwordVerifier: try PasswordVerifier(password: password, parameters: parameters), limits: limits)
    }
}

/// Configuration of a ``Connector``.
public struct ConnectorConfiguration: Sendable {
    /// Our identity: the device key on a camera, usually ``DeviceIdentity/ephemeral()`` on a viewer.
    public var identity: DeviceIdentity
    /// The strategies to gather and race, e.g. `[DirectLAN(), STUNDiscovery(), …]`.
    public var strategies: [any TraversalStrategy]
    /// The cloud: signalling, its STUN servers and the trust for its relay (see ``TravCloud``).
    public var cloud: TravCloud?
    /// STUN servers (`host:port` or `ip:port`) strategies may use besides the ``cloud``'s; names are
    /// resolved each time strategies gather.
    public var stunServers: [String]
    /// How long a connection attempt may take from the start signal to an authorised session.
    public var connectTimeout: Duration
    /// How long gathering may take before the offer or answer goes out without the slow strategies
    /// (a STUN server that does not answer must not hold up a LAN path).
    ///
    /// A strategy that ran out of this time is not waited for on the next introductions (UDP STUN
    /// on a network that blocks UDP costs the deadline once, not on every connection): it is
    /// gathered again in the background, and once that finishes in time it is waited for again.
    public var gatherTimeout: Duration
    /// Camera keys already checked against their UIDs (a viewer then skips the UID's scrypt).
    public var knownDevices: KnownDevices
    /// The logger.
    public var logger: Logger
    /// How often connections send keepalives (``PeerConnection/keepaliveRange``); nil: never, so NATs forget idle paths.
    public var keepaliveInterval: Duration? = PeerConnection.keepaliveInterval
    /// Introductions a camera answers at once (each holds sockets and maybe a relay allocation until its
    /// race ends); one more is declined at once, whoever sent it.
    public var maxConcurrentIntroductions = ConnectorConfiguration.defaultMaxConcurrentIntroductions
    /// Default of ``maxConcurrentIntroductions``: 16 (about 64 descriptors).
    public static let defaultMaxConcurrentIntroductions = 16
    /// What a camera may send toward the addresses of one viewer's offer before the viewer answers
    /// (``ProbeBudget``): by default 3× the offer's bytes, 400 probes, 16 addresses.
    public var probeLimits = ProbeBudget.Limits()
    /// Strategies a relayed session runs again in the background to move to a direct path while it runs;
    /// nil: those of ``strategies`` that ``TraversalStrategy/upgradesRelayedSessions``. Empty: sessions stay where they start.
    public var upgradeStrategies: [any TraversalStrategy]?
    /// Timing of those moves and of the fallback to the relay when the direct path dies.
    public var pathMigration = PathMigrationStateMachine.Configuration()
    /// Whether a session that wins on a direct datagram path also connects the relay (a strategy that
    /// ``TraversalStrategy/standsByForDirectSessions``) in the background and keeps it as standby: its
    /// allocation refreshed, carrying nothing until the direct path dies, when the session falls back to it
    /// (about 1.3 s with the default ``pathMigration``). The viewer checks the standby every few seconds
    /// and connects a fresh one when it dies (its connection reset, or left on an old address when the
    /// viewer changed networks); the camera follows the replacement after a sealed check, and when its own
    /// relay connection dies it allocates afresh and offers the new relayed address over the direct path,
    /// which the viewer's replacement then reaches. Both sides must
    /// enable it; on one side only, the relay attempt times out and is closed. Default false: a direct
    /// session holds no relay allocation, and a dead direct path ends it.
    public var relayStandby = false
    /// Bounds what every session sends toward peer addresses not yet validated (rebinding checks), per
    /// destination and in all; the process's ``AddressCheckLimiter/shared`` by default.
    public var addressChecks = AddressCheckLimiter.shared
    /// What answers browser viewers (``BrowserViewerAnswering``); nil declines them.
    public var browserViewers: (any BrowserViewerAnswering)?

    /// Creates a configuration; the connect timeout defaults to 10 s, gathering to 1.5 s.
    public init(identity: DeviceIdentity, cloud: TravCloud? = nil, strategies: [any TraversalStrategy], stunServers: [String] = [],
                connectTimeout: Duration = .seconds(10), gatherTimeout: Duration = .milliseconds(1500),
                knownDevices: KnownDevices = KnownDevices(), logger: Logger = Logger(label: "trav.connector")) {
        self.identity = identity
        self.cloud = cloud
        self.knownDevices = knownDevices
        self.strategies = strategies
        self.stunServers = stunServers
        self.connectTimeout = connectTimeout
        self.gatherTimeout = gatherTimeout
        self.logger = logger
    }
}

/// The one API camera and viewer code both use: serve introductions (camera) or connect to a UID (viewer).
///
/// ```
/// viewer                          cloud                           camera
///   prepare strategies ──offer──►  introduce(UID) ──offer──────►
///   check key vs UID ◄──────────── challenge ◄─────────────────── AccessChallenge (nothing gathered yet)
///   proof{credential} ───────────► (carried once) ─────────────►  access check → prepare strategies
///                      ◄─answer+start──────────────── ◄──answer──  ─start─►
///   race: each strategy after its delay → transport → Noise XX handshake (viewer initiates)
///   first completed handshake wins, others cancelled → hello{credential} ──► the proven identity,
///   or (LAN: no proof before) the access check → welcome
/// ```
public final class Connector: Sendable {
    /// How long the viewer waits for the camera's access verdict after the handshake (the camera's
    /// scrypt check of a password is deliberately slow).
    public static let accessTimeout: Duration = .seconds(10)

    /// The configuration.
    public let configuration: ConnectorConfiguration
    /// Strategies whose last gathering ran out of time (see ``ConnectorConfiguration/gatherTimeout``).
    private let lateGatherers = Mutex<Set<String>>([])

    /// Creates a connector.
    public init(configuration: ConnectorConfiguration) {
        self.configuration = configuration
    }

    /// A context for `role`: the cloud's and the configured STUN servers, names resolved, and the cloud's relay trust.
    func strategyContext(role: ConnectionRole) async -> StrategyContext {
        let servers = (configuration.cloud?.stunServers ?? []) + configuration.stunServers
        var context = StrategyContext(role: role, stunServers: await ServerName.resolve(servers, logger: configuration.logger),
                                      logger: configuration.logger)
        context.relayTrust = configuration.cloud?.trust
        return context
    }

    // MARK: Viewer

    /// Connects to `device` through `signalling`, presenting `credential` inside the encrypted session.
    ///
    /// Throws ``TraversalError``: `unavailable` when the cloud cannot introduce us, `identityMismatch`
    /// when the cloud announces a key that is not behind the UID, `noPath` with every attempt when
    /// no strategy succeeds, `accessDenied` / `rateLimited` when the camera refuses.
    public func connect(to device: DeviceID, via signalling: any ViewerSignalling,
                        credential: AccessCredential) async throws -> PeerConnection {
        let started = ContinuousClock.now
        let logger = configuration.logger
        let baseContext = await strategyContext(role: .viewer)
        let prepared = await prepareAll(baseContext)
        // The relay kept as standby (``ConnectorConfiguration/relayStandby``) is the connection's to close.
        var standbyID: String?
        defer {
            let kept = standbyID
            Task { for p in prepared where p.id != kept { await p.prepared?.close() } }
        }
        let gathered = ms(since: started)
        let offer = PeerOffer(identityKey: configuration.identity.publicKey.rawRepresentation,
                              candidates: prepared.flatMap { $0.prepared?.candidates ?? [] },
                              strategies: configuration.strategies.map(\.id))
        let intro: Introduction
        do {
            intro = try await signalling.introduce(
                to: device, offer: offer,
                prover: AccessProver(identity: configuration.identity, credential: credential, knownDevices: configuration.knownDevices))
        } catch let e as TraversalError {
            throw e
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw TraversalError(code: .cloud, detail: "\(error)")
        }
        let introduced = ms(since: started)
        guard let announced = try? Curve25519.Signing.PublicKey(rawRepresentation: intro.answer.identityKey) else {
            throw TraversalError(code: .identityMismatch, detail: "the cloud announced no valid key for \(device)")
        }
        // Whether the announced key is behind the UID costs one memory-hard scrypt (unless the key
        // is already known): it runs beside the race, whose handshakes accept exactly the announced
        // key, and must pass before the final handshake message or any credential leaves.
        let known = configuration.knownDevices
        let keyCheck = Task {
            await known.check(announced, for: device) { error in
                logger.notice("cannot record the camera's key", metadata: ["error": "\(error)"])
            }
        }
        defer { keyCheck.cancel() }
        let context = baseContext.with(requestID: intro.requestID, relay: intro.relay) { try await signalling.renewRelay($0) }
        let identity = configuration.identity
        let mismatch = TraversalError(code: .identityMismatch, detail: "the cloud announced a key that is not behind \(device)")
        let raced: RaceResult
        do {
            raced = try await race(prepared, local: offer, remote: intro.answer, context: context, started: started) { transport in
                try await SecureSessionDriver.initiate(over: transport, identity: identity, pinning: announced)
            }
        } catch {
            // A cloud lying about the key is the failure to report, whatever became of the race.
            if await !keyCheck.value { throw mismatch }
            throw error
        }
        guard await keyCheck.value else {
            await raced.transport.close()
            throw TraversalError(code: mismatch.code, detail: mismatch.detail, attempts: raced.attempts)
        }
        let phases = ConnectionPhases(gatheredMs: gathered, introducedMs: introduced, securedMs: ms(since: started))
        let connection = try await finishViewer(raced, credential: credential, requestID: intro.requestID, started: started, phases: phases,
                                                upgrade: pathUpgrade(context))
        standbyID = keepStandby(for: connection, prepared, remote: intro.answer, context: context)
        return connection
    }

    /// Starts connecting the relay beside `connection`'s direct path, when ``ConnectorConfiguration/relayStandby``
    /// asks for it and the peer offered that relay; returns the strategy id the connection now owns.
    private func keepStandby(for connection: PeerConnection, _ prepared: [Prepared], remote: PeerOffer, context: StrategyContext) -> String? {
        guard configuration.relayStandby, connection.canKeepStandby,
              let standby = configuration.strategies.first(where: { $0.standsByForDirectSessions && remote.strategies.contains($0.id) }),
              standby.id != connection.path,
              let relay = prepared.first(where: { $0.id == standby.id })?.prepared else { return nil }
        connection.keepStandby(relay, strategy: standby, remote: remote, context: context)
        return standby.id
    }

    /// How a relayed session started in `context` looks for a direct path.
    func pathUpgrade(_ context: StrategyContext) -> PathUpgrade {
        PathUpgrade(strategies: configuration.upgradeStrategies ?? configuration.strategies.filter(\.upgradesRelayedSessions),
                    context: context, gatherTimeout: configuration.gatherTimeout, configuration: configuration.pathMigration)
    }

    private func finishViewer(_ raced: RaceResult, credential: AccessCredential, requestID: String,
                              started: ContinuousClock.Instant, phases: ConnectionPhases, upgrade: PathUpgrade) async throws -> PeerConnection {
        let transport = raced.transport
        var channel = SecureDatagramChannel(send: raced.session.send, receive: raced.session.receive)
        let hello = SessionHello(credential)
        let helloPacket = [PeerWire.sealed] + (try channel.seal([SessionMessageType.hello.rawValue] + (try JSONEncoder().encode(hello))))
        // Repeat the final handshake message and the hello until the verdict arrives (datagrams may be lost).
        let resender = raced.final.isEmpty
            ? SecureSessionDriver.repeatSending(helloPacket, over: transport)
            : SecureSessionDriver.repeatSending(raced.final, helloPacket, over: transport)
        defer { resender.cancel() }
        let start = channel
        let (verdict, opened) = try await withDeadline(Self.accessTimeout) {
            var ch = start
            while true {
                let frame = try await transport.receive()
                guard frame.first == PeerWire.sealed, let plain = try? ch.open(Array(frame.dropFirst())),
                      let type = plain.first.flatMap(SessionMessageType.init(rawValue:)) else { continue }
                if type == .welcome || type == .denied { return ((type, Array(plain.dropFirst())), ch) }
            }
        }
        channel = opened
        if verdict.0 == .denied {
            await transport.close()
            let reason = String(decoding: verdict.1, as: UTF8.self)
            let refusal = reason.split(separator: ":", maxSplits: 1).first.flatMap { AccessRefusal(rawValue: String($0)) } ?? .accessDenied
            throw TraversalError(code: refusal.traversalCode,
                                 detail: "the camera refused access: \(reason)", attempts: raced.attempts)
        }
        let report = ConnectionReport(path: raced.strategy, route: transport.pathDescription,
                                      setupMs: ms(since: started), phases: phases, requestID: requestID, attempts: raced.attempts,
                                      roundTripMs: raced.session.roundTrip?.milliseconds)
        configuration.logger.info("connected", metadata: ["path": "\(raced.strategy)", "route": "\(transport.pathDescription)",
                                                          "requestID": "\(requestID)"])
        return PeerConnection(role: .viewer, report: report, peerIdentity: raced.session.peerIdentity,
                              transport: transport, channel: channel, replayOnHello: nil, keepalive: configuration.keepaliveInterval,
                              upgrade: upgrade, addressChecks: configuration.addressChecks)
    }

    // MARK: Camera

    /// Serves introductions from every source (the cloud, LAN discovery) until they all finish;
    /// yields each viewer that completed the handshake and passed the access policy (the
    /// ``CameraEvent/viewerConnected(_:)`` of ``events(_:cloud:access:)``).
    public func serve(_ sources: [AsyncStream<any IncomingIntroduction>], access: CameraAccessPolicy) -> AsyncStream<PeerConnection> {
        let events = events(sources, access: access)
        let (stream, continuation) = AsyncStream.makeStream(of: PeerConnection.self)
        let task = Task {
            for await event in events {
                if case .viewerConnected(let connection) = event { continuation.yield(connection) }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Serves introductions from every source (the cloud, LAN discovery) until they all finish, and
    /// reports what happens: each viewer admitted, each introduction that failed and why, and the
    /// cloud registration's losses and returns (`cloud`: ``CameraSignalling/connectionEvents``).
    public func events(_ sources: [AsyncStream<any IncomingIntroduction>], cloud: AsyncStream<CloudConnectionEvent>? = nil,
                       access: CameraAccessPolicy) -> AsyncStream<CameraEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: CameraEvent.self)
        var controller = AccessController(passwordVerifier: access.passwordVerifier, limits: access.limits)
        for v in access.pairedViewers { controller.pair(v) }
        let shared = SharedAccess(controller)
        let task = Task {
            await withTaskGroup(of: Void.self) { group in
                // Gather once before any viewer asks, so a strategy that cannot gather here (UDP
                // blocked, say) is already known and does not hold up the first answer.
                group.addTask {
                    let warm = await self.strategyContext(role: .camera)
                    for p in await self.prepareAll(warm) { await p.prepared?.close() }
                }
                let bound = self.configuration.maxConcurrentIntroductions
                let answering = SharedConnectionSlots(maxPerSource: bound, maxTotal: bound)
                for source in sources {
                    group.addTask {
                        await withTaskGroup(of: Void.self) { perIntro in
                            for await intro in source {
                                guard answering.admit(.unidentified) == nil else {
                                    self.configuration.logger.notice("introduction declined: too many at once", metadata: [
                                        "requestID": "\(intro.requestID)"])
                                    continuation.yield(.introductionFailed(requestID: intro.requestID, error: TraversalError(
                                        code: .rateLimited, detail: "declined: \(bound) introductions already being answered")))
                                    perIntro.addTask { await intro.decline() }
                                    continue
                                }
                                perIntro.addTask {
                                    defer { answering.release(.unidentified) }
                                    do {
                                        if let description = intro.offer.sessionDescription {
                                            try await self.answerBrowser(intro, description: description, access: shared)
                                            continuation.yield(.browserAnswered(requestID: intro.requestID))
                                            return
                                        }
                                        let c = try await self.answer(intro, access: shared)
                                        continuation.yield(.viewerConnected(c))
                                    } catch is CancellationError {
                                        return
                                    } catch {
                                        self.configuration.logger.notice("introduction failed", metadata: [
                                            "requestID": "\(intro.requestID)", "error": "\(error)"])
                                        continuation.yield(.introductionFailed(requestID: intro.requestID, error: TraversalError(error)))
                                    }
                                }
                            }
                        }
                    }
                }
                if let cloud {
                    group.addTask {
                        for await change in cloud {
                            switch change {
                            case .lost(let reason): continuation.yield(.cloudLost(reason: reason))
                            case .back(let observed): continuation.yield(.cloudBack(observedAddress: observed))
                            }
                        }
                    }
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private func answer(_ intro: any IncomingIntroduction, access: SharedAccess) async throws -> PeerConnection {
        let started = ContinuousClock.now
        // Through the cloud the viewer proves access before anything is gathered or revealed; the
        // session's handshake then admits exactly the identity that proved it.
        var admitted: (viewer: Curve25519.Signing.PublicKey, grant: AccessGrant)?
        if let claim = try await intro.requestAccess() {
            switch await access.check(claim.credential, viewer: claim.viewerKey, source: intro.vouchedRequester ?? .unidentified) {
            case .failure(let e):
                await intro.refuse(e.refusal)
                throw TraversalError(code: e.refusal.traversalCode, detail: "access proof refused: \(e.detail)")
            case .success(let grant):
                admitted = (claim.viewerKey, grant)
            }
        }
        var context = await strategyContext(role: .camera)
            .with(requestID: intro.requestID, relay: intro.relay) { try await intro.renewRelay($0) }
        // Before anyone is authenticated, the offer's addresses get what its size pays for.
        let offerBytes = (try? JSONEncoder().encode(intro.offer).count) ?? 0
        context.probeBudget = ProbeAllowance(ProbeBudget(
            offerBytes: offerBytes, vouched: intro.vouchedRequester, limits: configuration.probeLimits))
        let prepared = await prepareAll(context)
        var standbyID: String?
        defer {
            let kept = standbyID
            Task { for p in prepared where p.id != kept { await p.prepared?.close() } }
        }
        let gathered = ms(since: started)
        let answer = PeerOffer(identityKey: configuration.identity.publicKey.rawRepresentation,
                               candidates: prepared.flatMap { $0.prepared?.candidates ?? [] },
                               strategies: configuration.strategies.map(\.id))
        try await intro.accept(answer: answer)
        let introduced = ms(since: started)
        let identity = configuration.identity
        let raced = try await race(prepared, local: answer, remote: intro.offer, context: context, started: started) { transport in
            (try await SecureSessionDriver.respond(over: transport, identity: identity), [])
        }
        let phases = ConnectionPhases(gatheredMs: gathered, introducedMs: introduced, securedMs: ms(since: started))
        let connection = try await finishCamera(raced, access: access, admitted: admitted, requestID: intro.requestID,
                                                started: started, phases: phases, upgrade: pathUpgrade(context))
        standbyID = keepStandby(for: connection, prepared, remote: intro.offer, context: context)
        return connection
    }

    private func finishCamera(_ raced: RaceResult, access: SharedAccess, admitted: (viewer: Curve25519.Signing.PublicKey, grant: AccessGrant)?,
                              requestID: String, started: ContinuousClock.Instant, phases: ConnectionPhases,
                              upgrade: PathUpgrade) async throws -> PeerConnection {
        let transport = raced.transport
        var channel = SecureDatagramChannel(send: raced.session.send, receive: raced.session.receive)
        let start = channel
        let (hello, helloFrame, opened): (SessionHello, [UInt8], SecureDatagramChannel) = try await withDeadline(Self.accessTimeout) {
            var ch = start
            while true {
                let frame = try await transport.receive()
                guard frame.first == PeerWire.sealed, let plain = try? ch.open(Array(frame.dropFirst())),
                      plain.first == SessionMessageType.hello.rawValue,
                      let h = try? JSONDecoder().decode(SessionHello.self, from: Data(plain.dropFirst())) else { continue }
                return (h, frame, ch)
            }
        }
        channel = opened
        let source = transport.remoteAddress.map(SourceAddressKey.init) ?? .unidentified
        let viewer = raced.session.peerIdentity
        let verdict: Result<AccessGrant, AccessControlError>
        if let admitted, admitted.viewer.rawRepresentation == viewer.rawRepresentation {
            verdict = .success(admitted.grant)
        } else {
            verdict = await access.check(hello.credential, viewer: viewer, source: source)
        }
        switch verdict {
        case .failure(let e):
            let reason = Array("\(e.refusal.rawValue): \(e.detail)".utf8)
            if let packet = try? channel.seal([SessionMessageType.denied.rawValue] + reason) {
                try? await transport.send([PeerWire.sealed] + packet)
            }
            await transport.close()
            throw TraversalError(code: e.refusal.traversalCode, detail: e.detail, attempts: raced.attempts)
        case .success:
            let welcome = Array("ok".utf8)
            let packet = try channel.seal([SessionMessageType.welcome.rawValue] + welcome)
            try await transport.send([PeerWire.sealed] + packet)
            let report = ConnectionReport(path: raced.strategy, route: transport.pathDescription,
                                          setupMs: ms(since: started), phases: phases, requestID: requestID, attempts: raced.attempts,
                                          roundTripMs: raced.session.roundTrip?.milliseconds)
            configuration.logger.info("viewer admitted", metadata: ["path": "\(raced.strategy)", "requestID": "\(requestID)"])
            return PeerConnection(role: .camera, report: report, peerIdentity: raced.session.peerIdentity,
                                  transport: transport, channel: channel, replayOnHello: (helloFrame, welcome),
                                  keepalive: configuration.keepaliveInterval, upgrade: upgrade,
                                  addressChecks: configuration.addressChecks)
        }
    }

    // MARK: The race

    struct Prepared: Sendable {
        var id: String
        var prepared: (any PreparedStrategy)?
        /// Not gathered this time (see ``ConnectorConfiguration/gatherTimeout``).
        var skipped = false
        var error: String?
    }

    struct RaceResult {
        var strategy: String
        var transport: any PeerTransport
        var session: SecureSession
        var final: [UInt8]
        var attempts: [StrategyAttempt]
    }

    /// Gathers from every strategy at once, each within ``ConnectorConfiguration/gatherTimeout``,
    /// except those that ran out of it before (re-checked in the background instead); a strategy
    /// that fails, is late or is skipped is reported, not fatal.
    ///
    /// A late gathering is left running, not awaited (a strategy slow to notice cancellation must
    /// not hold up the answer); whatever it still gathers is closed.
    private func prepareAll(_ context: StrategyContext) async -> [Prepared] {
        let late = lateGatherers.withLock { $0 }
        let limit = configuration.gatherTimeout
        return await withTaskGroup(of: (Int, Prepared).self) { group in
            for (i, s) in configuration.strategies.enumerated() {
                let work = Task { try await s.prepare(context) }
                if late.contains(s.id) {
                    settleInBackground(s.id, work, within: limit)
                    group.addTask {
                        (i, Prepared(id: s.id, prepared: nil, skipped: true,
                                     error: "not waited for: its gathering timed out before (re-checking in the background)"))
                    }
                    continue
                }
                group.addTask {
                    switch await result(of: work, within: limit) {
                    case .success(let p)?:
                        return (i, Prepared(id: s.id, prepared: p))
                    case .failure(let error)?:
                        return (i, Prepared(id: s.id, prepared: nil, error: "\(error)"))
                    case nil:
                        self.settleInBackground(s.id, work, within: .zero)
                        return (i, Prepared(id: s.id, prepared: nil, error: "gathering timed out after \(limit)"))
                    }
                }
            }
            var out = [Prepared?](repeating: nil, count: configuration.strategies.count)
            for await (i, p) in group { out[i] = p }
            return out.compactMap { $0 }
        }
    }

    /// Gives a gathering nobody waits for `limit` more, records whether it finished in that time
    /// (then it is waited for again next time), cancels it if not, and closes what it gathered.
    private func settleInBackground(_ id: String, _ work: Task<any PreparedStrategy, any Error>, within limit: Duration) {
        Task {
            let settled = await result(of: work, within: limit)
            lateGatherers.withLock { set in
                if settled == nil { set.insert(id) } else { set.remove(id) }
            }
            if settled == nil { work.cancel() }
            if let p = try? await work.value { await p.close() }
        }
    }

    /// What one contender's task reports to the race's driver, or the driver's own timer.
    fileprivate enum RaceInput: Sendable {
        case won(Int, any PeerTransport, SecureSession, [UInt8])
        case failed(Int, String)
        case tick
    }

    /// Races the prepared strategies with their start delays; the first whose handshake completes
    /// wins (``RaceStateMachine`` decides; this drives it with tasks and a timer).
    ///
    /// The winner is returned the moment it is known; the losers are cancelled and cleaned up in
    /// the background (a TCP connect, for one, only notices cancellation when its attempt ends), so
    /// they never add to the setup time. Strategies still running then are reported `cancelled`.
    private func race(_ prepared: [Prepared], local: PeerOffer, remote: PeerOffer, context: StrategyContext, started: ContinuousClock.Instant,
                      handshake: @escaping @Sendable (any PeerTransport) async throws -> (SecureSession, [UInt8])) async throws -> RaceResult {
        var unable: [StrategyAttempt] = []
        var runnable: [(id: String, strategy: any PreparedStrategy)] = []
        for p in prepared {
            guard let strategy = p.prepared else {
                unable.append(StrategyAttempt(strategy: p.id, outcome: p.skipped ? .skipped : .failed, ms: 0, error: p.error))
                continue
            }
            guard remote.strategies.contains(p.id) else {
                unable.append(StrategyAttempt(strategy: p.id, outcome: .skipped, ms: 0, error: "peer has not enabled \(p.id)"))
                continue
            }
            runnable.append((p.id, strategy))
        }
        var machine = RaceStateMachine(
            contenders: runnable.map { .init(id: $0.id, startDelay: $0.strategy.startDelay(local: local, remote: remote)) },
            unable: unable, connectTimeout: configuration.connectTimeout, now: .now)
        let (inputs, sink) = AsyncStream.makeStream(of: RaceInput.self)
        let inbox = RaceInbox(sink)
        return try await withTaskCancellationHandler {
            var iterator = inputs.makeAsyncIterator()
            var connected: [Int: (any PeerTransport, SecureSession, [UInt8])] = [:]
            // Ends the race: no more inputs; late winners already buffered are closed.
            func finish() async {
                inbox.stop()
                while let late = await iterator.next() {
                    if case .won(_, let transport, _, _) = late { Task { await transport.close() } }
                }
            }
            var pending = machine.tick(now: .now)
            while true {
                for action in pending {
                    switch action {
                    case .start(let i):
                        let strategy = runnable[i].strategy
                        let task = Task {
                            let transport: any PeerTransport
                            do {
                                transport = try await strategy.connect(remote: remote, context: context)
                            } catch {
                                _ = inbox.deliver(.failed(i, Task.isCancelled ? "cancelled" : "\(error)"))
                                return
                            }
                            do {
                                let (session, final) = try await handshake(transport)
                                if !inbox.deliver(.won(i, transport, session, final)) { await transport.close() }
                            } catch {
                                await transport.close()
                                _ = inbox.deliver(.failed(i, Task.isCancelled ? "cancelled" : "\(error)"))
                            }
                        }
                        inbox.keep(task, at: i)
                    case .cancel(let indices):
                        for i in indices { inbox.cancel(i) }
                    case .close(let i):
                        if let (transport, _, _) = connected.removeValue(forKey: i) { await transport.close() }
                    case .won(let i, let attempts):
                        guard let (transport, session, final) = connected.removeValue(forKey: i) else { continue }
                        await finish()
                        for (late, _, _) in connected.values { await late.close() }
                        return RaceResult(strategy: runnable[i].id, transport: transport, session: session, final: final, attempts: attempts)
                    case .exhausted(let attempts):
                        await finish()
                        configuration.logger.notice("no path", metadata: ["attempts": "\(attempts.map { "\($0.strategy)=\($0.outcome.rawValue)" })"])
                        throw TraversalError(code: .noPath, detail: "no strategy reached the peer: " +
                                             attempts.map { "\($0.strategy): \($0.error ?? $0.outcome.rawValue)" }.joined(separator: "; "),
                                             attempts: attempts)
                    }
                }
                // Wake at the machine's next deadline, or at a contender's end, whichever comes first.
                let timer: Task<Void, Never>? = machine.nextDeadline.map { due in
                    Task {
                        guard (try? await Task.sleep(until: due, clock: .continuous)) != nil else { return }
                        _ = inbox.deliver(.tick)
                    }
                }
                inbox.cancel(RaceInbox.timerSlot)
                if let timer { inbox.keep(timer, at: RaceInbox.timerSlot) }
                guard let input = await iterator.next() else {
                    await finish()
                    throw CancellationError()
                }
                switch input {
                case .tick:
                    pending = machine.tick(now: .now)
                case .failed(let i, let error):
                    pending = machine.tick(now: .now) + machine.failed(i, error: error, now: .now)
                case .won(let i, let transport, let session, let final):
                    connected[i] = (transport, session, final)
                    pending = machine.tick(now: .now) + machine.succeeded(i, path: transport.pathDescription, now: .now)
                }
            }
        } onCancel: {
            inbox.stop()
        }
    }
}

/// Where a race's contender tasks deliver their ends to its driver, and the tasks it may cancel.
private final class RaceInbox: Sendable {
    /// The slot of the driver's timer among the tasks.
    static let timerSlot = -1
    private let sink: AsyncStream<Connector.RaceInput>.Continuation
    /// Open while the driver reads; a success delivered after it closed is closed by its own task.
    private let open = Mutex(true)
    private let tasks = Mutex<[Int: Task<Void, Never>]>([:])

    init(_ sink: AsyncStream<Connector.RaceInput>.Continuation) { self.sink = sink }

    /// Hands `input` to the driver; false once the race has ended.
    func deliver(_ input: Connector.RaceInput) -> Bool {
        open.withLock { isOpen in
            if isOpen { sink.yield(input) }
            return isOpen
        }
    }

    /// Keeps `task` in `slot` to cancel it later.
    func keep(_ task: Task<Void, Never>, at slot: Int) { tasks.withLock { $0[slot] = task } }

    /// Cancels the task in `slot`, if any.
    func cancel(_ slot: Int) { tasks.withLock { $0.removeValue(forKey: slot) }?.cancel() }

    /// Ends the race: takes no more inputs and cancels every task.
    func stop() {
        open.withLock { isOpen in
            isOpen = false
            sink.finish()
        }
        for task in tasks.withLock({ t in defer { t = [:] }; return Array(t.values) }) { task.cancel() }
    }
}

/// The result of `work`, a slow blocking computation (scrypt), run on a global dispatch queue so
/// the cooperative pool's few threads stay free for the race and for other viewers.
func offCooperativePool(_ work: @escaping @Sendable () -> Bool) async -> Bool {
    await withCheckedContinuation { done in
        DispatchQueue.global(qos: .userInitiated).async { done.resume(returning: work()) }
    }
}

/// The camera's access controller, shared by every concurrent introduction, and the attempts waiting
/// for a password check slot (woken in order as checks finish).
final class SharedAccess: Sendable {
    private struct State {
        var controller: AccessController
        var waiters: [CheckedContinuation<Void, Never>] = []
        /// Slots handed on before their waiter got round to waiting.
        var earlyHandoffs = 0
    }

    private let state: Mutex<State>

    init(_ controller: AccessController) {
        self.state = Mutex(State(controller: controller))
    }

    /// The verdict on `credential` presented by `viewer` from `source`: a paired key at once; a
    /// password under ``PasswordAttemptLimits`` (waiting for a check slot if need be), the
    /// deliberately slow check outside the lock and off the cooperative pool, so a guess never
    /// delays a paired viewer or another's admission.
    func check(_ credential: AccessCredential, viewer: Curve25519.Signing.PublicKey,
               source: SourceAddressKey) async -> Result<AccessGrant, AccessControlError> {
        switch credential {
        case .pairedKey:
            return withController { $0.pairedKeyGrant(for: viewer) }
        case .password(let password):
            var admission = withController { $0.admitPasswordCheck(from: source, now: .now) }
            var holdsSlot = false
            if case .check = admission { holdsSlot = true }
            if case .wait = admission {
                await waitForCheckSlot()
                holdsSlot = true
                admission = withController { $0.resumeWaitingCheck(from: source, now: .now) }
            }
            defer { if holdsSlot { releaseCheckSlot() } }
            switch admission {
            case .refused(let error):
                return .failure(error)
            case .wait:
                return .failure(AccessControlError(code: .rateLimited, detail: "busy checking other passwords"))
            case .check(let verifier):
                let matched = await offCooperativePool { verifier.verify(password) }
                return withController { $0.finishPasswordCheck(from: source, matched: matched, now: .now) }
            }
        }
    }

    /// Runs `body` on the controller under the lock.
    func withController<R: Sendable>(_ body: (inout AccessController) -> R) -> R {
        state.withLock { body(&$0.controller) }
    }

    /// Returns once a finished check hands its slot to this attempt (after ``AccessController/PasswordAdmission/wait``).
    func waitForCheckSlot() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let handedAlready = state.withLock { s -> Bool in
                if s.earlyHandoffs > 0 {
                    s.earlyHandoffs -= 1
                    return true
                }
                s.waiters.append(waiter)
                return false
            }
            if handedAlready { waiter.resume() }
        }
    }

    /// Gives a check slot back, waking the first waiting attempt if it goes to one.
    func releaseCheckSlot() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard s.controller.releaseCheckSlot() else { return nil }
            guard !s.waiters.isEmpty else {
                s.earlyHandoffs += 1
                return nil
            }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}

extension StrategyContext {
    /// This context for one introduction: a session token derived from its request id, and its relay
    /// grant with the way to renew it.
    func with(requestID: String, relay: RelayGrant?,
              renew: @escaping @Sendable (RelayGrant) async throws -> RelayGrant) -> StrategyContext {
        var c = self
        c.sessionToken = Array(SHA256.hash(data: Array("trav/session/\(requestID)".utf8)).prefix(8))
        c.relay = relay
        c.renewRelay = relay == nil ? nil : renew
        return c
    }
}

/// Milliseconds since `start`.
func ms(since start: ContinuousClock.Instant) -> Double {
    (ContinuousClock.now - start).milliseconds
}

extension Duration {
    /// This duration in (fractional) milliseconds, as reports print it.
    public var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}

/// Why a deadline passed.
/// What ``withDeadline(_:_:)`` throws when its limit passes first.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    /// The limit that passed.
    public var limit: Duration
    /// `timed out after …`.
    public var description: String { "timed out after \(limit)" }
}

/// The result of `task` if it ends within `limit`, else `nil`; the task is neither awaited past
/// `limit` nor cancelled.
func result<T: Sendable>(of task: Task<T, any Error>, within limit: Duration) async -> Result<T, any Error>? {
    let gate = ResumeOnce<Result<T, any Error>?>()
    return await withCheckedContinuation { continuation in
        gate.install(continuation)
        let timer = Task {
            try? await Task.sleep(for: max(limit, .zero))
            gate.resume(nil)
        }
        Task {
            let r: Result<T, any Error>
            do { r = .success(try await task.value) } catch { r = .failure(error) }
            gate.resume(r)
            timer.cancel()
        }
    }
}

/// A continuation resumed by whichever caller comes first; later calls do nothing.
final class ResumeOnce<Value: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<Value, Never>?>(nil)

    func install(_ c: CheckedContinuation<Value, Never>) {
        continuation.withLock { $0 = c }
    }

    func resume(_ value: Value) {
        continuation.withLock { c in
            c?.resume(returning: value)
            c = nil
        }
    }
}

/// Runs `body`, cancelling it and throwing ``DeadlineExceeded`` when `limit` passes first.
public func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: max(limit, .zero))
            throw DeadlineExceeded(limit: limit)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
