import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Rendezvous
@testable import Traversal

/// Test helper: a logger that only reports warnings and worse, so test output stays readable.
let quietLogger: Logger = {
    var logger = Logger(label: "trav.test")
    logger.logLevel = .warning
    return logger
}()

/// Test helper: a fresh temporary directory, removed by the caller.
func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "trav-cloud-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Test helper: a cloud on 127.0.0.1 (free ports, certificates in a temporary directory), stopped
/// and removed after `body`, also when it throws.
func withCloud<T>(
    directory: String? = nil, tlsPort: UInt16 = 0, relay: CloudService.RelayConfiguration? = nil,
    tuning: @escaping (inout RendezvousServer.Configuration) -> Void = { _ in },
    _ body: (CloudService, CloudEndpoint) async throws -> T
) async throws -> T {
    let dir = try directory ?? temporaryDirectory()
    defer { if directory == nil { try? FileManager.default.removeItem(atPath: dir) } }
    let cloud = try await CloudService.start(
        .init(listenIP: "127.0.0.1", dataDirectory: dir, stunPort: 0, tlsPort: tlsPort, relay: relay), tuning: tuning,
        logger: quietLogger)
    do {
        let result = try await body(cloud, try endpoint(of: cloud))
        await cloud.stop()
        return result
    } catch {
        await cloud.stop()
        throw error
    }
}

/// Test helper: the endpoint of a test cloud, pinning its CA.
func endpoint(of cloud: CloudService) throws -> CloudEndpoint {
    CloudEndpoint(
        host: "127.0.0.1", port: cloud.rendezvous.address.port,
        trust: .pinnedCA(try String(contentsOfFile: cloud.caPath!, encoding: .utf8)))
}

/// Test helper: a registered camera (depositing access keys under `accessDeposits`, if given), stopped after `body`,
/// also when it throws.
func withCamera<T>(
    _ identity: DeviceIdentity, _ endpoint: CloudEndpoint, accessDeposits: AccessDepositStock.Limits? = nil,
    _ body: (any CameraSignalling) async throws -> T
) async throws -> T {
    let camera = try await CloudClient.camera(identity: identity, endpoint: endpoint, logger: quietLogger, accessDeposits: accessDeposits)
    do {
        let result = try await body(camera)
        await camera.stop()
        return result
    } catch {
        await camera.stop()
        throw error
    }
}

/// Test helper: polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
func eventually(within timeout: Duration, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return await condition()
}

/// Test helper: an offer from `identity` with one host candidate.
func sampleOffer(_ identity: DeviceIdentity, address: String = "192.0.2.1:4000") -> PeerOffer {
    PeerOffer(
        identityKey: identity.publicKey.rawRepresentation,
        candidates: [Candidate(strategy: "direct-lan", kind: .host, address: address)], strategies: ["direct-lan"])
}

/// Test helper: a fresh viewer answer key (the private half) and its base64 public half for `introduce`.
func makeAnswerKey() -> (Curve25519.KeyAgreement.PrivateKey, String) {
    let key = Curve25519.KeyAgreement.PrivateKey()
    return (key, key.publicKey.rawRepresentation.base64EncodedString())
}

/// Test helper: the base64 public half of a fresh answer key, for introductions whose answer is not opened.
func sampleAnswerKey() -> String { makeAnswerKey().1 }

/// Test helper: a raw signalling connection speaking ``CloudMessage``s, offering `applicationProtocols`
/// (default: what the client offers), from `source` (an IP; default: any), closed after `body`.
func withRawConnection<T>(
    _ endpoint: CloudEndpoint, applicationProtocols: [String] = [CloudProtocol.alpnProtocol], from source: String? = nil,
    _ body: (_ channel: any Channel, _ inbound: inout NIOAsyncChannelInboundStream<CloudMessage>.AsyncIterator) async throws -> T
) async throws -> T {
    let local = try source.map { try SocketAddress(ipAddress: $0, port: 0) }
    let connection = try await CloudClient.connect(to: endpoint, applicationProtocols: applicationProtocols, from: local)
    return try await connection.executeThenClose { inbound in
        var iterator = inbound.makeAsyncIterator()
        return try await body(connection.channel, &iterator)
    }
}

/// Test helper: a client TLS context trusting only the CA `endpoint` pins.
func pinnedTLSContext(_ endpoint: CloudEndpoint) throws -> NIOSSLContext {
    guard case .pinnedCA(let pem) = endpoint.trust else { fatalError("tests pin the CA") }
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)))
    return try NIOSSLContext(configuration: tls)
}

/// Test helper: a TLS connection to the cloud carrying raw bytes, closed after `body`.
func withRawTLS<T>(
    _ endpoint: CloudEndpoint,
    _ body: (NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> T
) async throws -> T {
    let context = try pinnedTLSContext(endpoint)
    let connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: endpoint.host, port: Int(endpoint.port)) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    return try await connection.executeThenClose { inbound, outbound in try await body(inbound, outbound) }
}

/// Test helper: registers `identity` over a raw connection (answering the challenge as a camera does).
func rawRegister(
    _ identity: DeviceIdentity, claiming deviceID: DeviceID? = nil, endpoint: CloudEndpoint, channel: any Channel,
    inbound: inout NIOAsyncChannelInboundStream<CloudMessage>.AsyncIterator
) async throws -> CloudMessage? {
    let claimed = (deviceID ?? identity.deviceID).description
    try await channel.writeAndFlush(CloudMessage.register(
        deviceID: claimed, publicKey: identity.publicKey.rawRepresentation.base64EncodedString()))
    guard case .challenge(let nonceText)? = try await inbound.next() else { return nil }
    let nonce = Data(base64Encoded: nonceText)!
    let signature = try identity.signature(
        for: CloudProtocol.registrationMessage(nonce: nonce, deviceID: claimed, cloudName: endpoint.cloudName))
    try await channel.writeAndFlush(CloudMessage.prove(signature: signature.base64EncodedString()))
    return try await inbound.next()
}

extension IncomingIntroduction {
    /// What a camera that admits everyone does: takes the viewer's access proof without checking it, then answers.
    func acceptAnyViewer(answer: PeerOffer) async throws {
        _ = try await requestAccess()
        try await accept(answer: answer)
    }
}

/// Test helper: introduces to `device` over a raw connection, answers the camera's access challenge as
/// a viewer presenting `credential` does, and returns the reply to the proof (a `start`, or an error);
/// any other first reply is returned as it is.
func rawIntroduce(
    _ device: DeviceID, requestID: String, key: Curve25519.KeyAgreement.PrivateKey, credential: AccessCredential = .pairedKey,
    channel: any Channel, inbound: inout NIOAsyncChannelInboundStream<CloudMessage>.AsyncIterator
) async throws -> CloudMessage? {
    try await channel.writeAndFlush(CloudMessage.introduce(
        requestID: requestID, deviceID: device.description, offer: sampleOffer(.ephemeral()),
        answerKey: key.publicKey.rawRepresentation.base64EncodedString()))
    let first = try await inbound.next()
    guard case .accessChallenge(requestID, let challenge)? = first else { return first }
    let proof = try await AccessProver(identity: .ephemeral(), credential: credential)
        .prove(challenge, device: device, requestID: requestID, answerKey: key.publicKey)
    try await channel.writeAndFlush(CloudMessage.accessProof(requestID: requestID, sealed: proof.sealed))
    return try await inbound.next()
}
