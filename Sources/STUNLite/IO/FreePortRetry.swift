import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Servers that hold one port number on UDP and TCP: a number the kernel picked free for UDP may be
/// taken on TCP (say, the local port of an outgoing connection), so such a server starts over.
package enum FreePortRetry {
    /// Starts tried at most when the port was picked (0) and TCP found it taken.
    package static let attempts = 8

    /// Runs `start` again while it fails with EADDRINUSE and `picked` (the port was 0), at most ``attempts`` times.
    package static func run<T>(picked: Bool, _ start: () async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await start()
            } catch let error as IOError where picked && error.errnoCode == EADDRINUSE && attempt < attempts {
                attempt += 1
            }
        }
    }
}
