import Crypto
import Foundation
import Testing
@testable import Traversal

/// Cheap scrypt cost so tests stay fast; the production default is tested for range only.
private let testCost = PasswordVerifier.Parameters(log2Rounds: 4, blockSize: 1, parallelism: 1)
private let start = ContinuousClock.now

@Suite struct PasswordVerifierTests {
    @Test func acceptsTheRightPasswordOnly() throws {
        let verifier = try PasswordVerifier(password: "correct horse", parameters: testCost)
        #expect(verifier.verify("correct horse"))
        #expect(!verifier.verify("correct hors"))
        #expect(!verifier.verify("Correct horse"))
        #expect(!verifier.verify(""))
    }

    @Test func sameSaltAndPasswordGiveTheSameHashButSaltsDiffer() throws {
        let salt = [UInt8](repeating: 1, count: 16)
        let first = try PasswordVerifier(password: "pw", salt: salt, parameters: testCost)
        let second = try PasswordVerifier(password: "pw", salt: salt, parameters: testCost)
        #expect(first.hash == second.hash)
        let random1 = try PasswordVerifier(password: "pw", parameters: testCost)
        let random2 = try PasswordVerifier(password: "pw", parameters: testCost)
        #expect(random1.salt != random2.salt)
        #expect(random1.hash != random2.hash)
    }

    @Test func hashIsScryptOfThePasswordAndSalt() throws {
        let salt = Array("NaCl".utf8)
        let verifier = try PasswordVerifier(
            password: "password", salt: salt, parameters: .init(log2Rounds: 10, blockSize: 8, parallelism: 16))
        // RFC 7914 §12 vector 2, first 32 bytes.
        #expect(hexString(verifier.hash) == "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162")
    }

    @Test func encodedFormRoundTrips() throws {
        let verifier = try PasswordVerifier(password: "secret", parameters: testCost)
        let decoded = try PasswordVerifier(encoded: verifier.encoded)
        #expect(decoded.encoded == verifier.encoded)
        #expect(decoded.verify("secret"))
        #expect(!decoded.verify("Secret"))
        #expect(verifier.encoded.hasPrefix("$scrypt$ln=4,r=1,p=1$"))
    }

    @Test func descriptionRevealsNeitherSaltNorHash() throws {
        let verifier = try PasswordVerifier(password: "secret", parameters: testCost)
        let salt = Data(verifier.salt).base64EncodedString()
        let hash = Data(verifier.hash).base64EncodedString()
        for text in [verifier.description, verifier.debugDescription, "\(verifier)", String(reflecting: verifier)] {
            #expect(!text.contains(salt) && !text.contains(hash) && !text.contains("secret"))
        }
        #expect(!"\(AccessCredential.password("hunter2"))".contains("hunter2"))
    }

    @Test(arguments: [
        "", "$bcrypt$ln=4,r=1,p=1$AAAA$AAAA", "$scrypt$ln=4,r=1$AAAA$AAAA",
        "$scrypt$ln=40,r=1,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "$scrypt$ln=4,r=1,p=1$!!$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "$scrypt$ln=4,r=1,p=1$AAAA$AAAA",
    ])
    func malformedStoredVerifierIsRejected(encoded: String) {
        let error = #expect(throws: AccessControlError.self) { try PasswordVerifier(encoded: encoded) }
        #expect(error?.code == .invalidVerifier)
    }

    @Test func standardCostIsAtLeastTheRFCInteractiveFloor() {
        #expect(PasswordVerifier.Parameters.standard.log2Rounds >= 14)
        #expect(PasswordVerifier.Parameters.standard.isValid)
    }
}

@Suite struct TokenBucketRateLimiterTests {
    @Test func allowsABurstThenLimits() {
        var limiter = TokenBucketRateLimiter<String>(capacity: 3, refillInterval: .seconds(10))
        for _ in 0..<3 {
            #expect(limiter.retryDelay(for: "a", now: start) == nil)
            limiter.recordFailure(for: "a", now: start)
        }
        #expect(limiter.retryDelay(for: "a", now: start) == .seconds(10))
        #expect(limiter.retryDelay(for: "b", now: start) == nil)
    }

    @Test func refillsOneTokenPerInterval() {
        var limiter = TokenBucketRateLimiter<Int>(capacity: 2, refillInterval: .seconds(10))
        limiter.recordFailure(for: 1, now: start)
        limiter.recordFailure(for: 1, now: start)
        #expect(limiter.retryDelay(for: 1, now: start + .seconds(4)) == .seconds(6))
        #expect(limiter.retryDelay(for: 1, now: start + .seconds(10)) == nil)
        limiter.recordFailure(for: 1, now: start + .seconds(10))
        #expect(limiter.retryDelay(for: 1, now: start + .seconds(10)) != nil)
    }

