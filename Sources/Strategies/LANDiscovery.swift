import Crypto
import Foundation
import Logging
import SourceLimits
import STUNLite
import Synchronization
import Traversal

#if canImport(Glibc)
import Glibc
#endif

/// Finds a camera on the local network without any cloud: the viewer broadcasts "where is UID X?"
/// with its offer; the camera with that UID answers with its own, and both start `direct-lan` at once.
///
/// ```
/// viewer ── find{deviceID, requestID, offer} ──► broadcast :5350 ──► camera (only the one with that UID answers)
///        ◄──── here{requestID, answer, signature} ── unicast ──────┘
/// ```
/// The camera signs each `here` with its identity key over the viewer's fresh request ID and the
/// answer (``hereSignedData(deviceID:requestID:answer:)``), so an impostor on the LAN that replays
/// the camera's public key (or an old answer) is ignored like one with a wrong key, and the viewer
/// keeps waiting for the camera and for its other introducers. The key is checked against the UID,
/// and the secure handshake on the path proves it again.
public enum LANDiscovery {
    /// The default UDP port cameras listen on for discovery.
    public static let defaultPort: UInt16 = 5350
    /// Largest discovery datagram read or sent; an offer with `PeerOffer/maxCandidates` fits.
    public static let maxDatagram = 16 * 1024
    /// Bytes read per datagram: one more than ``maxDatagram``, so a longer (truncated) one is recognised and dropped.
    static let readSize = maxDatagram + 1
    /// How often the viewer repeats its broadcast while waiting.
    public static let repeatInterval: Duration = .milliseconds(200)
    /// Distinct keys a viewer checks against the UID per question (one scrypt each): answers with
    /// keys not behind the UID (an impostor on the LAN) are ignored, and past this many, so are
    /// answers with any new key, so a flood of them cannot keep the viewer busy.
    public static let maxKeysChecked = 4
    /// Introductions a camera handles at once from the LAN; more are ignored until one ends.
    public static let maxConcurrentIntroductions = 8
    /// A camera answers at most one `find` per source (IPv4 address or IPv6 /64) per this interval:
    /// a `find`'s source is not proven (UDP, spoofable), so a flood of them must not aim answers and
    /// probes at one victim. A viewer repeats its `find` every ``repeatInterval``, so a lost answer costs it one interval.
    public static let findInterval: Duration = .seconds(1)
    /// The per-source limit on `find`s a camera answers: one per ``findInterval``.
    public static var defaultFindRateLimit: TokenBucketRateLimiter<SourceAddressKey> {
        TokenBucketRateLimiter(capacity: 1, refillInterval: findInterval)
    }
    /// Domain separation of the `here` signature.
    public static let hereSignatureDomain = "trav/lan-here/v1"

