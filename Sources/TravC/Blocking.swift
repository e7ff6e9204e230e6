import CTrav
import Dispatch
import Foundation
import Synchronization
import Traversal

/// A FIFO a C caller waits on with a timeout, fed by async code; bounded, dropping the oldest.
final class BlockingQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var closed = false
    }

    private let state = Mutex(State())
    /// Counts items plus one extra signal per waiter once closed.
    private let available = DispatchSemaphore(value: 0)
    /// Most items kept; the oldest go first beyond it.
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// Appends `item` (dropping the oldest beyond ``limit``) and wakes a waiter.
    func push(_ item: Element) {
        let added = state.withLock { s -> Bool in
            guard !s.closed else { return false }
            s.items.append(item)
            if s.items.count > limit {
                s.items.removeFirst()
                return false
            }
            return true
        }
        if added { available.signal() }
    }

    /// Puts `item` back at the front (a caller's buffer was too small for it).
    func pushFront(_ item: Element) {
        state.withLock { $0.items.insert(item, at: 0) }
        available.signal()
    }

    /// No more items: waiters return `.closed` once the queue is empty.
    func close() {
        state.withLock { $0.closed = true }
        available.signal()
    }

    /// What a wait ended with.
    enum Next {
        case item(Element)
        case timedOut
        case closed
    }

    /// For a C call: `deliver` the next item (its status returned), or the timeout or closed status
    /// with a message naming `what` was awaited and why nothing more comes (`ended`).
    func take(timeoutMs: Int32, what: String, ended: String, _ deliver: (Element) -> Int32) -> Int32 {
        switch pop(timeoutMs: timeoutMs) {
        case .item(let item): return deliver(item)
        case .timedOut: return LastError.set(TRAV_ERR_TIMEOUT, "no \(what) within \(timeoutMs) ms")
        case .closed: return LastError.set(TRAV_ERR_CLOSED, ended)
        }
    }

    /// Moves every element of `sequence` into this queue and closes it when the sequence ends or fails;
    /// the returned task stops it early.
    func fill<S: AsyncSequence & Sendable>(from sequence: S) -> Task<Void, Never> where S.Element == Element {
        Task {
            do { for try await element in sequence { self.push(element) } } catch {}
            self.close()
        }
    }

    /// The next item, waiting at most `timeoutMs` (0 polls, negative waits without limit).
    func pop(timeoutMs: Int32) -> Next {
        let deadline: DispatchTime = timeoutMs < 0 ? .distantFuture : .now() + .milliseconds(Int(timeoutMs))
        while true {
            let taken = state.withLock { s -> Next? in
                if !s.items.isEmpty { return .item(s.items.removeFirst()) }
                return s.closed ? .closed : nil
            }
            if let taken {
                if case .closed = taken { available.signal() }
                return taken
            }
            if available.wait(timeout: deadline) == .timedOut { return .timedOut }
        }
    }
}

/// Runs `body` on the concurrency pool and blocks the calling C thread until it ends or `timeoutMs`
/// passes (then it is cancelled); negative waits without limit.
func blocking<T: Sendable>(timeoutMs: Int32, _ body: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
    let done = DispatchSemaphore(value: 0)
    let result = ResultBox<T>()
    let task = Task {
        let r: Result<T, any Error>
        do {
            if timeoutMs < 0 {
                r = .success(try await body())
            } else {
                r = .success(try await withDeadline(.milliseconds(Int64(timeoutMs)), body))
            }
        } catch {
            r = .failure(error)
        }
        result.value.withLock { $0 = r }
        done.signal()
    }
    done.wait()
    _ = task
    return result.value.withLock { $0 } ?? .failure(CancellationError())
}

/// ``blocking(timeoutMs:_:)`` for a C call that returns only a status.
func blockingStatus(timeoutMs: Int32, _ body: @escaping @Sendable () async throws -> Void) -> Int32 {
    switch blocking(timeoutMs: timeoutMs, body) {
    case .success: return TRAV_OK.rawValue
    case .failure(let error): return LastError.set(error)
    }
}

/// A Swift object handed to C as an opaque pointer, holding one reference until ``release(_:_:)``.
enum Handle {
    /// A retained pointer to `object`, for a C `*out`.
    static func retain(_ object: AnyObject) -> OpaquePointer {
        OpaquePointer(Unmanaged.passRetained(object).toOpaque())
    }