    @Test func timeGoingBackwardsGrantsNothing() {
        var limiter = TokenBucketRateLimiter<Int>(capacity: 1, refillInterval: .seconds(10))
        limiter.recordFailure(for: 1, now: start + .seconds(100))
        #expect(limiter.retryDelay(for: 1, now: start) != nil)
        #expect(limiter.retryDelay(for: 1, now: start + .seconds(110)) == nil)
    }

    @Test func trackedKeysStayBounded() {
        var limiter = TokenBucketRateLimiter<Int>(capacity: 1, refillInterval: .seconds(60), maxTrackedKeys: 100)
        for key in 0..<10_000 { limiter.recordFailure(for: key, now: start) }
        #expect(limiter.trackedKeyCount <= 100)
        #expect(limiter.retryDelay(for: 9_999, now: start) != nil)
    }

    @Test func failuresWhileEmptyDoNotDigADeeperHole() {
        var limiter = TokenBucketRateLimiter<Int>(capacity: 2, refillInterval: .seconds(10))
        for _ in 0..<50 { limiter.recordFailure(for: 1, now: start) }
        #expect(limiter.retryDelay(for: 1, now: start) == .seconds(10))
    }

    @Test func resetForgetsFailures() {
        var limiter = TokenBucketRateLimiter<Int>(capacity: 1, refillInterval: .seconds(60))
        limiter.recordFailure(for: 1, now: start)
        limiter.reset(1)
        #expect(limiter.retryDelay(for: 1, now: start) == nil)
    }
}

@Suite struct AccessControllerTests {
    let viewer = Curve25519.Signing.PrivateKey().publicKey

    func controller() throws -> AccessController<String> {
        AccessController(
            passwordVerifier: try PasswordVerifier(password: "open sesame", parameters: testCost),
            viewerLimiter: .init(capacity: 2, refillInterval: .seconds(60)),
            sourceLimiter: .init(capacity: 3, refillInterval: .seconds(60)))
    }

    @Test func rightPasswordIsGranted() throws {
        var access = try controller()
        #expect(try access.authorize(viewer: viewer, source: "10.0.0.2", credential: .password("open sesame"), now: start)
            == .password)
    }

    @Test func wrongPasswordIsDenied() throws {
        var access = try controller()
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: "10.0.0.2", credential: .password("guess"), now: start)
        }
        #expect(error?.code == .denied)
    }

    @Test func repeatedFailuresFromOneViewerKeyAreRateLimitedEvenWithTheRightPassword() throws {
        var access = try controller()
        for source in ["a", "b"] {
            _ = try? access.authorize(viewer: viewer, source: source, credential: .password("guess"), now: start)
        }
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: "c", credential: .password("open sesame"), now: start)
        }
        #expect(error?.code == .rateLimited)
        #expect(error?.retryAfter == .seconds(60))
        #expect(try access.authorize(
            viewer: viewer, source: "c", credential: .password("open sesame"), now: start + .seconds(60)) == .password)
    }

    @Test func repeatedFailuresFromOneSourceAreRateLimitedAcrossViewerKeys() throws {
        var access = try controller()
        for _ in 0..<3 {
            let freshViewer = Curve25519.Signing.PrivateKey().publicKey
            _ = try? access.authorize(viewer: freshViewer, source: "203.0.113.9", credential: .password("x"), now: start)
        }
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: "203.0.113.9", credential: .password("open sesame"), now: start)
        }
        #expect(error?.code == .rateLimited)
        #expect(try access.authorize(viewer: viewer, source: "198.51.100.1", credential: .password("open sesame"), now: start)
            == .password)
    }

    @Test func pairedViewerKeyIsGrantedWithoutPassword() throws {
        var access = try controller()
        access.pair(viewer)
        #expect(access.isPaired(viewer))
        #expect(try access.authorize(viewer: viewer, source: "s", credential: .pairedKey, now: start) == .pairedKey)
        access.unpair(viewer)
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: "s", credential: .pairedKey, now: start)
        }
        #expect(error?.code == .denied)
    }

    @Test func unpairedKeyIsDenied() throws {
        var access = try controller()
        access.pair(Curve25519.Signing.PrivateKey().publicKey)
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: "s", credential: .pairedKey, now: start)
        }
        #expect(error?.code == .denied)
    }

    @Test func withoutAPasswordSetPasswordsAreDenied() throws {
        var access = AccessController<String>(passwordVerifier: nil)
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: "s", credential: .password(""), now: start)
        }
        #expect(error?.code == .denied)
    }
}
