import Foundation
import FuzzTargets
import PeerTestSupport
import Testing

/// The fuzz targets without libFuzzer: every committed corpus input (seeds and the inputs that once
/// crashed a parser) and a bounded number of deterministic mutations of them pass every target.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/Corpus")

    static func inputs(_ target: FuzzTarget) throws -> [[UInt8]] {
        let directory = corpus.appendingPathComponent(target.name)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        return try names.map { Array(try Data(contentsOf: directory.appendingPathComponent($0))) }
    }

    @Test(arguments: FuzzTargets.all.map(\.name))
    func committedCorpusPassesItsTarget(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        let inputs = try Self.inputs(target)
        #expect(!inputs.isEmpty, "Fuzz/Corpus/\(name) is empty")
        for input in inputs { target.run(input) }
    }

    /// 300 mutations per target (flipped, inserted, deleted bytes and splices), the same on every run.
    @Test(arguments: FuzzTargets.all.map(\.name))
    func mutatedCorpusInputsPassItsTarget(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        let inputs = try Self.inputs(target)
        var random = SplitMix64(seed: 0x7472_6176)
        for _ in 0..<300 {
            var bytes = inputs[Int(random.next() % UInt64(inputs.count))]
            for _ in 0...(random.next() % 4) {
                let at = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
                switch random.next() % 4 {
                case 0 where !bytes.isEmpty: bytes[at] ^= UInt8(truncatingIfNeeded: random.next() | 1)
                case 1: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: at)
                case 2 where !bytes.isEmpty: bytes.remove(at: at)
                default:
                    let other = inputs[Int(random.next() % UInt64(inputs.count))]
                    bytes = Array(bytes.prefix(at)) + other.suffix(other.count / 2)
                }
            }
            target.run(bytes)
        }
    }
}