    /// The object behind `pointer` (nil for NULL).
    static func object<T: AnyObject>(_ pointer: OpaquePointer?, as type: T.Type) -> T? {
        pointer.map { Unmanaged<T>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
    }

    /// Runs `close` on the object behind `pointer`, then drops C's reference (NULL is ignored).
    static func release<T: AnyObject>(_ pointer: OpaquePointer?, _ close: (T) -> Void) {
        guard let pointer else { return }
        let unmanaged = Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer))
        close(unmanaged.takeUnretainedValue())
        unmanaged.release()
    }
}

/// Where ``blocking(timeoutMs:_:)``'s task leaves its result for the waiting thread.
final class ResultBox<T: Sendable>: Sendable {
    let value = Mutex<Result<T, any Error>?>(nil)
}

/// The calling thread's last error message, as `trav_last_error` returns it.
enum LastError {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    /// Records `message` for this thread and returns `status`.
    static func set(_ status: trav_status, _ message: String) -> Int32 {
        free(pthread_getspecific(key))
        pthread_setspecific(key, strdup(message))
        return status.rawValue
    }

    /// Records `error`, mapped to its status, and returns the status.
    static func set(_ error: any Error) -> Int32 {
        set(status(of: error), "\(error)")
    }

    /// This thread's message, or "".
    static var current: UnsafePointer<CChar> {
        if let p = pthread_getspecific(key) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
        return empty
    }

    /// "", for a thread with no error yet (never freed).
    nonisolated(unsafe) private static let empty: UnsafePointer<CChar> = UnsafePointer(strdup("")!)

    /// The C status for an error from the library.
    static func status(of error: any Error) -> trav_status {
        switch error {
        case is DeadlineExceeded, is CancellationError:
            return TRAV_ERR_TIMEOUT
        case let e as TraversalError:
            switch e.code {
            case .unavailable: return TRAV_ERR_UNAVAILABLE
            case .noPath: return TRAV_ERR_NO_PATH
            case .accessDenied, .rateLimited: return TRAV_ERR_ACCESS_DENIED
            case .identityMismatch: return TRAV_ERR_IDENTITY
            case .cloud: return TRAV_ERR_CLOUD
            case .closed: return TRAV_ERR_CLOSED
            default: return TRAV_ERR_INTERNAL
            }
        case let e as CloudError:
            return e.code == .unavailable ? TRAV_ERR_UNAVAILABLE : TRAV_ERR_CLOUD
        case is IdentityFileError, is DeviceIDError, is CAPIError:
            return TRAV_ERR_ARGUMENT
        default:
            return TRAV_ERR_INTERNAL
        }
    }
}

/// Copies `text` into a C buffer of `len` bytes, NUL-terminated, cut short if needed.
func copyCString(_ text: String, into buf: UnsafeMutablePointer<CChar>, length len: Int) {
    guard len > 0 else { return }
    let bytes = Array(text.utf8.prefix(len - 1))
    for (i, b) in bytes.enumerated() { buf[i] = CChar(bitPattern: b) }
    buf[bytes.count] = 0
}

/// For a C call that writes text: `text` (nil when the handle was NULL) into `buf` of `len` bytes,
/// NUL-terminated and cut short if needed; `what` names the handle in the error.
func writeText(_ text: String?, into buf: UnsafeMutablePointer<CChar>?, length len: Int, what: String) -> Int32 {
    guard let text, let buf, len > 0 else { return LastError.set(TRAV_ERR_ARGUMENT, "no \(what) or buffer") }
    copyCString(text, into: buf, length: len)
    return TRAV_OK.rawValue
}

/// A C string argument as Swift text, nil when NULL or empty.
func text(_ pointer: UnsafePointer<CChar>?) -> String? {
    guard let pointer, pointer.pointee != 0 else { return nil }
    return String(cString: pointer)
}

extension TravCloud {
    /// The cloud described by C settings.
    init(_ settings: trav_cloud_settings) throws {
        guard let host = text(settings.host) else {
            throw CAPIError("the cloud settings name no host")
        }
        let trust: CloudEndpoint.Trust
        if let pem = text(settings.ca_pem) {
            trust = .pinnedCA(pem)
        } else if let file = text(settings.ca_file) {
            trust = try .pinnedCA(file: file)
        } else {
            trust = .systemDefault
        }
        self.init(host: host, port: settings.port == 0 ? CloudEndpoint.defaultPort : settings.port,
                  stunPort: settings.stun_port == 0 ? TravCloud.defaultSTUNPort : settings.stun_port, trust: trust)
    }
}

/// A bad argument from the C caller.
struct CAPIError: Error, CustomStringConvertible {
    /// What was wrong.
    var description: String

    init(_ description: String) {
        self.description = description
    }
}
