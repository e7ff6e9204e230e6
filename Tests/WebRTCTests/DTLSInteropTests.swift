import Foundation
import NATLab
import NIOCore
import NIOPosix
import Testing
import WebRTC

/// Our DTLS server against OpenSSL's own client (`openssl s_client -dtls1_2`) over UDP on loopback:
/// a real peer completes the handshake with its certificate checked by fingerprint, and data
/// crosses both ways.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct DTLSInteropTests {
    static let openssl = ["/usr/bin/openssl", "/bin/openssl"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test(.disabled(if: openssl == nil, "openssl is not installed"))
    func openSSLsClientTalksToOurServer() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-dtls-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let ours = try DTLSCertificate.generate()
        let theirs = try DTLSCertificate.generate()
        try theirs.certificatePEM.write(to: dir.appendingPathComponent("c.pem"), atomically: true, encoding: .utf8)
        try theirs.privateKeyPEM.write(to: dir.appendingPathComponent("k.pem"), atomically: true, encoding: .utf8)
        let server = try DTLSEndpoint(role: .server, certificate: ours, peerFingerprint: theirs.fingerprint)

        let socket = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0)
            .flatMapThrowing { try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: $0) }
            .get()
        let port = try #require(socket.channel.localAddress?.port)
        // s_client sends its stdin as application data and prints what it receives.
        let client = try ChildProcess(["/bin/sh", "-c",
            "(echo hello-from-openssl; sleep 2) | \(Self.openssl!) s_client -dtls1_2 -connect 127.0.0.1:\(port) " +
            "-cert \(dir.path)/c.pem -key \(dir.path)/k.pem -quiet"])
        defer {
            client.kill()
            client.removeFiles()
        }
        var received: [[UInt8]] = []
        // Bounded: the socket is closed after 10 s whatever happens.
        let channel = socket.channel
        let watchdog = Task {
            try? await Task.sleep(for: .seconds(10))
            channel.close(promise: nil)
        }
        defer { watchdog.cancel() }
        try await socket.executeThenClose { inbound, outbound in
            for try await envelope in inbound {
                let out = try server.receive(Array(envelope.data.readableBytesView))
                for d in out.datagrams {
                    try await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: d)))
                }
                received += out.data
                if !out.data.isEmpty {
                    // The reply, then close_notify, after which s_client exits.
                    for d in try server.send(Array("hello-from-trav\n".utf8)).datagrams + server.close().datagrams {
                        try await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: d)))
                    }
                    break
                }
            }
        }
        #expect(server.isConnected, "handshake with openssl s_client: \(client.output().stderr.suffix(400))")
        #expect(received.map { String(decoding: $0, as: UTF8.self) }.joined() == "hello-from-openssl\n")
        _ = await client.wait(.seconds(5))
        #expect(client.output().stdout.contains("hello-from-trav"), "s_client printed: \(client.output().stdout.suffix(200))")
    }
}
