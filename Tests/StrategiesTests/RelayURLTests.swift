import STUNLite
@testable import Strategies
import Testing
import Traversal

/// The `turn:` / `turns:` URLs of a relay grant (RFC 7065) and which one each transport picks.
struct RelayURLTests {
    @Test func parsesSchemeAddressAndTransport() throws {
        let udp = try #require(RelayURL("turn:192.0.2.1:3479?transport=udp"))
        #expect(!udp.secure && udp.transport == "udp" && udp.address == TransportAddress("192.0.2.1:3479"))
        let tcp = try #require(RelayURL("turn:192.0.2.1:3479?transport=tcp"))
        #expect(!tcp.secure && tcp.transport == "tcp")
        let tls = try #require(RelayURL("turns:[2001:db8::1]:443"))
        #expect(tls.secure && tls.transport == "tcp" && tls.address == TransportAddress("[2001:db8::1]:443"))
        #expect(RelayURL("turn:192.0.2.1")?.address.port == 3478, "RFC 7065 default port")
        #expect(RelayURL("turns:192.0.2.1")?.address.port == 5349, "RFC 7065 default port")
    }

    @Test func refusesWhatIsNotARelayURL() {
        for text in ["stun:192.0.2.1:3478", "https://192.0.2.1", "turn:", "turn:not-an-ip:3478", ""] {
            #expect(RelayURL(text) == nil, "\(text)")
        }
    }

    @Test func eachTransportPicksItsURL() throws {
        let grant = RelayGrant(urls: ["turn:192.0.2.1:3479?transport=udp", "turn:192.0.2.1:3479?transport=tcp", "turns:192.0.2.1:5350"],
                               username: "1:x", password: "p", expires: 1)
        #expect(TLSRelay(transport: .tls).server(in: grant)?.0 == TransportAddress("192.0.2.1:5350"))
        #expect(TLSRelay(transport: .udp).server(in: grant)?.0 == TransportAddress("192.0.2.1:3479"))
        #expect(TLSRelay(transport: .tcp).server(in: grant)?.0 == TransportAddress("192.0.2.1:3479"))
        let udpOnly = RelayGrant(urls: ["turn:192.0.2.1:3479?transport=udp"], username: "1:x", password: "p", expires: 1)
        #expect(TLSRelay(transport: .tls).server(in: udpOnly) == nil)
    }
}
