import Crypto
import Foundation
import NIOCore
import SourceLimits
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
    static let attacker = SourceAddressKey(ipv4: 0xCB00_7109)  // 203.0.113.9
    static let other = SourceAddressKey(ipv4: 0xC633_6401)  // 198.51.100.1

    func controller(perSource: Int = 3, freeFailures: Int = 100, concurrent: Int = 1, waiting: Int = 8) throws -> AccessController {
        AccessController(
            passwordVerifier: try PasswordVerifier(password: "open sesame", parameters: testCost),
            limits: PasswordAttemptLimits(
                perSource: .init(capacity: perSource, refillInterval: .seconds(60)),
                perCamera: FailureBackoff(freeFailures: freeFailures, initialDelay: .seconds(2), maxDelay: .seconds(600),
                                          forgetAfter: .seconds(3600)),
                maxConcurrentChecks: concurrent, maxWaitingChecks: waiting))
    }

    /// The source key of `address:port` as a socket reports it.
    static func source(_ address: String, port: Int) throws -> SourceAddressKey {
        SourceAddressKey(try SocketAddress(ipAddress: address, port: port))
    }

    @Test func rightPasswordIsGranted() throws {
        var access = try controller()
        #expect(try access.authorize(viewer: viewer, source: Self.other, credential: .password("open sesame"), now: start)
            == .password)
    }

    @Test func wrongPasswordIsDenied() throws {
        var access = try controller()
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: Self.other, credential: .password("guess"), now: start)
        }
        #expect(error?.code == .denied)
    }

    @Test func guessesFromOneAddressAreLimitedAcrossPortsAndViewerKeys() throws {
        var access = try controller()
        for port in 40_000..<40_003 {
            let freshViewer = Curve25519.Signing.PrivateKey().publicKey
            let error = #expect(throws: AccessControlError.self) {
                try access.authorize(viewer: freshViewer, source: try Self.source("203.0.113.9", port: port),
                                     credential: .password("guess \(port)"), now: start)
            }
            #expect(error?.code == .denied)
        }
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: try Self.source("203.0.113.9", port: 50_000),
                                 credential: .password("open sesame"), now: start)
        }
        #expect(error?.code == .rateLimited)
        #expect(error?.retryAfter == .seconds(60))
        #expect(try access.authorize(viewer: viewer, source: Self.other, credential: .password("open sesame"), now: start)
            == .password)
        #expect(try access.authorize(viewer: viewer, source: Self.attacker, credential: .password("open sesame"),
                                     now: start + .seconds(60)) == .password)
    }

    @Test func guessesFromAcrossOneIPv6SlashSixtyFourCountTogether() throws {
        var access = try controller()
        for host in 1...3 {
            _ = try? access.authorize(viewer: viewer, source: try Self.source("2001:db8:5:6::\(host)", port: 1000 + host),
                                      credential: .password("x"), now: start)
        }
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: try Self.source("2001:db8:5:6:ffff:1:2:3", port: 9),
                                 credential: .password("open sesame"), now: start)
        }
        #expect(error?.code == .rateLimited)
        #expect(try access.authorize(viewer: viewer, source: try Self.source("2001:db8:5:7::1", port: 9),
                                     credential: .password("open sesame"), now: start) == .password)
    }

    @Test func guessesFromManyAddressesBackTheWholeCameraOffExponentially() throws {
        var access = try controller(perSource: 100, freeFailures: 2)
        for i in 0..<2 {
            _ = try? access.authorize(viewer: viewer, source: SourceAddressKey(ipv4: 0x0A00_0000 + UInt32(i)),
                                      credential: .password("x"), now: start)
        }
        #expect(access.admissionDelay(source: Self.other, now: start) == nil)
        var now = start
        var delays: [Duration] = []
        for i in 2..<6 {
            _ = try? access.authorize(viewer: viewer, source: SourceAddressKey(ipv4: 0x0A00_0000 + UInt32(i)),
                                      credential: .password("x"), now: now)
            let delay = try #require(access.admissionDelay(source: Self.other, now: now))
            delays.append(delay)
            now += delay
        }
        #expect(delays == [.seconds(2), .seconds(4), .seconds(8), .seconds(16)])
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: Self.other, credential: .password("open sesame"), now: now - .seconds(1))
        }
        #expect(error?.code == .rateLimited)
        #expect(try access.authorize(viewer: viewer, source: Self.other, credential: .password("open sesame"), now: now) == .password)
    }

    @Test func pairedKeyIsGrantedWhilePasswordsAreBackedOff() throws {
        var access = try controller(perSource: 1, freeFailures: 0)
        access.pair(viewer)
        _ = try? access.authorize(viewer: viewer, source: Self.attacker, credential: .password("x"), now: start)
        #expect(access.admissionDelay(source: Self.attacker, now: start) != nil)
        #expect(try access.authorize(viewer: viewer, source: Self.attacker, credential: .pairedKey, now: start) == .pairedKey)
    }

    @Test func passwordChecksBeyondTheConcurrencyCapWaitInABoundedQueue() throws {
        var access = try controller(concurrent: 1, waiting: 1)
        guard case .check = access.admitPasswordCheck(from: Self.attacker, now: start) else {
            Issue.record("the first check was not admitted")
            return
        }
        guard case .wait = access.admitPasswordCheck(from: Self.other, now: start) else {
            Issue.record("a second check did not wait")
            return
        }
        guard case .refused(let busy) = access.admitPasswordCheck(from: Self.other, now: start) else {
            Issue.record("a third check was let into a full queue")
            return
        }
        #expect(busy.code == .rateLimited)
        let verdict = access.finishPasswordCheck(from: Self.attacker, matched: false, now: start)
        #expect(verdict.failure?.code == .denied)
        let handedOn = access.releaseCheckSlot()
        #expect(handedOn, "the slot goes to the waiting attempt")
        guard case .check = access.resumeWaitingCheck(from: Self.other, now: start) else {
            Issue.record("the waiting attempt was not checked")
            return
        }
        #expect(access.checksInFlight == 1 && access.checksWaiting == 0)
        let handedOnAgain = access.releaseCheckSlot()
        #expect(!handedOnAgain)
        #expect(access.checksInFlight == 0)
    }

    @Test func aWaitingAttemptWhoseSourceWasBackedOffMeanwhileIsRefused() throws {
        var access = try controller(perSource: 1)
        _ = access.admitPasswordCheck(from: Self.attacker, now: start)
        guard case .wait = access.admitPasswordCheck(from: Self.attacker, now: start) else {
            Issue.record("a second check did not wait")
            return
        }
        _ = access.finishPasswordCheck(from: Self.attacker, matched: false, now: start)
        let handedOn = access.releaseCheckSlot()
        #expect(handedOn)
        guard case .refused(let error) = access.resumeWaitingCheck(from: Self.attacker, now: start) else {
            Issue.record("a backed-off source was checked")
            return
        }
        #expect(error.code == .rateLimited)
    }

    @Test func pairedViewerKeyIsGrantedWithoutPassword() throws {
        var access = try controller()
        access.pair(viewer)
        #expect(access.isPaired(viewer))
        #expect(try access.authorize(viewer: viewer, source: Self.other, credential: .pairedKey, now: start) == .pairedKey)
        access.unpair(viewer)
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: Self.other, credential: .pairedKey, now: start)
        }
        #expect(error?.code == .denied)
    }

    @Test func unpairedKeyIsDenied() throws {
        var access = try controller()
        access.pair(Curve25519.Signing.PrivateKey().publicKey)
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: Self.other, credential: .pairedKey, now: start)
        }
        #expect(error?.code == .denied)
    }

    @Test func withoutAPasswordSetPasswordsAreDenied() throws {
        var access = AccessController(passwordVerifier: nil)
        let error = #expect(throws: AccessControlError.self) {
            try access.authorize(viewer: viewer, source: Self.other, credential: .password(""), now: start)
        }
        #expect(error?.code == .denied)
    }
}

