import NIOCore
import Testing
@testable import STUNLite

/// Client against server over real sockets on loopback (127.0.0.1 and 127.0.0.2, both loopback on Linux).
@Suite struct STUNLoopbackTests {
    static func withServer<T>(alternate: Bool = true, _ body: (STUNServer) async throws -> T) async throws -> T {
        let server = try await STUNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0,
                                                      alternateIP: alternate ? IPAddress("127.0.0.2")! : nil))
        do {
            let r = try await body(server)
            await server.shutdown()
            return r
        } catch {
            await server.shutdown()
            throw error
        }
    }

    static func withClient<T>(_ body: (STUNUDPClient) async throws -> T) async throws -> T {
        let client = try await STUNUDPClient.bind(to: TransportAddress("127.0.0.1:0")!)
        do {
            let r = try await body(client)
            await client.close()
            return r
        } catch {
            await client.close()
            throw error
        }
    }

    @Test func udpBindingReturnsTheClientsAddress() async throws {
        try await Self.withServer { server in
            try await Self.withClient { client in
                let r = try await client.binding(to: server.udpAddresses[.primary]!, policy: .quick)
                #expect(r.mappedAddress == client.localAddress)
                #expect(r.source == server.udpAddresses[.primary])
                #expect(r.otherAddress == server.udpAddresses[STUNSocketRole(alternateIP: true, alternatePort: true)])
                #expect(r.requestsSent == 1)
            }
        }
    }

    @Test func changeRequestIsAnsweredFromTheOtherAddress() async throws {
        try await Self.withServer { server in
            try await Self.withClient { client in
                let primary = server.udpAddresses[.primary]!
                let both = try await client.binding(to: primary, change: ChangeRequest(changeIP: true, changePort: true), policy: .quick)
                #expect(both.source == server.udpAddresses[STUNSocketRole(alternateIP: true, alternatePort: true)])
                #expect(both.source.ip == IPAddress("127.0.0.2"))
                let port = try await client.binding(to: primary, change: ChangeRequest(changeIP: false, changePort: true), policy: .quick)
                #expect(port.source == server.udpAddresses[STUNSocketRole(alternateIP: false, alternatePort: true)])
                #expect(port.responseOrigin == port.source)
            }
        }
    }

    /// The next datagram that is not an answer to one of the client's own transactions, or `nil` after `limit`.
    static func nextOtherDatagram(_ client: STUNUDPClient, within limit: Duration = .seconds(2)) async -> (TransportAddress, [UInt8])? {
        await withTaskGroup(of: (TransportAddress, [UInt8])?.self) { group in
            group.addTask {
                for await datagram in client.otherDatagrams { return datagram }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    @Test func classicRFC3489ClientRunsItsTestsOverRealSockets() async throws {
        try await Self.withServer { server in
            try await Self.withClient { client in
                let primary = server.udpAddresses[.primary]!
                let a2p2 = server.udpAddresses[STUNSocketRole(alternateIP: true, alternatePort: true)]!
                // Test I: a bare classic request (no magic cookie), as RFC 3489 §10.1 clients send it.
                try await client.send(STUNBindingResponderTests.classicTestI, to: primary)
                let (from1, bytes1) = try #require(await Self.nextOtherDatagram(client), "no answer to test I")
                let m1 = try STUNMessage.decode(bytes1)
                #expect(from1 == primary && m1.isClassic)
                #expect(try m1.attribute(MappedAddress.self)?.address == client.localAddress)
                #expect(try m1.attribute(SourceAddress.self)?.address == primary)
                let changed = try #require(try m1.attribute(ChangedAddress.self)?.address)
                #expect(changed == a2p2)
                // Test II: change IP and port; the answer comes from, and names, CHANGED-ADDRESS.
                try await client.send(STUNBindingResponderTests.classicTestII, to: primary)
                let (from2, bytes2) = try #require(await Self.nextOtherDatagram(client), "no answer to test II")
                #expect(from2 == changed)
                #expect(try STUNMessage.decode(bytes2).attribute(SourceAddress.self)?.address == changed)
                // Test I to CHANGED-ADDRESS: the same mapping (no NAT on loopback), so not a symmetric NAT.
                try await client.send(STUNBindingResponderTests.classicTestI, to: changed)
                let (from3, bytes3) = try #require(await Self.nextOtherDatagram(client), "no answer to test I at CHANGED-ADDRESS")
                #expect(from3 == changed)
                #expect(try STUNMessage.decode(bytes3).attribute(MappedAddress.self)?.address == client.localAddress)
            }
        }
    }

    @Test func tcpBindingReturnsTheClientsAddress() async throws {
        try await Self.withServer(alternate: false) { server in
            let r = try await STUNTCPClient.binding(to: server.tcpAddresses[0], timeout: .seconds(5))
            #expect(r.mappedAddress == r.local)
            #expect(r.mappedAddress?.ip == IPAddress("127.0.0.1"))
        }
    }

    @Test func silentServerTimesOutWithATypedError() async throws {
        // A bound socket that never answers: the client must give up on its own schedule.
        try await Self.withClient { silent in
            try await Self.withClient { client in
                let policy = STUNRetransmissionPolicy(rto: .milliseconds(50), maxRequests: 3, finalWaitMultiplier: 2)
                do {
                    _ = try await client.binding(to: silent.localAddress, policy: policy)
                    Issue.record("answered")
                } catch let e as STUNClientError {
                    #expect(e.code == .timeout)
                }
                // The silent side saw exactly the three sends of the schedule.
                var seen = 0
                for await _ in silent.otherDatagrams {
                    seen += 1
                    if seen == 3 { break }
                }
                #expect(seen == 3)
            }
        }
    }

    @Test func nonSTUNDatagramsReachOtherDatagrams() async throws {
        try await Self.withClient { a in
            try await Self.withClient { b in
                try await a.send([0x80, 1, 2, 3], to: b.localAddress)
                var it = b.otherDatagrams.makeAsyncIterator()
                let got = await it.next()
                #expect(got?.0 == a.localAddress)
                #expect(got?.1 == [0x80, 1, 2, 3])
            }
        }
    }

    @Test func cancellationEndsATransactionPromptly() async throws {
        try await Self.withClient { silent in
            try await Self.withClient { client in
                let task = Task { try await client.binding(to: silent.localAddress, policy: .rfc8489) }
                try await Task.sleep(for: .milliseconds(50))
                task.cancel()
                let result = await task.result
                #expect(throws: CancellationError.self) { try result.get() }
            }
        }
    }

    @Test func tcpFramingSplitsCoalescedAndPartialMessages() throws {
        var m1 = STUNMessage(method: .binding, messageClass: .request)
        m1.append(Software("x"))
        let b1 = m1.encode()
        let b2 = STUNMessage(method: .binding, messageClass: .request).encode()
        var buffer = ByteBuffer(bytes: b1 + b2.prefix(7))
        #expect(try STUNFrameDecoder.frameSize(buffer, allowsChannelData: false) == b1.count)
        buffer.moveReaderIndex(forwardBy: b1.count)
        #expect(try STUNFrameDecoder.frameSize(buffer, allowsChannelData: false) == 20)
        #expect(throws: STUNDecodingError.self) { try STUNFrameDecoder.frameSize(ByteBuffer(bytes: [0x47, 0x45, 0x54, 0x20]), allowsChannelData: false) }
        #expect(try STUNFrameDecoder.frameSize(ByteBuffer(bytes: [0x40, 0x00, 0x00, 0x05]), allowsChannelData: true) == 12)
        #expect(try STUNFrameDecoder.frameSize(ByteBuffer(bytes: [0x40]), allowsChannelData: true) == nil)
    }
}
