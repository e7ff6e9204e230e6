import Foundation
import NIOCore
import NIOPosix
import STUNLite
import Testing
@testable import TURNLite

/// A client's last ChannelData before it deletes its allocation reaches the peer: sent in the same
/// TCP segment as the Refresh with lifetime 0 (RFC 8656 §7.3), both arrive in one read, and what was
/// relayed first still leaves before the relayed socket closes (a goodbye sent just before a close
/// must not vanish).
@Suite(.serialized, .timeLimit(.minutes(1)))
struct TURNLastDatagramTests {
    typealias Inbound = NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator

    /// One authenticated request over the stream, answering 401/438 (RFC 8489 §9.2), returning the success.
    static func request(_ method: STUNMethod, credentials: inout TURNClientCredentials,
                        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, inbound: inout Inbound,
                        _ build: (inout STUNMessage) -> Void) async throws -> STUNMessage {
        var transaction = TURNClientCredentials.Transaction()
        for _ in 0...TURNClient.maxChallengeRounds {
            var m = STUNMessage(method: method, messageClass: .request)
            build(&m)
            let key = credentials.sign(&m, in: &transaction)
            try await outbound.write(ByteBuffer(bytes: m.encode(integrityKey: key, fingerprint: true)))
            while let frame = try await inbound.next() {
                guard let answer = try? STUNMessage.decode(Array(frame.readableBytesView)), answer.transactionID == m.transactionID else { continue }
                if answer.messageClass == .successResponse { return answer }
                try credentials.absorb(answer, method: method, in: &transaction)
                break
            }
        }
        throw TURNError(.badResponse, detail: "\(method) did not succeed")
    }

    @Test func channelDataSentWithTheDeletingRefreshStillReachesThePeer() async throws {
        let settings = TURNServerConfiguration(credentials: TURNCredentials(realm: "trav.test", users: ["u": "p"]),
                                               peerPolicy: TURNPeerPolicy(allowed: [IPPrefix("127.0.0.0/8")!]))
        let server = try await TURNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0, server: settings))
        defer { Task { await server.shutdown() } }
        // The peer: a UDP socket whose datagrams are counted as they arrive.
        let (arrivals, arrived) = AsyncStream.makeStream(of: [UInt8].self)
        let peer = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.2", port: 0)
            .flatMapThrowing { channel in
                try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
            }.get()
        let peerAddress = try #require(TransportAddress(peer.channel.localAddress!))
        let reader = Task {
            try await peer.executeThenClose { inbound, _ in
                for try await envelope in inbound { arrived.yield(Array(envelope.data.readableBytesView)) }
            }
        }
        defer { reader.cancel() }

        let tcp = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(to: try #require(server.tcpAddress).socketAddress) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(STUNFrameDecoder(allowsChannelData: true)))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        try await tcp.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            var credentials = TURNClientCredentials(username: "u", password: "p")
            _ = try await Self.request(.allocate, credentials: &credentials, outbound: outbound, inbound: &frames) {
                $0.append(RequestedTransport.udp)
            }
            _ = try await Self.request(.channelBind, credentials: &credentials, outbound: outbound, inbound: &frames) {
                $0.append(ChannelNumber(0x4000))
                $0.append(XORPeerAddress(peerAddress))
            }
            // One write: a ChannelData, then the Refresh that deletes the allocation.
            let goodbye = Array("last words".utf8)
            var refresh = STUNMessage(method: .refresh, messageClass: .request)
            refresh.append(Lifetime(seconds: 0))
            var transaction = TURNClientCredentials.Transaction()
            let key = credentials.sign(&refresh, in: &transaction)
            let bytes = ChannelData(channel: 0x4000, payload: goodbye).encode(padded: true) + refresh.encode(integrityKey: key, fingerprint: true)
            try await outbound.write(ByteBuffer(bytes: bytes))
            // The deletion is answered…
            var deleted = false
            while let frame = try await frames.next() {
                if let m = try? STUNMessage.decode(Array(frame.readableBytesView)), m.transactionID == refresh.transactionID {
                    deleted = m.messageClass == .successResponse
                    break
                }
            }
            #expect(deleted, "the Refresh with lifetime 0 succeeds")
            // … and the datagram relayed before it arrived.
            let received = try await withThrowingTaskGroup(of: [UInt8]?.self) { group in
                group.addTask {
                    for await datagram in arrivals { return datagram }
                    return nil
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(2))
                    return nil
                }
                defer { group.cancelAll() }
                return try await group.next() ?? nil
            }
            #expect(received == goodbye, "the peer got \(String(describing: received))")
        }
    }
}