@Suite struct FailureBackoffTests {
    @Test func freeFailuresThenDoublingUpToTheCap() {
        var backoff = FailureBackoff(freeFailures: 1, initialDelay: .seconds(1), maxDelay: .seconds(4), forgetAfter: .seconds(60))
        backoff.recordFailure(now: start)
        #expect(backoff.retryDelay(now: start) == nil)
        var delays: [Duration?] = []
        for _ in 0..<4 {
            backoff.recordFailure(now: start)
            delays.append(backoff.retryDelay(now: start))
        }
        #expect(delays == [.seconds(1), .seconds(2), .seconds(4), .seconds(4)])
    }

    @Test func failuresAreForgottenOnlyAfterAQuietPeriod() {
        var backoff = FailureBackoff(freeFailures: 1, initialDelay: .seconds(1), maxDelay: .seconds(8), forgetAfter: .seconds(60))
        for _ in 0..<3 { backoff.recordFailure(now: start) }
        backoff.recordFailure(now: start + .seconds(59))
        #expect(backoff.retryDelay(now: start + .seconds(59)) == .seconds(4))
        backoff.recordFailure(now: start + .seconds(200))
        #expect(backoff.failures == 1)
        #expect(backoff.retryDelay(now: start + .seconds(200)) == nil)
    }
}

extension Result {
    /// The error of a failure, `nil` for a success.
    var failure: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}
