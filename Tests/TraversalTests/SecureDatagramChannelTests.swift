import Testing
@testable import Traversal

@Suite struct SecureDatagramChannelTests {
    @Test func packetCarriesItsCounterAndDecrypts() throws {
        var (sender, receiver) = channelPair(SecureDatagramChannel.self, keyBytes: (1, 2))
        let first = try sender.seal([1, 2, 3])
        let second = try sender.seal([4])
        #expect(Array(first.prefix(8)) == [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(second.prefix(8)) == [0, 0, 0, 0, 0, 0, 0, 1])
        #expect(first.count == 8 + 3 + Noise.tagLength)
        #expect(try receiver.open(first) == [1, 2, 3])
        #expect(try receiver.open(second) == [4])
    }

    @Test func replayedPacketIsRejected() throws {
        var (sender, receiver) = channelPair(SecureDatagramChannel.self, keyBytes: (1, 2))
        let packet = try sender.seal([9])
        _ = try receiver.open(packet)
        let error = #expect(throws: SecureChannelError.self) { try receiver.open(packet) }
        #expect(error?.code == .replayed)
    }

    @Test func reorderedPacketsWithinTheWindowAreAccepted() throws {
        var (sender, receiver) = channelPair(SecureDatagramChannel.self, keyBytes: (1, 2))
        let packets = try (0..<10).map { try sender.seal([UInt8($0)]) }
        for index in [9, 3, 0, 8, 1, 2, 7, 4, 6, 5] {
            #expect(try receiver.open(packets[index]) == [UInt8(index)])
        }
    }

    @Test func packetOlderThanTheWindowIsRejected() throws {
        var (sender, receiver) = channelPair(SecureDatagramChannel.self, keyBytes: (1, 2))
        let old = try sender.seal([0])
        var latest = old
        for _ in 0..<ReplayWindow.windowSize { latest = try sender.seal([1]) }
        _ = try receiver.open(latest)
        let error = #expect(throws: SecureChannelError.self) { try receiver.open(old) }
        #expect(error?.code == .tooOld)
    }

    @Test(arguments: [0, 7, 8, 20])
    func tamperedPacketIsRejectedAndDoesNotConsumeItsCounter(byte: Int) throws {
        var (sender, receiver) = channelPair(SecureDatagramChannel.self, keyBytes: (1, 2))
        let packet = try sender.seal([1, 2, 3, 4, 5, 6, 7, 8])
        var tampered = packet
        tampered[byte] ^= 0x01
        let error = #expect(throws: SecureChannelError.self) { try receiver.open(tampered) }
        #expect(error?.code == .authenticationFailed)
        #expect(try receiver.open(packet) == [1, 2, 3, 4, 5, 6, 7, 8])
    }

    @Test func forgedHighCounterDoesNotAdvanceTheWindow() throws {
        var (sender, receiver) = channelPair(SecureDatagramChannel.self, keyBytes: (1, 2))
        let packet = try sender.seal([1])
        var forged = packet
        forged[0] = 0x7F
        #expect(throws: SecureChannelError.self) { try receiver.open(forged) }
        #expect(receiver.replayWindow.highest == 0)
        #expect(try receiver.open(packet) == [1])
    }

    @Test func truncatedPacketIsRejected() {
        var (_, receiver) = channelPair(SecureDatagramChannel.self, keyBytes: (1, 2))
        let error = #expect(throws: SecureChannelError.self) { try receiver.open([UInt8](repeating: 0, count: 23)) }
        #expect(error?.code == .truncated)
    }

    @Test func oversizePlaintextIsRefused() {
        var (sender, _) = channelPair(SecureDatagramChannel.self, keyBytes: (1, 2))
        let error = #expect(throws: SecureChannelError.self) {
            try sender.seal([UInt8](repeating: 0, count: SecureDatagramChannel.maxPlaintextLength + 1))
        }
        #expect(error?.code == .tooLarge)
    }
}