    /// What a camera signs in its `here`: `domain ‖ 0 ‖ deviceID ‖ 0 ‖ requestID ‖ 0 ‖ SHA-256(answer as
    /// JSON with sorted keys)`. The request ID is the viewer's, fresh per question, so a signature
    /// cannot be replayed to another viewer or question, and the digest pins the answer's candidates.
    public static func hereSignedData(deviceID: String, requestID: String, answer: PeerOffer) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let digest = SHA256.hash(data: try encoder.encode(answer))
        var data = Data((hereSignatureDomain + "\u{0}" + deviceID + "\u{0}" + requestID + "\u{0}").utf8)
        data.append(contentsOf: digest)
        return data
    }

    /// Whether `here` is signed by the key it announces, for the question `requestID` about `device`.
    static func isSigned(_ here: Message, for device: DeviceID, requestID: String) -> Bool {
        guard let text = here.signature, let signature = Data(base64Encoded: text), signature.count == 64,
              let key = try? Curve25519.Signing.PublicKey(rawRepresentation: here.offer.identityKey), !key.hasSmallOrder,
              let signed = try? hereSignedData(deviceID: device.description, requestID: requestID, answer: here.offer)
        else { return false }
        return key.isValidSignature(signature, for: signed)
    }

    /// A discovery datagram: `find` (viewer → LAN) or `here` (camera → viewer), JSON.
    ///
    /// Internal to discovery; `@_spi(Fuzzing)` exposes it to the fuzz targets only.
    @_spi(Fuzzing) public struct Message: Codable, Equatable, Sendable {
        /// Format version.
        @_spi(Fuzzing) public var v: Int = 1
        /// `find` or `here`.
        @_spi(Fuzzing) public var type: String
        /// The UID asked for (`find` only).
        @_spi(Fuzzing) public var deviceID: String?
        /// Pairs a `here` with its `find`.
        @_spi(Fuzzing) public var requestID: String
        /// The sender's offer.
        @_spi(Fuzzing) public var offer: PeerOffer
        /// `here` only: the camera's Ed25519 signature (base64) of ``LANDiscovery/hereSignedData(deviceID:requestID:answer:)``.
        @_spi(Fuzzing) public var signature: String?

        /// A message with these fields.
        @_spi(Fuzzing) public init(type: String, deviceID: String? = nil, requestID: String, offer: PeerOffer, signature: String? = nil) {
            self.type = type
            self.deviceID = deviceID
            self.requestID = requestID
            self.offer = offer
            self.signature = signature
        }

        /// Parses a datagram from the LAN: `nil` unless it fits ``LANDiscovery/maxDatagram``, is JSON of
        /// this shape with this `type`, and its offer has at most `PeerOffer/maxCandidates` candidates.
        @_spi(Fuzzing) public static func decode(_ bytes: [UInt8], type: String) -> Message? {
            guard bytes.count <= LANDiscovery.maxDatagram, let m = try? JSONDecoder().decode(Message.self, from: Data(bytes)),
                  m.type == type, m.offer.candidates.count <= PeerOffer.maxCandidates else { return nil }
            return m
        }
    }

    /// The broadcast addresses of this host's IPv4 interfaces, plus 255.255.255.255, on `port`.
    public static func broadcastDestinations(port: UInt16 = defaultPort) -> [TransportAddress] {
        var out: [TransportAddress] = [TransportAddress(ip: .v4(0xFFFF_FFFF), port: port)]
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return out }
        defer { freeifaddrs(head) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let p = cursor {
            defer { cursor = p.pointee.ifa_next }
            guard p.pointee.ifa_flags & UInt32(IFF_BROADCAST) != 0, let sa = p.pointee.ifa_addr,
                  sa.pointee.sa_family == sa_family_t(AF_INET), let mask = p.pointee.ifa_netmask else { continue }
            // The subnet's directed broadcast from address and mask (an interface may have no `brd` set).
            let address = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
            let netmask = mask.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
            guard netmask != 0, ~netmask != 0 else { continue }
            let ip = IPAddress.v4(address | ~netmask)
            let a = TransportAddress(ip: ip, port: port)
            if !out.contains(a) { out.append(a) }
        }
        return out
    }

    /// The viewer's side: a `ViewerSignalling` that asks the LAN instead of a cloud.
    public struct Finder: ViewerSignalling {
        /// Where to send the question (broadcast addresses, or a camera's unicast address in tests).
        public var destinations: [TransportAddress]
        /// How long to wait for an answer.
        public var timeout: Duration

        /// Creates a finder; by default every interface's broadcast address on the default port, waiting 3 s.
        public init(destinations: [TransportAddress] = LANDiscovery.broadcastDestinations(), timeout: Duration = .seconds(3)) {
            self.destinations = destinations
            self.timeout = timeout
        }

        /// Broadcasts the offer until the camera with that UID answers, or the timeout passes (`unavailable`).
        public func introduce(to device: DeviceID, offer: PeerOffer) async throws -> Introduction {
            let socket = try await STUNUDPClient.bind(broadcast: true, maxDatagramSize: LANDiscovery.readSize)
            defer { Task { await socket.close() } }
            // Fresh and unguessable: the camera's signature covers it, so no earlier answer fits this question.
            let requestID = "lan-" + UUID().uuidString.lowercased()
            let question = try JSONEncoder().encode(Message(type: "find", deviceID: device.description, requestID: requestID, offer: offer))
            let destinations = self.destinations
            let sender = Task {
                while !Task.isCancelled {
                    for d in destinations { try? await socket.send(Array(question), to: d) }
                    try? await Task.sleep(for: LANDiscovery.repeatInterval)
                }
            }
            defer { sender.cancel() }
            let timeout = self.timeout
            return try await withThrowingTaskGroup(of: Introduction.self) { group in
                group.addTask {
                    // Anyone on the LAN may answer: only an answer signed for this question by a key
                    // behind the UID counts, so an impostor's answer (a wrong key, or the camera's key
                    // replayed without its signature) leaves the question open for the camera (or for
                    // another introducer). The signature is checked first: it costs no scrypt.
                    var rejected: Set<Data> = []
                    for await (_, bytes) in socket.otherDatagrams {
                        guard let m = Message.decode(bytes, type: "here"), m.requestID == requestID,
                              LANDiscovery.isSigned(m, for: device, requestID: requestID),
                              !rejected.contains(m.offer.identityKey), rejected.count < LANDiscovery.maxKeysChecked else { continue }
                        guard device.matches(rawPublicKey: m.offer.identityKey) else {
                            rejected.insert(m.offer.identityKey)
                            continue
                        }
                        return Introduction(requestID: requestID, answer: m.offer)
                    }
                    throw CancellationError()
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw TraversalError(code: .unavailable, detail: "no camera with UID \(device) answered on the LAN")
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        }
    }

    /// The camera's side: listens for questions about its UID and turns each into an introduction.
    public final class Responder: Sendable {
        /// The introductions; finishes when ``stop()`` is called.
        public let introductions: AsyncStream<any IncomingIntroduction>
        /// The address it listens on.
        public let localAddress: TransportAddress
        private let socket: STUNUDPClient
        private let task: Mutex<Task<Void, Never>?>

        /// Listens on `port` (all addresses) for questions about `device`, answering each source at most
        /// as often as `findRateLimit` allows (by default once per ``LANDiscovery/findInterval``); each
        /// answer is signed by `identity` (the key behind `device`).
        public init(device: DeviceID, identity: DeviceIdentity, port: UInt16 = LANDiscovery.defaultPort,
                    findRateLimit: TokenBucketRateLimiter<SourceAddressKey> = LANDiscovery.defaultFindRateLimit,
                    logger: Logger = Logger(label: "trav.lan-discovery")) async throws {
            let socket = try await STUNUDPClient.bind(to: TransportAddress(ip: .v4(0), port: port), reuseAddress: true,
                                                      maxDatagramSize: LANDiscovery.readSize)
            self.socket = socket
            self.localAddress = socket.localAddress
            let (stream, sink) = AsyncStream.makeStream(of: (any IncomingIntroduction).self,
                                                        bufferingPolicy: .bufferingNewest(LANDiscovery.maxConcurrentIntroductions))
            self.introductions = stream
            let expected = device.description
            self.task = Mutex(Task {
                let active = Mutex(Set<String>())
                var perSource = findRateLimit
                for await (source, bytes) in socket.otherDatagrams {
                    guard let m = Message.decode(bytes, type: "find"), m.deviceID == expected else { continue }
                    let admitted = active.withLock { a -> Bool in
                        guard !a.contains(m.requestID), a.count < LANDiscovery.maxConcurrentIntroductions else { return false }
                        a.insert(m.requestID)
                        return true
                    }
                    guard admitted else { continue }
                    guard perSource.admit(SourceAddressKey(source.ip), now: .now) else {
                        active.withLock { _ = $0.remove(m.requestID) }
                        continue
                    }
                    logger.debug("lan introduction", metadata: ["requestID": "\(m.requestID)", "from": "\(source)"])
                    sink.yield(LANIntroduction(requestID: m.requestID, deviceID: expected, offer: m.offer, identity: identity,
                                               socket: socket, viewer: source,
                                               done: { active.withLock { _ = $0.remove(m.requestID) } }))
                }
                sink.finish()
            })
        }

        /// Stops listening.
        public func stop() async {
            task.withLock { $0?.cancel() }
            await socket.close()
        }
    }

    struct LANIntroduction: IncomingIntroduction {
        let requestID: String
        let deviceID: String
        let offer: PeerOffer
        let identity: DeviceIdentity
        var relay: RelayGrant? { nil }
        let socket: STUNUDPClient
        let viewer: TransportAddress
        let done: @Sendable () -> Void

        func accept(answer: PeerOffer) async throws {
            defer { done() }
            let signature = try identity.signature(
                for: LANDiscovery.hereSignedData(deviceID: deviceID, requestID: requestID, answer: answer))
            let bytes = try JSONEncoder().encode(Message(
                type: "here", requestID: requestID, offer: answer, signature: signature.base64EncodedString()))
            try await socket.send(Array(bytes), to: viewer)
        }

        func decline() async { done() }
    }
}

/// Asks several introducers (e.g. the LAN and the cloud); the first answer wins and the others are
/// cancelled (happy eyeballs for signalling).
///
/// All are asked at once by default: the introduction is on every connection's critical path, and
/// a path found through any introducer is raced the same way (a cloud introduction carries the
/// camera's LAN addresses too). A non-zero `stagger` prefers earlier introducers at that much cost
/// whenever they cannot answer.
public struct FirstAnswering: ViewerSignalling {
    /// The introducers in order of preference.
    public var introducers: [any ViewerSignalling]
    /// Delay before asking the next one.
    public var stagger: Duration

    /// Creates the combination; `stagger` zero asks every introducer at once.
    public init(_ introducers: [any ViewerSignalling], stagger: Duration = .zero) {
        self.introducers = introducers
        self.stagger = stagger
    }

    /// The grant renewed by the first introducer that can (a cloud; the LAN issues no grants).
    public func renewRelay(_ grant: RelayGrant) async throws -> RelayGrant {
        var last: any Error = CloudError(code: .badRequest, detail: "no introducer renews relay grants")
        for introducer in introducers {
            do {
                return try await introducer.renewRelay(grant)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                last = error
            }
        }
        throw last
    }

    /// The first successful introduction; if all fail, the most telling error: one that is not a
    /// plain "unavailable" (a rate limit or a cloud failure says more than a silent LAN), else the first.
    public func introduce(to device: DeviceID, offer: PeerOffer) async throws -> Introduction {
        try await first { try await $0.introduce(to: device, offer: offer) }
    }

    /// The first successful introduction, each introducer answering its challenge with `prover`.
    public func introduce(to device: DeviceID, offer: PeerOffer, prover: AccessProver) async throws -> Introduction {
        try await first { try await $0.introduce(to: device, offer: offer, prover: prover) }
    }

    private func first(_ ask: @escaping @Sendable (any ViewerSignalling) async throws -> Introduction) async throws -> Introduction {
        try await withThrowingTaskGroup(of: Introduction?.self) { group in
            for (i, introducer) in introducers.enumerated() {
                group.addTask {
                    try await Task.sleep(for: stagger * i)
                    return try await ask(introducer)
                }
            }
            var errors: [any Error] = []
            while let next = await group.nextResult() {
                switch next {
                case .success(let intro?):
                    group.cancelAll()
                    return intro
                case .success(nil):
                    continue
                case .failure(let e):
                    errors.append(e)
                }
            }
            throw errors.first { ($0 as? TraversalError)?.code != .unavailable } ?? errors.first
                ?? TraversalError(code: .unavailable, detail: "no introducer answered")
        }
    }
}
