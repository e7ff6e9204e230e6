import NIOCore
import SourceLimits
import Testing
@testable import Traversal

@Suite struct ProbeBudgetTests {
    /// `budget.spend`, callable inside `#expect`.
    func spend(_ budget: inout ProbeBudget, _ bytes: Int, to address: SocketAddress) -> Bool {
        budget.spend(bytes, to: address)
    }

    let thirdParty = try! SocketAddress(ipAddress: "192.0.2.9", port: 4000)
    let requester = try! SocketAddress(ipAddress: "198.51.100.7", port: 5000)

    @Test func unvouchedProbesStopAtThreeTimesTheOfferBytes() {
        var budget = ProbeBudget(offerBytes: 100, vouched: nil)
        var sent = 0
        for _ in 0..<1000 where budget.spend(10, to: thirdParty) { sent += 10 }
        #expect(sent == 300)
        #expect(!spend(&budget, 1, to: thirdParty))
    }

    @Test func probesToTheVouchedRequesterAreNotCharged() {
        var budget = ProbeBudget(offerBytes: 10, vouched: SourceAddressKey(requester))
        for port in [5000, 5001, 6000] {
            #expect(spend(&budget, 1000, to: try! SocketAddress(ipAddress: "198.51.100.7", port: port)))
        }
        #expect(budget.bytesLeft == 30)
        #expect(budget.isVouched(requester))
        #expect(!budget.isVouched(thirdParty))
    }

    @Test func probeCountAndAddressCountAreBoundedToo() {
        var budget = ProbeBudget(offerBytes: 1_000_000, vouched: nil, limits: .init(amplification: 3, maxProbes: 5, maxAddresses: 2))
        let a = try! SocketAddress(ipAddress: "192.0.2.1", port: 1)
        let b = try! SocketAddress(ipAddress: "192.0.2.2", port: 1)
        let c = try! SocketAddress(ipAddress: "192.0.2.3", port: 1)
        #expect(spend(&budget, 1, to: a))
        #expect(spend(&budget, 1, to: b))
        #expect(!spend(&budget, 1, to: c), "a third address is refused")
        #expect(spend(&budget, 1, to: a))
        #expect(spend(&budget, 1, to: b))
        #expect(spend(&budget, 1, to: a))
        #expect(!spend(&budget, 1, to: a), "five probes in all")
    }

    @Test func anUnidentifiedVouchVouchesForNothing() {
        let budget = ProbeBudget(offerBytes: 10, vouched: .unidentified)
        #expect(!budget.isVouched(thirdParty))
    }
}
