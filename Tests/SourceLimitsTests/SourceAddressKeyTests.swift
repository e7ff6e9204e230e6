import NIOCore
import SourceLimits
import Testing

@Suite struct SourceAddressKeyTests {
    static func key(_ address: String, _ port: Int = 1) throws -> SourceAddressKey {
        SourceAddressKey(try SocketAddress(ipAddress: address, port: port))
    }

    @Test func portsNeverTakePart() throws {
        #expect(try Self.key("192.0.2.7", 1) == Self.key("192.0.2.7", 65_000))
        #expect(try Self.key("192.0.2.7") != Self.key("192.0.2.8"))
    }

    @Test func ipv6AddressesInOneSlashSixtyFourShareAKey() throws {
        #expect(try Self.key("2001:db8:1:2::1") == Self.key("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        #expect(try Self.key("2001:db8:1:2::1") != Self.key("2001:db8:1:3::1"))
        #expect(try Self.key("2001:db8:1:2::1").description == "2001:db8:1:2::/64")
    }

    @Test func ipv4MappedIPv6IsItsIPv4Address() throws {
        #expect(try Self.key("::ffff:192.0.2.7") == Self.key("192.0.2.7"))
        #expect(try Self.key("::ffff:192.0.2.7").description == "192.0.2.7")
        #expect(try Self.key("::ffff:192.0.2.7") != Self.key("::ffff:192.0.2.8"))
    }

    @Test func bytesAndSocketAddressesAgree() throws {
        #expect(try SourceAddressKey(bytes: [192, 0, 2, 7]) == Self.key("192.0.2.7"))
        #expect(SourceAddressKey(bytes: [1, 2, 3]) == nil)
    }
}
