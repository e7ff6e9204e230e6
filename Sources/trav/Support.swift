import Dispatch
import ArgumentParser
import Foundation
import NIOCore
import STUNLite
import Traversal

#if canImport(Glibc)
import Glibc
#endif

/// Waits until SIGINT or SIGTERM arrives.
func waitForTermination() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let once = ResumeOnce(continuation)
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { once.resume() }
            source.resume()
            SignalSources.keep(source)
        }
    }
}

private final class ResumeOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Void, Never>?
    init(_ c: CheckedContinuation<Void, Never>) { continuation = c }
    func resume() {
        lock.lock()
        let c = continuation
        continuation = nil
        lock.unlock()
        c?.resume()
    }
}

private enum SignalSources {
    nonisolated(unsafe) static var sources: [any DispatchSourceSignal] = []
    static func keep(_ s: any DispatchSourceSignal) { sources.append(s) }
}

/// Resolves `HOST[:PORT]` (a name, an IPv4 address, or `[IPv6]`) to a transport address.
func resolve(_ text: String, defaultPort: UInt16) throws -> TransportAddress {
    if let a = TransportAddress(text, defaultPort: defaultPort) { return a }
    var host = text
    var port = defaultPort
    if let colon = text.lastIndex(of: ":"), let p = UInt16(text[text.index(after: colon)...]) {
        host = String(text[..<colon])
        port = p
    }
    let resolved = try SocketAddress.makeAddressResolvingHost(host, port: Int(port))
    guard let a = TransportAddress(resolved) else { throw CLIError("cannot resolve \(text)") }
    return a
}

/// A command-line failure with a message for people.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Prints an Encodable as one line of JSON with sorted keys.
func printJSON(_ value: some Encodable) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

extension TimeAmount {
    /// Milliseconds as a Double.
    var milliseconds: Double { Double(nanoseconds) / 1_000_000 }
}

/// Prints a status line and flushes at once, so a supervising process reading a pipe sees it.
func say(_ line: String) {
    print(RemoteText.printable(line))
    fflush(nil)
}

/// The IP addresses of a repeatable option that takes at most one address per family (dual stack);
/// a `ValidationError` naming `option` otherwise.
func addressesPerFamily(_ values: [String], option: String) throws(ValidationError) -> [IPAddress] {
    var seen: Set<Bool> = []
    return try values.map { (text) throws(ValidationError) -> IPAddress in
        guard let ip = IPAddress(text) else { throw ValidationError("\(option) must be an IP address, got \(text)") }
        guard seen.insert(ip.isIPv4).inserted else { throw ValidationError("\(option): at most one IPv4 and one IPv6 address") }
        return ip
    }
}
