import Crypto
import Foundation
import Testing
@testable import Traversal

/// A fixed identity key, so the UID in these tests is stable.
private let fixedKey = try! Curve25519.Signing.PrivateKey(
    rawRepresentation: hexBytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")).publicKey

@Suite struct DeviceIDTests {
    @Test func printedFormIsPrefixAndFourGroupsOfFour() {
        let text = DeviceID(publicKey: fixedKey).description
        let groups = text.split(separator: "-")
        #expect(groups.count == 5)
        #expect(groups.first == "TRAV")
        #expect(groups.dropFirst().allSatisfy { $0.count == 4 })
        #expect(text.allSatisfy { "TRAV-0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains($0) })
    }

    @Test func derivationIsDeterministicAndKeySpecific() {
        let first = DeviceID(publicKey: fixedKey)
        #expect(DeviceID(publicKey: fixedKey) == first)
        let other = Curve25519.Signing.PrivateKey().publicKey
        #expect(DeviceID(publicKey: other) != first)
    }

    @Test func parsesItsOwnPrintedForm() throws {
        let id = DeviceID(publicKey: fixedKey)
        #expect(try DeviceID(id.description) == id)
    }

    @Test func parsingIgnoresCaseDashesAndWhitespace() throws {
        let id = DeviceID(publicKey: fixedKey)
        let sloppy = " " + id.description.lowercased().replacingOccurrences(of: "-", with: "") + "\n"
        #expect(try DeviceID(sloppy) == id)
        let spaced = id.description.replacingOccurrences(of: "-", with: " ")
        #expect(try DeviceID(spaced) == id)
        let bodyOnly = String(id.description.dropFirst(5))
        #expect(try DeviceID(bodyOnly) == id)
    }

    @Test func parsingAcceptsCrockfordAliases() throws {
        let id = DeviceID(publicKey: fixedKey)
        let aliased = id.description.dropFirst(5).replacingOccurrences(of: "0", with: "O")
            .replacingOccurrences(of: "1", with: "l")
        #expect(try DeviceID("TRAV-" + aliased) == id)
    }

    @Test func everySingleSymbolTypoIsDetected() throws {
        let body = Array(String(DeviceID(publicKey: fixedKey).description.dropFirst(5)).filter { $0 != "-" })
        let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        for position in body.indices {
            for replacement in alphabet where replacement != body[position] {
                var typo = body
                typo[position] = replacement
                let error = #expect(throws: DeviceIDError.self) { try DeviceID("TRAV" + String(typo)) }
                #expect(error?.code == .checksumMismatch)
            }
        }
    }

    @Test func everyTranspositionOfDifferentSymbolsIsDetected() {
        let body = Array(String(DeviceID(publicKey: fixedKey).description.dropFirst(5)).filter { $0 != "-" })
        for first in body.indices {
            for second in body.indices where second > first && body[first] != body[second] {
                var swapped = body
                swapped.swapAt(first, second)
                #expect(throws: DeviceIDError.self) { try DeviceID("TRAV" + String(swapped)) }
            }
        }
    }

    @Test func wrongLengthIsRejectedWithItsCode() {
        let error = #expect(throws: DeviceIDError.self) { try DeviceID("TRAV-1234-5678") }
        #expect(error?.code == .invalidLength)
        let long = #expect(throws: DeviceIDError.self) { try DeviceID("TRAV-0000-0000-0000-0000-0") }
        #expect(long?.code == .invalidLength)
    }

    @Test func characterOutsideAlphabetIsRejectedWithItsCode() {
        let error = #expect(throws: DeviceIDError.self) { try DeviceID("TRAV-U000-0000-0000-0000") }
        #expect(error?.code == .invalidCharacter)
        let accented = #expect(throws: DeviceIDError.self) { try DeviceID("TRAV-00é0-0000-0000-000") }
        #expect(accented?.code == .invalidCharacter)
    }

    @Test func matchesOnlyItsOwnKey() {
        let id = DeviceID(publicKey: fixedKey)
        #expect(id.matches(publicKey: fixedKey))
        #expect(!id.matches(publicKey: Curve25519.Signing.PrivateKey().publicKey))
    }

    @Test func checkSymbolZeroesTheSyndrome() {
        let payload: [UInt8] = [3, 31, 0, 7, 12, 19, 1, 30, 2, 8, 16, 4, 9, 27, 5]
        let check = GF32.checkSymbol(for: payload)
        #expect(GF32.syndrome(of: payload + [check]) == 0)
        #expect(GF32.syndrome(of: payload + [check ^ 1]) != 0)
    }
}
