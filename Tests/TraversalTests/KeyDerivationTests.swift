import Testing
@testable import Traversal

@Suite struct KeyDerivationTests {
    /// RFC 7914 §12 test vectors 1–3 (the fourth needs 1 GiB and is left out).
    @Test(arguments: [
        ("", "", 16, 1, 1,
         "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"),
        ("password", "NaCl", 1024, 8, 16,
         "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"),
        ("pleaseletmein", "SodiumChloride", 16384, 8, 1,
         "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"),
    ])
    func scryptMatchesRFC7914Vectors(
        password: String, salt: String, rounds: Int, blockSize: Int, parallelism: Int, expected: String
    ) throws {
        let derived = try KeyDerivation.scrypt(
            password: Array(password.utf8), salt: Array(salt.utf8),
            cost: .init(rounds: rounds, blockSize: blockSize, parallelism: parallelism), length: 64)
        #expect(hexString(derived) == expected)
    }

    @Test func constantTimeEqualsComparesContentAndLength() {
        #expect(KeyDerivation.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!KeyDerivation.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!KeyDerivation.constantTimeEquals([0x80, 2, 3], [0, 2, 3]))
        #expect(!KeyDerivation.constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(KeyDerivation.constantTimeEquals([], []))
    }
}
