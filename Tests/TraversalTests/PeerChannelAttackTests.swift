import Foundation
import PeerTestSupport
import Synchronization
import Testing
@_spi(Fuzzing) @testable import Traversal

/// An authenticated but malicious peer (inside the secure session) against the channel engine: it gets a
/// refused or closed channel, bounded memory, never a crash.
@Suite(.serialized, .timeLimit(.minutes(2))) struct PeerChannelAttackTests {
    /// Two channel sessions wired back to back in memory; `record` sees every packet the attacker sends.
    static func wiredSessions(attacker: SCTPAssociation.Configuration, victim: SCTPAssociation.Configuration = .datagram(pathMTU: 1100),
                              record: (@Sendable ([UInt8]) -> Void)? = nil) throws -> (attacker: ChannelSession, victim: ChannelSession) {
        let victimBox = Mutex<ChannelSession?>(nil)
        let attackerBox = Mutex<ChannelSession?>(nil)
        let a = try ChannelSession(role: .viewer, configuration: attacker, logger: .init(label: "attacker")) { packet in
            record?(packet)
            victimBox.withLock { $0 }?.input(packet)
        }
        let v = try ChannelSession(role: .camera, configuration: victim, logger: .init(label: "victim")) { packet in
            attackerBox.withLock { $0 }?.input(packet)
        }
        victimBox.withLock { $0 = v }
        attackerBox.withLock { $0 = a }
        a.connect()
        v.connect()
        return (a, v)
    }

    @Test func openingThousandsOfChannelsIsRefusedPastTheLimit() async throws {
        let (viewer, camera, _) = connectedPair()
        let accepted = Atomic<Int>(0)
        let counter = Task {
            for await _ in camera.incomingChannels { accepted.add(1, ordering: .relaxed) }
        }
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<(PeerChannel.maxChannels + 200) {
                group.addTask { (try? await viewer.openChannel(label: "flood-\(i)")) != nil }
            }
            var opened = 0
            for await ok in group where ok { opened += 1 }
            return opened
        }
        #expect(outcomes == PeerChannel.maxChannels)
        #expect(accepted.load(ordering: .relaxed) == PeerChannel.maxChannels)
        // The connection still works for what was accepted... and for a channel the camera opens.
        let fromCamera = try await camera.openChannel(label: "still-works")
        #expect(fromCamera.isOpen)
        counter.cancel()
        await viewer.close()
        await camera.close()
    }

    @Test func announcingAHugeMessageClosesTheChannelNotTheProcess() async throws {
        var big = SCTPAssociation.Configuration.datagram(pathMTU: 1100)
        big.maxMessageSize = 16 << 20
        big.sendBuffer = 17 << 20
        let (attacker, victim) = try Self.wiredSessions(attacker: big)
        async let incoming: PeerChannel? = { for await c in victim.incoming { return c }; return nil }()
        let channel = try await attacker.open(label: "huge", delivery: .reliable, priority: .normal)
        let victimChannel = try #require(await incoming)
        try await attacker.enqueue([UInt8](repeating: 0xAB, count: 12 << 20), ppid: DataChannelProtocol.PPID.binary, channel: channel)
        let error = await #expect(throws: ChannelError.self) {
            for try await _ in victimChannel.messages {}
        }
        #expect(error?.code == .tooLarge)
        attacker.close(reason: "test over")
        victim.close(reason: "test over")
    }

    @Test func malformedAndForgedSCTPPacketsNeverCrashTheVictim() async throws {
        let captured = Mutex<[[UInt8]]>([])
        let (attacker, victim) = try Self.wiredSessions(attacker: .datagram(pathMTU: 1100)) { packet in
            captured.withLock { if $0.count < 400 { $0.append(packet) } }
        }
        async let incoming: PeerChannel? = { for await c in victim.incoming { return c }; return nil }()
        let channel = try await attacker.open(label: "data", delivery: .reliable, priority: .normal)
        let victimChannel = try #require(await incoming)
        for i in 0..<20 { try await channel.send([UInt8](repeating: UInt8(i), count: 3000)) }
        var messages = victimChannel.messages.makeAsyncIterator()
        for _ in 0..<20 { _ = try await messages.next() }
        let samples = captured.withLock { $0 }
        #expect(samples.count > 20)
        var rng = SystemRandomNumberGenerator()
        // Random bytes, truncations, and mutated real packets whose checksum is fixed up (so they reach the parser).
        for n in 0..<20_000 {
            var packet: [UInt8]
            switch n % 4 {
            case 0: packet = (0..<Int.random(in: 0...1200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1: packet = Array(samples[n % samples.count].prefix(Int.random(in: 0...64, using: &rng)))
            default:
                packet = samples[n % samples.count]
                for _ in 0..<Int.random(in: 1...8, using: &rng) where packet.count > 12 {
                    packet[Int.random(in: 12..<packet.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            if packet.count >= 12, n % 4 != 0 {
                packet.replaceSubrange(8..<12, with: [0, 0, 0, 0])
                let crc = SCTPAssociation.checksum(packet)
                withUnsafeBytes(of: crc) { packet.replaceSubrange(8..<12, with: $0) }
            }
            victim.input(packet)
        }
        // Either the association survived and still carries messages, or it was aborted cleanly.
        if victimChannel.isOpen {
            let done = Task { try await channel.send([42]) }
            _ = try? await withDeadline(.seconds(10)) { try await done.value }
        }
        attacker.close(reason: "test over")
        victim.close(reason: "test over")
    }
}

extension PeerChannelAttackTests {
    @Test func unreadBytesAreBoundedPerConnectionNotOnlyPerChannel() async throws {
        let (viewer, camera, _) = connectedPair()
        let incoming = Task { () -> [PeerChannel] in
            var got: [PeerChannel] = []
            for await c in camera.incomingChannels {
                got.append(c)
                if got.count == 4 { break }
            }
            return got
        }
        var channels: [PeerChannel] = []
        for i in 0..<4 { channels.append(try await viewer.openChannel(label: "fill-\(i)")) }
        let unreadOnCamera = await incoming.value
        // Nobody reads on the camera: 4 channels × 12 MiB is under each channel's limit but over the connection's.
        for c in channels {
            for _ in 0..<3 { try? await c.send([UInt8](repeating: 1, count: 4 << 20)) }
        }
        for _ in 0..<200 where unreadOnCamera.allSatisfy(\.isOpen) { try await Task.sleep(for: .milliseconds(20)) }
        #expect(unreadOnCamera.contains { !$0.isOpen })
        await viewer.close()
        await camera.close()
    }
}
