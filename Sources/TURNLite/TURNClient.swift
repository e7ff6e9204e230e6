import NIOCore
import NIOPosix
import NIOSSL
import STUNLite

/// The result of a successful Allocate (RFC 8656 §7.3).
public struct TURNAllocation: Sendable, Hashable {
    /// The relayed transport address peers send to (XOR-RELAYED-ADDRESS).
    public var relayed: TransportAddress
    /// The client's server-reflexive address (XOR-MAPPED-ADDRESS), if the server sent one.
    public var mapped: TransportAddress?
    /// Seconds until the allocation expires unless refreshed (LIFETIME).
    public var lifetime: UInt32
}

/// Data a peer sent through the relay, from a Data indication or ChannelData (RFC 8656 §11.4, §12.7).
public struct TURNPeerData: Sendable, Hashable {
    /// The peer's transport address.
    public var peer: TransportAddress
    /// The application data.
    public var payload: [UInt8]
}

/// A TURN client over UDP, TCP or TLS: allocate, refresh, permissions, channels, and data (RFC 8656 §7–12).
///
/// ```
///  TURNClient                          server
///    | Allocate -------------------------->|
///    |<------------------- 401 REALM NONCE |   (RFC 8489 §9.2.4)
///    | Allocate USERNAME REALM NONCE MI -->|
///    |<-------- success XOR-RELAYED-ADDRESS|   (a 438 refreshes the nonce and retries)
///    | CreatePermission / ChannelBind ---->|
///    | ChannelData or Send indication ---->|-----> peer
/// ```
public actor TURNClient {
    /// How the client reaches the server (RFC 8656 §3.1).
    public enum Transport: Sendable {
        /// UDP, with RFC 8489 retransmissions.
        case udp
        /// TCP, framed by STUN lengths and padded ChannelData (RFC 8656 §12.5).
        case tcp
        /// TLS over TCP with the given client configuration and server name (RFC 8656 §3.1); offers ALPN
        /// `stun.turn` (RFC 7443 §2) unless the configuration lists protocols itself.
        case tls(TLSConfiguration, serverHostname: String?)
    }

    /// What the client needs to know (RFC 8656 §7.1).
    public struct Configuration: Sendable {
        /// The server's transport address.
        public var server: TransportAddress
        /// UDP, TCP or TLS.
        public var transport: Transport
        /// The long-term user name.
        public var username: String
        /// The long-term password.
        public var password: String
        /// LIFETIME to ask for; `nil` takes the server's default (RFC 8656 §7.1).
        public var requestedLifetime: UInt32?
        /// The relayed address family to ask for (RFC 8656 §7.1 REQUESTED-ADDRESS-FAMILY).
        public var family: TURNAddressFamily
        /// Retransmission over UDP; `reliableTimeout` bounds requests over TCP/TLS (RFC 8489 §6.2).
        public var retransmission: STUNRetransmissionPolicy
        /// The local address to send from (a multi-homed host's chosen interface); `nil`: the wildcard, the kernel picks.
        public var localIP: IPAddress?

        /// Creates a configuration.
        public init(server: TransportAddress, transport: Transport = .udp, username: String, password: String,
                    requestedLifetime: UInt32? = nil, family: TURNAddressFamily = .ipv4,
                    retransmission: STUNRetransmissionPolicy = .rfc8489) {
            self.server = server
            self.transport = transport
            self.username = username
            self.password = password
            self.requestedLifetime = requestedLifetime
            self.family = family
            self.retransmission = retransmission
        }
    }

    /// Nonce challenges (401 then 438s) one request goes through before failing (RFC 8489 §9.2.5).
    public static let maxChallengeRounds = 3
    /// Peer datagrams buffered in ``received`` before the oldest are dropped.
    public static let receiveBufferLimit = 1024

    /// The configuration.
    public let configuration: Configuration
    /// The local address of the client's socket.
    public nonisolated let localAddress: TransportAddress
    /// Data from peers, in arrival order.
    public nonisolated let received: AsyncStream<TURNPeerData>
    private let channel: Channel
    private let core: NIOLoopBound<TURNClientCore>
    private var credentials: TURNClientCredentials
    private var allocation: TURNAllocation?
    private var channels: [TransportAddress: UInt16] = [:]
    private var nextChannel: UInt16 = ChannelNumber.validRange.lowerBound

    private init(configuration: Configuration, channel: Channel, core: NIOLoopBound<TURNClientCore>,
                 local: TransportAddress, received: AsyncStream<TURNPeerData>) {
        self.configuration = configuration
        self.credentials = TURNClientCredentials(username: configuration.username, password: configuration.password)
        self.channel = channel
        self.core = core
        self.localAddress = local
        self.received = received
    }

    /// Opens the socket or connection to the server (no request is sent yet).
    public static func connect(_ configuration: Configuration,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> TURNClient {
        let (stream, continuation) = AsyncStream.makeStream(of: TURNPeerData.self,
                                                            bufferingPolicy: .bufferingNewest(receiveBufferLimit))
        let loop = group.next()
        let server = configuration.server
        let reliable: Bool
        if case .udp = configuration.transport { reliable = false } else { reliable = true }
        let core = try await loop.submit {
            NIOLoopBound(TURNClientCore(server: server, reliable: reliable, policy: configuration.retransmission,
                                        received: continuation, eventLoop: loop), eventLoop: loop)
        }.get()
        let channel: Channel
        do {
            switch configuration.transport {
            case .udp:
                let any: IPAddress = configuration.localIP ?? (server.ip.isIPv4 ? .v4(0) : .v6(high: 0, low: 0))
                channel = try await DatagramBootstrap(group: loop)
                    .channelInitializer { ch in
                        ch.eventLoop.makeCompletedFuture {
                            try ch.pipeline.syncOperations.addHandler(TURNClientDatagramHandler(core: core.value))
                        }
                    }
                    .bind(to: TransportAddress(ip: any, port: 0).socketAddress).get()
            case .tcp, .tls:
                var ssl: (NIOSSLContext, String?)?
                if case .tls(let tls, let name) = configuration.transport {
                    ssl = (try NIOSSLContext(configuration: TURNTLS.clientConfiguration(tls)), name)
                }
                let tlsSettings = ssl
                var bootstrap = ClientBootstrap(group: loop)
                if let ip = configuration.localIP { bootstrap = bootstrap.bind(to: TransportAddress(ip: ip, port: 0).socketAddress) }
                channel = try await bootstrap
                    .connectTimeout(configuration.retransmission.reliableTimeout)
                    .channelInitializer { ch in
                        ch.eventLoop.makeCompletedFuture {
                            let sync = ch.pipeline.syncOperations
                            if let tls = tlsSettings {
                                try sync.addHandler(NIOSSLClientHandler(context: tls.0, serverHostname: tls.1))
                            }
                            try sync.addHandlers(ByteToMessageHandler(STUNFrameDecoder(allowsChannelData: true)),
                                                 TURNClientStreamHandler(core: core.value))
                        }
                    }
                    .connect(to: server.socketAddress).get()
            }
        } catch {
            continuation.finish()
            throw TURNError(.socket, detail: "\(server): \(error)")
        }
        try await loop.submit { core.value.attach(channel) }.get()
        guard let local = channel.localAddress.flatMap(TransportAddress.init) else {
            try? await channel.close()
            throw TURNError(.socket, detail: "no local address")
        }
        return TURNClient(configuration: configuration, channel: channel, core: core, local: local, received: stream)
    }

    /// Connects and allocates in one step (RFC 8656 §7.1).
    public static func allocate(_ configuration: Configuration,
                                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> (TURNClient, TURNAllocation) {
        let client = try await connect(configuration, group: group)
        do {
            return (client, try await client.allocate())
        } catch {
            await client.close()
            throw error
        }
    }

    /// The current allocation, if any.
    public var currentAllocation: TURNAllocation? { allocation }

    /// Creates the allocation, answering the server's 401/438 challenges (RFC 8656 §7.1, §7.3; RFC 8489 §9.2).
    public func allocate() async throws -> TURNAllocation {
        let family = configuration.family
        let lifetime = configuration.requestedLifetime
        let response = try await transact(.allocate) { m in
            m.append(RequestedTransport.udp)
            if family != .ipv4 { m.append(RequestedAddressFamily(family)) }
            if let lifetime { m.append(Lifetime(seconds: lifetime)) }
        }
        guard let relayed = try? response.attribute(XORRelayedAddress.self) else {
            throw TURNError(.badResponse, detail: "Allocate success without XOR-RELAYED-ADDRESS")
        }
        let granted = (try? response.attribute(Lifetime.self))?.seconds ?? UInt32(TURNTimers.defaultAllocationLifetime)
        let a = TURNAllocation(relayed: relayed.address, mapped: (try? response.attribute(XORMappedAddress.self))?.address,
                               lifetime: granted)
        allocation = a
        return a
    }

    /// Refreshes the allocation; `0` deletes it. Returns the lifetime granted (RFC 8656 §8).
    @discardableResult
    public func refresh(lifetime: UInt32? = nil) async throws -> UInt32 {
        guard allocation != nil else { throw TURNError(.noAllocation) }
        let response: STUNMessage
        do {
            response = try await transact(.refresh) { m in if let lifetime { m.append(Lifetime(seconds: lifetime)) } }
        } catch let e as TURNError where lifetime == 0 && e.errorCode?.code == 437 {
            // A retransmitted delete finds the allocation gone: that is success (RFC 8656 §8.3).
            allocation = nil
            return 0
        }
        let granted = (try? response.attribute(Lifetime.self))?.seconds ?? 0
        if granted == 0 { allocation = nil } else { allocation?.lifetime = granted }
        return granted
    }

    /// Signs later requests with another user name and password, e.g. a renewed TURN REST grant for the
    /// same allocation (the relay must count both as one user, as ``TURNCredentials/user(of:)`` does).
    public func renewCredentials(username: String, password: String) {
        credentials = credentials.renewed(username: username, password: password)
    }

    /// Installs or refreshes permissions for the peers' IP addresses (RFC 8656 §10.1).
    public func createPermission(for peers: [TransportAddress]) async throws {
        guard allocation != nil else { throw TURNError(.noAllocation) }
        _ = try await transact(.createPermission) { m in for p in peers { m.append(XORPeerAddress(p)) } }
    }

    /// Binds (or refreshes) a channel to `peer`, which also installs a permission; returns the number (RFC 8656 §12.1).
    @discardableResult
    public func bindChannel(to peer: TransportAddress) async throws -> UInt16 {
        guard allocation != nil else { throw TURNError(.noAllocation) }
        let number: UInt16
        if let n = channels[peer] {
            number = n
        } else {
            guard ChannelNumber.validRange.contains(nextChannel) else {
                throw TURNError(.badResponse, detail: "all channel numbers are in use")
            }
            number = nextChannel
            nextChannel += 1
        }
        let core = self.core
        // Learn the mapping first, so ChannelData that races the response is understood.
        try await channel.eventLoop.submit { core.value.channelPeers[number] = peer }.get()
        _ = try await transact(.channelBind) { m in
            m.append(ChannelNumber(number))
            m.append(XORPeerAddress(peer))
        }
        channels[peer] = number
        return number
    }

    /// Sends data to a peer: ChannelData on a bound channel, else a Send indication (RFC 8656 §11.1, §12.1).
    public func send(_ payload: [UInt8], to peer: TransportAddress) async throws {
        let bytes: [UInt8]
        if let c = channels[peer] {
            bytes = ChannelData(channel: c, payload: payload).encode(padded: configuration.isStream)
        } else {
            bytes = TURNMessages.sendIndication(peer: peer, payload: payload)
        }
        let core = self.core
        try await channel.eventLoop.submit { core.value.write(bytes) }.get()
    }

    /// Writes `frames`, messages already framed for this transport (ChannelData padded over TCP/TLS,
    /// RFC 8656 §12.5), as they are and without waiting: for a sender that frames once and sends the same
    /// bytes many times. Returns `false`, writing nothing, while the connection's outbound buffer is past
    /// its high-water mark; throws a `closed` error once the socket or connection has closed.
    public nonisolated func sendFramed(_ frames: ByteBuffer) throws(TURNError) -> Bool {
        guard channel.isActive else { throw TURNError(.closed, detail: "connection to \(configuration.server) closed") }
        guard channel.isWritable else { return false }
        if configuration.isStream {
            channel.writeAndFlush(frames, promise: nil)
        } else {
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: configuration.server.socketAddress, data: frames), promise: nil)
        }
        return true
    }

    /// Deletes the allocation if there is one (best effort) and closes the socket.
    public func close() async {
        if allocation != nil { _ = try? await refresh(lifetime: 0) }
        try? await channel.close()
    }

    // MARK: Transactions

    /// Runs one authenticated request, answering 401 and 438 challenges (RFC 8489 §9.2.5, RFC 8656 §7.3).
    private func transact(_ method: STUNMethod, _ build: @Sendable (inout STUNMessage) -> Void) async throws -> STUNMessage {
        var transaction = TURNClientCredentials.Transaction()
        for _ in 0...Self.maxChallengeRounds {
            var m = STUNMessage(method: method, messageClass: .request)
            build(&m)
            let signingKey = credentials.sign(&m, in: &transaction)
            let bytes = m.encode(integrityKey: signingKey, fingerprint: true)
            let tid = m.transactionID
            let core = self.core
            let promise = channel.eventLoop.makePromise(of: STUNResponse.self)
            let response: STUNMessage
            do {
                response = try await withTaskCancellationHandler {
                    channel.eventLoop.execute { core.value.start(tid: tid, bytes: bytes, promise: promise) }
                    return try await promise.futureResult.get().message
                } onCancel: {
                    promise.fail(CancellationError())
                    channel.eventLoop.execute { core.value.forget(tid) }
                }
            } catch let error as TURNError {
                // An error response is an answer: a 401 or 438 is a challenge to sign the request again.
                guard error.code == .errorResponse, let answer = error.response else { throw error }
                response = answer
            }
            if let signingKey, response.hasIntegrity, !response.verifyMessageIntegrity(key: signingKey) {
                throw TURNError(.badResponse, detail: "response MESSAGE-INTEGRITY does not verify")
            }
            if response.messageClass == .successResponse { return response }
            try credentials.absorb(response, method: method, in: &transaction)
        }
        throw TURNError(.unauthenticated, detail: "too many challenges")
    }
}

