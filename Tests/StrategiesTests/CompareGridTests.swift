import Foundation
import NATLab
import Testing

/// The comparison grid as a test: `trav compare` over every pair of the lab, two raced runs each;
/// every pair must come out as `trav probe` predicts (direct where a direct path exists, relayed
/// otherwise), so a regression in any strategy on any NAT fails here.
@Suite(.serialized, .enabled(if: TravLab.skipReason() == nil, Comment(rawValue: TravLab.skipReason() ?? "")))
struct CompareGridTests {
    struct Row: Decodable {
        var camera: String
        var viewer: String
        var predicted: String
        var predictedDirect: Bool
        var outcome: String
        var winner: String?
        var mismatch: Bool
    }

    @Test func everyPairConnectsAsPredicted() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TravLab.debugTrav)
        p.arguments = ["compare", "--runs", "2", "--race-only", "--json"]  // two runs: the birthday pair is probabilistic
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(600)
        var data = Data()
        while p.isRunning, Date() < deadline {
            data += out.fileHandleForReading.availableData
            try await Task.sleep(for: .milliseconds(100))
        }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        data += out.fileHandleForReading.readDataToEndOfFile()
        #expect(p.terminationStatus == 0)
        let text = String(decoding: data, as: UTF8.self)
        let line = try #require(text.split(separator: "\n").last { $0.hasPrefix("[") }, "no JSON: \(text.suffix(500))")
        let rows = try JSONDecoder().decode([Row].self, from: Data(line.utf8))
        #expect(rows.count >= 12)
        for r in rows {
            #expect(r.outcome == (r.predictedDirect ? "direct" : "relayed"), "\(r.camera) × \(r.viewer): \(r.outcome) via \(r.winner ?? "-"), predicted \(r.predicted)")
            #expect(!r.mismatch, "\(r.camera) × \(r.viewer)")
        }
        #expect(rows.contains { $0.winner == "tls-relay" } && rows.contains { $0.winner == "udp-hole-punch" })
    }
}
