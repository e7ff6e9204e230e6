extension FixedWidthInteger {
    /// Big-endian bytes (network byte order), as the session's and presence's headers carry integers.
    var bigEndianBytes: [UInt8] { withUnsafeBytes(of: bigEndian) { Array($0) } }

    /// The value of big-endian `bytes` (as many as the type holds).
    init(bigEndianBytes bytes: ArraySlice<UInt8>) {
        self = bytes.reduce(0) { $0 << 8 | Self($1) }
    }
}
