import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Rendezvous
import Traversal

/// One WebSocket frame as the proxy reads and writes it (RFC 6455 §5.2). Fragmented frames and extensions are
/// refused: the cloud and Chromium send each signalling message in one frame.
struct WireFrame: Sendable, Equatable {
    /// The text opcode (RFC 6455 §11.8), the only one whose payload the proxy reads.
    static let text: UInt8 = 0x1
    /// Largest payload the proxy reads (the cloud's own limit is 32 KiB).
    static let maxPayload = 64 * 1024

    /// The opcode (low four bits of the first byte).
    var opcode: UInt8
    /// The payload, unmasked.
    var payload: [UInt8]

    /// A frame the proxy cannot pass on.
    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    /// Takes one whole frame off the front of `bytes`, unmasked (RFC 6455 §5.3); nil while it is incomplete.
    static func take(from bytes: inout [UInt8]) throws -> WireFrame? {
        guard bytes.count >= 2 else { return nil }
        guard bytes[0] & 0xF0 == 0x80 else { throw Malformed(description: "a fragment or an extension (first byte \(bytes[0]))") }
        let masked = bytes[1] & 0x80 != 0
        var length = Int(bytes[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard bytes.count >= 4 else { return nil }
            length = Int(bytes[2]) << 8 | Int(bytes[3])
            offset = 4
        } else if length == 127 {
            guard bytes.count >= 10 else { return nil }
            guard bytes[2..<6].allSatisfy({ $0 == 0 }) else { throw Malformed(description: "a payload over 4 GiB") }
            length = bytes[6..<10].reduce(0) { $0 << 8 | Int($1) }
            offset = 10
        }
        guard length <= maxPayload else { throw Malformed(description: "a payload of \(length) bytes") }
        let start = offset + (masked ? 4 : 0)
        guard bytes.count >= start + length else { return nil }
        let mask = masked ? Array(bytes[offset..<start]) : [0, 0, 0, 0]
        let payload = bytes[start..<(start + length)].enumerated().map { $0.element ^ mask[$0.offset % 4] }
        let opcode = bytes[0] & 0x0F
        bytes.removeSubrange(..<(start + length))
        return WireFrame(opcode: opcode, payload: payload)
    }

    /// The frame's bytes, masked with a fresh key when `masked` (a client's frames must be, RFC 6455 §5.3).
    func encoded(masked: Bool) -> [UInt8] {
        var bytes: [UInt8] = [0x80 | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        switch payload.count {
        case ..<126: bytes.append(maskBit | UInt8(payload.count))
        case ..<65536: bytes += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default: bytes += [maskBit | 127] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
        }
        guard masked else { return bytes + payload }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        return bytes + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }
}

/// The bytes one side of a TLS connection sends, read in the shapes the proxy needs: an HTTP head first, then
/// raw bytes or WebSocket frames. Every read is bounded (``maxHead``, ``WireFrame/maxPayload``).
struct InboundBytes {
    /// Longest HTTP head read (the cloud's own limit is 16 KiB).
    static let maxHead = 16 * 1024

    private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private var pending: [UInt8] = []

    /// Bytes from `inbound`.
    init(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) {
        iterator = inbound.makeAsyncIterator()
    }

    /// The HTTP head through its blank line; nil when the stream ends first.
    mutating func head() async throws -> String? {
        while true {
            if let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: pending[..<end.upperBound], as: UTF8.self)
                pending.removeSubrange(..<end.upperBound)
                return head
            }
            guard pending.count <= Self.maxHead else { throw WireFrame.Malformed(description: "an HTTP head over \(Self.maxHead) bytes") }
            guard let chunk = try await iterator.next() else { return nil }
            pending += chunk.readableBytesView
        }
    }

    /// Whatever comes next (bytes already read first); nil at the end.
    mutating func bytes() async throws -> [UInt8]? {
        if !pending.isEmpty {
            defer { pending = [] }
            return pending
        }
        return try await iterator.next().map { Array($0.readableBytesView) }
    }

    /// The next whole WebSocket frame; nil at the end.
    mutating func frame() async throws -> WireFrame? {
        while true {
            if let frame = try WireFrame.take(from: &pending) { return frame }
            guard let chunk = try await iterator.next() else { return nil }
            pending += chunk.readableBytesView
        }
    }
}

