import Crypto
import CUsrsctp
import Foundation
import Synchronization
import Testing
@testable import Traversal
import PeerTestSupport

@Suite(.serialized) struct ZZStallRepro {
    @Test(arguments: 0..<2) func lossyTransfer(run: Int) async throws {
        let (a0, b0, link) = MemoryLink.pair(.init(loss: Double(ProcessInfo.processInfo.environment["LOSS"] ?? "0")!, delay: .milliseconds(20), rateBitsPerSecond: 20_000_000), probeMessageSize: ProcessInfo.processInfo.environment["PROBE"] == "1" ? 1452 : nil)
        let k1 = NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
        let k2 = NoiseCipherState(key: [UInt8](repeating: 2, count: 32))
        let identity = DeviceIdentity.generate()
        let report = ConnectionReport(path: "memory", route: nil, setupMs: 0, requestID: nil, attempts: [])
        let hb = ProcessInfo.processInfo.environment["HB"] != "0"
        let viewer = PeerConnection(role: .viewer, report: report, peerIdentity: identity.publicKey, transport: a0,
                                    channel: SecureDatagramChannel(send: k1, receive: k2), replayOnHello: nil, keepalive: hb ? .seconds(10) : nil)
        let camera = PeerConnection(role: .camera, report: report, peerIdentity: identity.publicKey, transport: b0,
                                    channel: SecureDatagramChannel(send: k2, receive: k1), replayOnHello: nil, keepalive: hb ? .seconds(10) : nil)
        let (a, b) = try await PeerChannelTests.channelPair(viewer, camera)
        let total = 4 << 20
        let started = ContinuousClock.now
        let got = Atomic<Int>(0)
        let recv = Task {
            for try await m in b.messages {
                got.add(m.count, ordering: .relaxed)
                if got.load(ordering: .relaxed) >= total { return }
            }
        }
        let send = Task {
            var left = total
            while left > 0 { let n = min(65536, left); try await a.send([UInt8](repeating: 7, count: n)); left -= n }
        }
        var last = -1
        var sameFor = 0
        while !(recv.isCancelled) {
            try await Task.sleep(for: .seconds(1))
            let g = got.load(ordering: .relaxed)
            print("run \(run) t=\((ContinuousClock.now - started)) got=\(g) buffered=\(a.bufferedAmount) v=\(String(describing: viewer.channelPathStatus)) c=\(String(describing: camera.channelPathStatus)) dropped=\(link.dropped.load(ordering: .relaxed))")
            if g >= total { break }
            if g == last { sameFor += 1 } else { sameFor = 0 }
            last = g
            if sameFor >= 10 { Issue.record("stalled at \(g)"); break }
        }
        var st = sctpstat()
        usrsctp_get_stat(&st)
        print("STATS run \(run) sent packets=\(st.sctps_outpackets) retrans=\(st.sctps_sendretransdata) fastretrans=\(st.sctps_sendfastretrans) T3=\(st.sctps_timodata) winprobe=\(st.sctps_timowindowprobe) sacktimer=\(st.sctps_timosack) markedretrans=\(st.sctps_markedretrans) dupdata=\(st.sctps_recvdupdata) dropped=\(link.dropped.load(ordering: .relaxed)) sent=\(link.sent.load(ordering: .relaxed))")
        recv.cancel(); send.cancel()
        await viewer.close(); await camera.close()
    }
}