extension TURNClient.Configuration {
    var isStream: Bool {
        if case .udp = transport { return false }
        return true
    }
}

/// The client's socket-side state: its transactions (STUNLite's ``STUNTransactionTable``), channel map
/// and inbound data; event loop only.
final class TURNClientCore {
    var channelPeers: [UInt16: TransportAddress] = [:]
    private let transactions: STUNTransactionTable
    private var channel: Channel?
    private var local = TransportAddress(ip: .v4(0), port: 0)
    private let server: TransportAddress
    private let serverSocket: SocketAddress
    private let reliable: Bool
    private let policy: STUNRetransmissionPolicy
    private let continuation: AsyncStream<TURNPeerData>.Continuation

    init(server: TransportAddress, reliable: Bool, policy: STUNRetransmissionPolicy,
         received: AsyncStream<TURNPeerData>.Continuation, eventLoop: any EventLoop) {
        self.server = server
        self.serverSocket = server.socketAddress
        self.reliable = reliable
        self.policy = policy
        self.continuation = received
        self.transactions = STUNTransactionTable(eventLoop: eventLoop)
    }

    func attach(_ channel: Channel) {
        self.channel = channel
        if let bound = channel.localAddress.flatMap(TransportAddress.init) { local = bound }
    }

    func write(_ bytes: [UInt8]) {
        guard let channel else { return }
        let buffer = channel.allocator.buffer(bytes: bytes)
        if reliable {
            channel.writeAndFlush(buffer, promise: nil)
        } else {
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: serverSocket, data: buffer), promise: nil)
        }
    }

    /// Runs one transaction: RFC 8489 retransmissions over UDP, Ti over TCP/TLS. An error response fails
    /// `promise` with `errorResponse` and the response attached.
    func start(tid: STUNTransactionID, bytes: [UInt8], promise: EventLoopPromise<STUNResponse>) {
        guard let channel, channel.isActive else {
            promise.fail(TURNError(.closed, detail: "socket closed"))
            return
        }
        transactions.start(tid, bytes: bytes, local: local, policy: policy, reliable: reliable, promise: promise) { [weak self] in
            self?.write($0)
        }
    }

    func forget(_ tid: STUNTransactionID) { transactions.forget(tid) }

    /// One datagram or stream frame from the server.
    func received(_ buffer: ByteBuffer) {
        let bytes = Array(buffer.readableBytesView)
        guard let first = bytes.first else { return }
        if ChannelData.looksLikeChannelData(first) {
            guard let frame = try? ChannelData.decode(bytes), let peer = channelPeers[frame.channel] else { return }
            continuation.yield(TURNPeerData(peer: peer, payload: frame.payload))
            return
        }
        guard let message = try? STUNMessage.decode(bytes), message.fingerprintValid != false else { return }
        switch message.messageClass {
        case .successResponse, .errorResponse:
            _ = transactions.complete(message, from: server)
        case .indication where message.method == .data:
            guard let peer = try? message.attribute(XORPeerAddress.self), let data = try? message.attribute(DataAttribute.self) else { return }
            continuation.yield(TURNPeerData(peer: peer.address, payload: data.bytes))
        default:
            return
        }
    }

    func closed() {
        transactions.failAll(TURNError(.closed, detail: "connection closed"))
        continuation.finish()
    }

    func fromServer(_ source: SocketAddress) -> Bool { TransportAddress(source) == server }
}

/// Feeds a UDP socket's datagrams from the server to the client core.
final class TURNClientDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let core: TURNClientCore
    init(core: TURNClientCore) { self.core = core }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard core.fromServer(envelope.remoteAddress) else { return }
        core.received(envelope.data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        core.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

/// Feeds a TCP or TLS connection's frames to the client core.
final class TURNClientStreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let core: TURNClientCore
    init(core: TURNClientCore) { self.core = core }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { core.received(unwrapInboundIn(data)) }

    func channelInactive(context: ChannelHandlerContext) {
        core.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}
