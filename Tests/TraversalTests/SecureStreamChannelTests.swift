import Testing
@testable import Traversal

@Suite struct SecureStreamChannelTests {
    @Test func framesArriveWhateverTheReadBoundaries() throws {
        var (sender, receiver) = channelPair(SecureStreamChannel.self, keyBytes: (3, 4))
        let messages: [[UInt8]] = [Array("one".utf8), [], Array(repeating: 7, count: 1000), [42]]
        let stream = try messages.flatMap { try sender.seal($0) }
        var received = [[UInt8]]()
        var offset = 0
        var chunk = 1
        while offset < stream.count {
            let end = min(stream.count, offset + chunk)
            received += try receiver.receive(Array(stream[offset..<end]))
            offset = end
            chunk = chunk * 3 % 97 + 1
        }
        #expect(received == messages)
    }

    @Test func partialFrameWaitsForTheRest() throws {
        var (sender, receiver) = channelPair(SecureStreamChannel.self, keyBytes: (3, 4))
        let frame = try sender.seal([1, 2, 3])
        #expect(try receiver.receive(Array(frame.prefix(2))).isEmpty)
        #expect(try receiver.receive(Array(frame[2..<(frame.count - 1)])).isEmpty)
        #expect(try receiver.receive([frame.last!]) == [[1, 2, 3]])
    }

    @Test func tamperedFrameFailsTheStream() throws {
        var (sender, receiver) = channelPair(SecureStreamChannel.self, keyBytes: (3, 4))
        var frame = try sender.seal([1, 2, 3])
        frame[LengthPrefixedFrameDecoder.headerLength] ^= 0x01
        let error = #expect(throws: SecureChannelError.self) { try receiver.receive(frame) }
        #expect(error?.code == .authenticationFailed)
        let after = #expect(throws: SecureChannelError.self) { try receiver.receive(try sender.seal([4])) }
        #expect(after?.code == .streamFailed)
    }

    @Test func reorderedFramesFailBecauseStreamNoncesAreImplicit() throws {
        var (sender, receiver) = channelPair(SecureStreamChannel.self, keyBytes: (3, 4))
        let first = try sender.seal([1])
        let second = try sender.seal([2])
        let error = #expect(throws: SecureChannelError.self) { try receiver.receive(second + first) }
        #expect(error?.code == .authenticationFailed)
    }
}

@Suite struct LengthPrefixedFrameDecoderTests {
    @Test func oversizeFrameIsRefusedFromItsHeaderAlone() {
        var decoder = LengthPrefixedFrameDecoder()
        let header = LengthPrefixedFrameDecoder.header(for: LengthPrefixedFrameDecoder.defaultMaxFrameLength + 1)
        let error = #expect(throws: SecureChannelError.self) { try decoder.decode(header) }
        #expect(error?.code == .tooLarge)
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func hugeAnnouncedLengthIsRefusedWithoutWaitingForTheBody() {
        var decoder = LengthPrefixedFrameDecoder()
        let error = #expect(throws: SecureChannelError.self) { try decoder.decode([0xFF, 0xFF, 0xFF, 0xFF, 0, 0]) }
        #expect(error?.code == .tooLarge)
    }

    @Test func frameOfExactlyTheMaximumIsAccepted() throws {
        var decoder = LengthPrefixedFrameDecoder(maxFrameLength: 10)
        let frame = LengthPrefixedFrameDecoder.header(for: 10) + [UInt8](repeating: 5, count: 10)
        #expect(try decoder.decode(frame) == [[UInt8](repeating: 5, count: 10)])
        let error = #expect(throws: SecureChannelError.self) {
            try decoder.decode(LengthPrefixedFrameDecoder.header(for: 11))
        }
        #expect(error?.code == .tooLarge)
    }

    @Test func partialHeaderIsBuffered() throws {
        var decoder = LengthPrefixedFrameDecoder()
        #expect(try decoder.decode([0, 0]).isEmpty)
        #expect(decoder.bufferedByteCount == 2)
        #expect(try decoder.decode([0, 2, 9]).isEmpty)
        #expect(try decoder.decode([8, 0, 0]) == [[9, 8]])
        #expect(decoder.bufferedByteCount == 2)
    }
}
