#if canImport(Glibc)
import Glibc
#endif
import DatagramIO
import STUNLite

/// A failure that stops a flood, with a message for the terminal (the socket layer's error type, so
/// its failures pass through unchanged).
public typealias FloodError = DatagramIOError

/// Clocks the floods read: monotonic time and this process's CPU time.
public enum FloodClock {
    /// Monotonic seconds.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// User plus system CPU seconds of this process.
    public static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// The floods' one network rule: they only ever send to loopback.
public enum FloodTarget {
    /// True for 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8.
    public static func isLoopback(_ ip: IPAddress) -> Bool {
        switch ip {
        case .v4(let a): return a >> 24 == 127
        case .v6(let h, let l): return h == 0 && (l == 1 || l >> 24 == 0xFFFF_7F)
        }
    }

    /// Throws unless `target` is a loopback address with a port.
    public static func check(_ target: TransportAddress) throws(FloodError) {
        guard isLoopback(target.ip) else {
            throw FloodError("refusing to flood \(target): only loopback targets (127.0.0.0/8, ::1) are allowed")
        }
        guard target.port != 0 else { throw FloodError("target port must not be 0") }
    }
}

/// Walks `--name value` command-line arguments.
public struct FloodArguments {
    private var iterator: IndexingIterator<[String]>

    /// Starts at the first argument.
    public init(_ arguments: [String]) { iterator = arguments.makeIterator() }

    /// The next argument, or `nil` at the end.
    public mutating func next() -> String? { iterator.next() }

    /// The value following option `name`.
    public mutating func value(_ name: String) throws(FloodError) -> String {
        guard let v = iterator.next() else { throw FloodError("\(name) needs a value") }
        return v
    }

    /// The numeric value following option `name`.
    public mutating func number<N: LosslessStringConvertible>(_ name: String) throws(FloodError) -> N {
        let text = try value(name)
        guard let n = N(text) else { throw FloodError("\(name): not a number: \(text)") }
        return n
    }

    /// The loopback `IP[:PORT]` following option `name`.
    public mutating func target(_ name: String, defaultPort: UInt16) throws(FloodError) -> TransportAddress {
        let text = try value(name)
        guard let t = TransportAddress(text, defaultPort: defaultPort) else { throw FloodError("\(name): not IP[:PORT]: \(text)") }
        return t
    }
}

/// Number formatting without Foundation, for the floods' reports.
public enum FloodFormat {
    /// Two decimals.
    public static func decimal2(_ x: Double) -> String {
        let hundredths = Int((x * 100).rounded())
        let fraction = abs(hundredths % 100)
        return "\(hundredths < 0 && hundredths > -100 ? "-" : "")\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    /// A share 0…1 as a percentage with two decimals and a `%` sign.
    public static func percent(_ x: Double) -> String { decimal2(x * 100) + "%" }

    /// Writes a line to standard error.
    public static func printError(_ text: String) {
        let line = text + "\n"
        _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }
}
