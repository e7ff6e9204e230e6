/// One parser under fuzzing: any input must return normally (a typed error is fine, a trap is a bug).
public struct FuzzTarget: Sendable {
    /// The name used on the command line and for the corpus directory (`Fuzz/Corpus/<name>`).
    public let name: String
    /// What the target feeds and checks.
    public let summary: String
    /// Runs one input; traps (through ``fuzzCheck(_:_:)``) when a promised property fails.
    public let run: @Sendable ([UInt8]) -> Void
    /// Seed inputs: real messages from our encoders and published vectors, by file name.
    public let seeds: @Sendable () -> [(String, [UInt8])]
}

/// Every target.
public enum FuzzTargets {
    /// All targets, in the order the fuzz script runs them.
    public static let all: [FuzzTarget] = [
        STUNCodecFuzz.target, TURNServerFuzz.target, ChannelDataFuzz.target, CloudFrameFuzz.target,
        LANDiscoveryFuzz.target, NoiseResponderFuzz.target, DataChannelFuzz.target, MediaFuzz.target,
        SessionDescriptionFuzz.target,
    ]

    /// The target with this name.
    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// Stops the run with a message when a property the code promises does not hold.
func fuzzCheck(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz property failed: \(message())") }
}

/// Bytes from hex, ignoring whitespace (for seed vectors).
func hexBytes(_ text: String) -> [UInt8] {
    let digits = text.unicodeScalars.filter { !$0.properties.isWhitespace }.map { Character($0) }
    return stride(from: 0, to: digits.count - 1, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}
