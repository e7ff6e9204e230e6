/// A machine-readable error code: a stable kebab-case name, compared by value.
///
/// Errors in Traversal are structs holding a code (so adding a code never breaks a caller's
/// exhaustive `switch`) plus a human-readable detail.
public protocol ErrorCode: Hashable, Sendable, CustomStringConvertible {
    /// The stable kebab-case name of the code, as it appears in logs.
    var name: String { get }
}

extension ErrorCode {
    /// The code's name.
    public var description: String { name }
}

/// An error that carries an ``ErrorCode`` and a detail message.
public protocol CodedError: Error, CustomStringConvertible {
    /// The type of this error's code.
    associatedtype Code: ErrorCode
    /// What went wrong, as a stable code.
    var code: Code { get }
    /// Human-readable detail (never contains secrets).
    var detail: String { get }
}

extension CodedError {
    /// `"<type>(<code>): <detail>"`.
    public var description: String { "\(Self.self)(\(code.name)): \(detail)" }
}
