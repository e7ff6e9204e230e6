#if canImport(Glibc)
import Glibc
#endif

/// A failed socket or system call, with a message for logs and terminals.
public struct DatagramIOError: Error, CustomStringConvertible {
    /// What went wrong.
    public var description: String
    /// The `errno` of the failed call, 0 when none applies.
    public var errno: Int32

    /// Wraps a message.
    public init(_ description: String) {
        self.description = description
        self.errno = 0
    }

    /// Names the failed `call` and its `errno`.
    public init(_ call: String, errno: Int32) {
        self.description = "\(call): \(String(cString: strerror(errno)))"
        self.errno = errno
    }
}
