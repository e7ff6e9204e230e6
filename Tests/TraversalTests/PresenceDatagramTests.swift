import Crypto
import Foundation
import Testing
@testable import Traversal

/// The presence datagram codec: sealed under the session key, every malformed class a typed error.
@Suite struct PresenceDatagramTests {
    let key = SymmetricKey(size: .bits256)
    let session = PresenceSessionID(high: 0x0102_0304_0506_0708, low: 0x090A_0B0C_0D0E_0F10)

    @Test func sealedDatagramOpensUnderItsKeyWithItsHeader() throws {
        let datagram = PresenceDatagram(kind: .keepalive, session: session, counter: 42)
        let bytes = datagram.sealed(with: key)
        #expect(bytes.count == PresenceProtocol.datagramLength)
        #expect(Array(bytes[1..<17]) == session.bytes)
        #expect(try PresenceDatagram.open(bytes, with: key) == datagram)
    }

    @Test func anotherKeyOrAnyFlippedBitIsUnauthenticated() {
        let bytes = PresenceDatagram(kind: .ack, session: session, counter: 7).sealed(with: key)
        #expect(throws: PresenceError(code: .unauthenticated, detail: "tag of ack does not verify")) {
            try PresenceDatagram.open(bytes, with: SymmetricKey(size: .bits256))
        }
        for index in [1, 16, 17, 24, 25, 40] {
            var tampered = bytes
            tampered[index] ^= 0x01
            #expect((try? PresenceDatagram.open(tampered, with: key)) == nil, "byte \(index)")
        }
    }

    @Test func theSameCounterInTheOtherDirectionIsAnotherNonce() {
        // A keepalive and an ack with one counter must not share a keystream: their tags differ.
        let keepalive = PresenceDatagram(kind: .keepalive, session: session, counter: 1).sealed(with: key)
        var asAck = keepalive
        asAck[0] = PresenceDatagramKind.ack.rawValue
        #expect((try? PresenceDatagram.open(asAck, with: key)) == nil)
    }

    @Test func wrongLengthsAndUnknownKindsAreMalformed() {
        let bytes = PresenceDatagram(kind: .wake, session: session, counter: 1).sealed(with: key)
        for length in [0, 1, 24, 40, 42, 1500] {
            let data = Array(repeating: UInt8(0), count: length)
            #expect(throws: PresenceError.self) { try PresenceDatagram.peek(data) }
            #expect((try? PresenceDatagram.peek(data)) == nil)
        }
        var unknown = bytes
        unknown[0] = 9
        do {
            _ = try PresenceDatagram.peek(unknown)
            Issue.record("kind 9 was accepted")
        } catch let error as PresenceError {
            #expect(error.code == .malformed && error.detail.contains("offset 0"))
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    @Test func grantRoundTripsThroughJSONAndRefusesBadFields() throws {
        let grant = PresenceGrant(port: 5349, session: session, key: key, keepaliveSeconds: 20)
        let message = CloudMessage.registered(observedAddress: "198.51.100.1:5000", keepaliveSeconds: 10, presence: grant)
        let decoded = try JSONDecoder().decode(CloudMessage.self, from: JSONEncoder().encode(message))
        #expect(decoded == message)
        try decoded.validate()
        let (id, decodedKey) = try grant.decoded()
        #expect(id == session && decodedKey == key)
        var badPort = grant
        badPort.port = 0
        var shortKey = grant
        shortKey.key = Data(count: 16).base64EncodedString()
        var badSession = grant
        badSession.session = "not base64"
        for bad in [badPort, shortKey, badSession] {
            #expect(throws: CloudProtocolError.self) {
                try CloudMessage.registered(observedAddress: "x", keepaliveSeconds: 10, presence: bad).validate()
            }
        }
    }

    /// A stream carries datagrams back to back: whatever the read boundaries, each comes out whole and in order, at
    /// most one partial datagram is held, and a byte that starts no datagram ends the stream.
    @Test func aPresenceStreamIsCutIntoItsDatagramsWhateverTheReads() throws {
        let key = SymmetricKey(size: .bits256)
        let session = PresenceSessionID(high: 3, low: 4)
        let datagrams = [
            PresenceDatagram(kind: .ack, session: session, counter: 1).sealed(with: key),
            PresenceDatagram(kind: .goAway, session: session, counter: 2, retryAfterMilliseconds: 500).sealed(with: key),
            PresenceDatagram(kind: .wake, session: session, counter: 3).sealed(with: key),
        ]
        let bytes = datagrams.flatMap { $0 }
        for chunk in [1, 2, 7, 40, 41, 45, 100, bytes.count] {
            var framer = PresenceStreamFramer()
            var out: [[UInt8]] = []
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + chunk, bytes.count)
                try framer.feed(bytes[offset..<end]) { out.append($0) }
                #expect(framer.heldBytes < PresenceDatagram.length(of: .goAway))
                offset = end
            }
            #expect(out == datagrams, "reads of \(chunk) bytes")
            #expect(framer.heldBytes == 0)
        }
        var framer = PresenceStreamFramer()
        var out: [[UInt8]] = []
        #expect(throws: PresenceError.self) {
            try framer.feed(datagrams[0] + [0x16, 0x03, 0x01] + datagrams[2]) { out.append($0) }
        }
        #expect(out == [datagrams[0]], "nothing after the garbage")
    }
}
