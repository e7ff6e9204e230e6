import Strategies
import Testing
import Traversal

/// Several introducers as one: renewal of a relay grant goes to the one that can renew it.
struct FirstAnsweringTests {
    /// An introducer that never answers and renews grants by adding `extra` seconds, or cannot renew (`extra == nil`).
    struct Renewer: ViewerSignalling {
        var extra: Int?
        func introduce(to device: DeviceID, offer: PeerOffer) async throws -> Introduction {
            throw TraversalError(code: .unavailable, detail: "silent")
        }
        func renewRelay(_ grant: RelayGrant) async throws -> RelayGrant {
            guard let extra else { throw CloudError(code: .badRequest, detail: "cannot renew") }
            var renewed = grant
            renewed.expires += extra
            return renewed
        }
    }

    static let grant = RelayGrant(urls: ["turns:192.0.2.1:5349"], username: "100:intro", password: "p", expires: 100)

    @Test func renewalSkipsIntroducersThatCannotRenew() async throws {
        let both = FirstAnswering([Renewer(extra: nil), Renewer(extra: 60)])
        #expect(try await both.renewRelay(Self.grant).expires == 160)
    }

    @Test func renewalFailsWhenNoIntroducerCanRenew() async {
        await #expect(throws: CloudError.self) { try await FirstAnswering([Renewer(extra: nil)]).renewRelay(Self.grant) }
    }
}