/// Which way a signalling message goes through the proxy.
enum SignalDirection: Sendable, Equatable {
    /// From the page to the cloud.
    case toCloud
    /// From the cloud to the page.
    case toPage
}

/// A signalling message of either side (`BrowserSignallingStateMachine`'s page messages and what the cloud answers),
/// every field optional, so the proxy can read, change and write any of them.
struct SignalMessage: Codable, Sendable {
    var type: String
    var uid: String?
    var requestID: String?
    var sdp: String?
    var answerKey: String?
    var challenge: AccessChallenge?
    var sealed: String?
    var reason: String?
    var code: String?
    var message: String?
    var iceServers: [BrowserSignallingStateMachine.IceServer]?
    var report: BrowserReport?
    /// `located`: the camera's registered key and a deposit.
    var identityKey: String?
    var deposit: AccessDeposit?
    /// `watch`: the page's proof sealed to that deposit.
    var deposited: DepositedProof?

    init(type: String, uid: String? = nil, sdp: String? = nil, answerKey: String? = nil, sealed: String? = nil) {
        self.type = type
        self.uid = uid
        self.sdp = sdp
        self.answerKey = answerKey
        self.sealed = sealed
    }

    /// The message as JSON text.
    var text: String {
        String(decoding: (try? JSONEncoder().encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }
}

/// A TLS connection to `127.0.0.1:port` (the cloud's test certificate is not checked: the proxy plays the cloud's
/// own operator, who can read its traffic anyway).
func connectTLS(port: Int) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.certificateVerification = .none
    let context = try NIOSSLContext(configuration: tls)
    return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
            return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
        }
    }
}

/// A man in the middle between Chromium and the cloud's viewer page, as a malicious cloud could be: it terminates
/// TLS (its own certificate; Chromium is told to accept any), passes HTTP through, answers the WebSocket upgrade
/// with the cloud's own 101 after setting `Origin` to the cloud's (so the cloud's origin check passes), and hands
/// every text message of `/signal`, both ways, to `intercept`, which returns what to send on instead (none, one
/// or several messages). Client frames are unmasked and masked again toward the cloud (RFC 6455 §5.3).
///
/// ```
///  chromium ──TLS──► proxy (127.0.0.1:port) ──TLS──► cloud web port
///           GET /, /viewer.js: bytes as they come
///           GET /signal: Origin rewritten ─► 101 from the cloud ─► frames ─► intercept(direction, text) ─► frames
/// ```
final class SignallingProxy: Sendable {
    /// What the proxy does with one text message: the messages to send on in the same direction.
    typealias Intercept = @Sendable (SignalDirection, String) async -> [String]

    /// Where Chromium connects.
    let port: Int
    private let listener: any Channel
    private let serving: Task<Void, Never>

    private init(port: Int, listener: any Channel, serving: Task<Void, Never>) {
        self.port = port
        self.listener = listener
        self.serving = serving
    }

