@testable import Traversal

/// Test helper: bytes from a hex string (whitespace ignored); traps on bad input, tests only.
func hexBytes(_ hex: String) -> [UInt8] {
    let digits = hex.filter { !$0.isWhitespace }
    precondition(digits.count % 2 == 0, "odd hex length")
    var bytes = [UInt8]()
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        bytes.append(UInt8(digits[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

/// Test helper: lower-case hex of bytes.
func hexString(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}

/// Test helper: two channels of one kind, each one's send key being the other's receive key.
func channelPair<Channel: SecureTransportChannel>(_: Channel.Type, keyBytes: (UInt8, UInt8)) -> (Channel, Channel) {
    let forward = NoiseCipherState(key: [UInt8](repeating: keyBytes.0, count: 32))
    let backward = NoiseCipherState(key: [UInt8](repeating: keyBytes.1, count: 32))
    return (Channel(send: forward, receive: backward), Channel(send: backward, receive: forward))
}
