import Testing
import STUNLite
@testable import TURNLite

/// The relay's peer filter: special ranges refused in every spelling, the allow-list overriding (RFC 8656 §21.3).
struct TURNPeerPolicyTests {
    static let refused = [
        "127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1",
        "169.254.169.254", "100.64.0.1", "224.0.0.1", "255.255.255.255", "fc00::1", "fd12::1", "fe80::1", "ff02::1",
        "2002:7f00:1::1", "64:ff9b::7f00:1", "::127.0.0.1", "2002:a00:1::5", "64:ff9b::a9fe:a9fe", "::ffff:10.1.2.3",
        "64:ff9b:1::1", "2001:db8::1", "::ffff:0:8.8.8.8", "::ffff:0:127.0.0.1", "5f00::1", "5f00:ffff::1", "3fff::1",
        "3fff:fff:ffff::1",
    ]
    static let permitted = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"]

    @Test(arguments: refused) func specialAddressIsRefusedByDefault(_ text: String) {
        #expect(!TURNPeerPolicy().permits(IPAddress(text)!), "\(text) should be refused")
    }

    @Test(arguments: permitted) func publicAddressIsPermitted(_ text: String) {
        #expect(TURNPeerPolicy().permits(IPAddress(text)!), "\(text) should be permitted")
    }

    @Test func allowListCoversEverySpellingOfLoopback() {
        let policy = TURNPeerPolicy(allowed: [IPPrefix("127.0.0.0/8")!])
        for text in ["127.0.0.1", "::ffff:127.0.0.1", "2002:7f00:1::1", "64:ff9b::7f00:1"] {
            #expect(policy.permits(IPAddress(text)!), "\(text)")
        }
        #expect(!policy.permits(IPAddress("10.0.0.1")!))
        #expect(!policy.permits(IPAddress("::1")!))
    }

    @Test func normalisationExtractsEmbeddedIPv4() {
        #expect(TURNPeerPolicy.normalised(IPAddress("::ffff:1.2.3.4")!) == IPAddress("1.2.3.4"))
        #expect(TURNPeerPolicy.normalised(IPAddress("2002:0102:0304::9")!) == IPAddress("1.2.3.4"))
        #expect(TURNPeerPolicy.normalised(IPAddress("64:ff9b::1.2.3.4")!) == IPAddress("1.2.3.4"))
        #expect(TURNPeerPolicy.normalised(IPAddress("::1")!) == IPAddress("::1"))
    }

    @Test func prefixesParseAndMatch() {
        #expect(IPPrefix("10.0.0.0/8")!.contains(IPAddress("10.255.0.1")!))
        #expect(!IPPrefix("10.0.0.0/8")!.contains(IPAddress("11.0.0.1")!))
        #expect(IPPrefix("fe80::/10")!.contains(IPAddress("febf::1")!))
        #expect(IPPrefix("0.0.0.0/0")!.contains(IPAddress("9.9.9.9")!))
        #expect(!IPPrefix("0.0.0.0/0")!.contains(IPAddress("::9")!))
        #expect(IPPrefix("1.2.3.4")?.length == 32)
        #expect(IPPrefix("1.2.3.4/33") == nil)
        #expect(IPPrefix("nonsense/8") == nil)
        #expect(IPPrefix("1.2.3.4/x") == nil)
    }
}