    /// Listens on a free loopback port and relays every connection to the cloud's page at `cloudPort`.
    static func start(cloudPort: Int, intercept: @escaping Intercept) async throws -> SignallingProxy {
        let (chain, key) = try CloudCertificates.ephemeral(names: ["127.0.0.1"])
        let tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(chain.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(key.utf8), format: .pem)))
        let context = try NIOSSLContext(configuration: tls)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        guard let port = server.channel.localAddress?.port else {
            try? await server.channel.close()
            throw WireFrame.Malformed(description: "no port bound")
        }
        let serving = Task<Void, Never> {
            try? await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask { try? await relay(connection, cloudPort: cloudPort, intercept: intercept) }
                    }
                }
            }
        }
        return SignallingProxy(port: port, listener: server.channel, serving: serving)
    }

    /// Stops listening and ends the connections still open.
    func stop() {
        serving.cancel()
        listener.close(promise: nil)
    }

    /// One of Chromium's connections, relayed to a connection of its own to the cloud until either side ends.
    private static func relay(_ page: NIOAsyncChannel<ByteBuffer, ByteBuffer>, cloudPort: Int, intercept: @escaping Intercept) async throws {
        try await page.executeThenClose { pageIn, pageOut in
            let cloud = try await connectTLS(port: cloudPort)
            try await cloud.executeThenClose { cloudIn, cloudOut in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await pass(pageIn, to: cloudOut, .toCloud, cloudPort: cloudPort, intercept: intercept) }
                    group.addTask { try await pass(cloudIn, to: pageOut, .toPage, cloudPort: cloudPort, intercept: intercept) }
                    try await group.next()
                    group.cancelAll()
                }
            }
        }
    }

    /// One direction of a connection: the HTTP head, then bytes as they come, or, after a WebSocket upgrade, frames
    /// whose text goes through `intercept`.
    private static func pass(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, to outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
                             _ direction: SignalDirection, cloudPort: Int, intercept: Intercept) async throws {
        var bytes = InboundBytes(inbound)
        guard let head = try await bytes.head() else { return }
        let webSocket = direction == .toCloud ? head.hasPrefix("GET /signal ") : head.hasPrefix("HTTP/1.1 101")
        try await outbound.write(ByteBuffer(string: direction == .toCloud ? cloudsOwn(head, cloudPort: cloudPort) : head))
        guard webSocket else {
            while let chunk = try await bytes.bytes() { try await outbound.write(ByteBuffer(bytes: chunk)) }
            return
        }
        let masked = direction == .toCloud
        while let frame = try await bytes.frame() {
            guard frame.opcode == WireFrame.text else {
                try await outbound.write(ByteBuffer(bytes: frame.encoded(masked: masked)))
                continue
            }
            for text in await intercept(direction, String(decoding: frame.payload, as: UTF8.self)) {
                try await outbound.write(ByteBuffer(bytes: WireFrame(opcode: WireFrame.text, payload: Array(text.utf8)).encoded(masked: masked)))
            }
        }
    }

    /// A request head as the cloud's own page would send it: `Origin` and `Host` name the cloud's port.
    private static func cloudsOwn(_ head: String, cloudPort: Int) -> String {
        head.components(separatedBy: "\r\n").map { line in
            switch line.lowercased() {
            case let l where l.hasPrefix("origin:"): "Origin: https://127.0.0.1:\(cloudPort)"
            case let l where l.hasPrefix("host:"): "Host: 127.0.0.1:\(cloudPort)"
            default: line
            }
        }.joined(separator: "\r\n")
    }
}

/// A signalling session of the proxy's own with the cloud, as its own page would open one (`/signal`, the cloud's origin).
struct SignalLink {
    private var bytes: InboundBytes
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

    /// Opens `/signal` at `127.0.0.1:cloudPort`, runs `body` with the session, then closes it.
    static func with<T: Sendable>(cloudPort: Int, _ body: (inout SignalLink) async throws -> T) async throws -> T {
        let channel = try await connectTLS(port: cloudPort)
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "GET /signal HTTP/1.1\r\nHost: 127.0.0.1:\(cloudPort)\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Key: \(Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString())\r\n"
                + "Sec-WebSocket-Version: 13\r\nOrigin: https://127.0.0.1:\(cloudPort)\r\n\r\n"))
            var link = SignalLink(bytes: InboundBytes(inbound), outbound: outbound)
            let head = try await link.bytes.head() ?? ""
            guard head.hasPrefix("HTTP/1.1 101") else { throw WireFrame.Malformed(description: "no upgrade: \(head.prefix(80))") }
            return try await body(&link)
        }
    }

    /// Sends `message` (masked, as a client must).
    func send(_ message: SignalMessage) async throws {
        try await outbound.write(ByteBuffer(bytes: WireFrame(opcode: WireFrame.text, payload: Array(message.text.utf8)).encoded(masked: true)))
    }

    /// The next text message; throws when the session ends first or sends something else.
    mutating func receive() async throws -> SignalMessage {
        guard let frame = try await bytes.frame() else { throw WireFrame.Malformed(description: "the cloud closed the session") }
        guard frame.opcode == WireFrame.text else { throw WireFrame.Malformed(description: "opcode \(frame.opcode), payload \(frame.payload.prefix(64))") }
        return try JSONDecoder().decode(SignalMessage.self, from: Data(frame.payload))
    }
}
