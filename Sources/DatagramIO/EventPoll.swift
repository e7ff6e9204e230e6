#if canImport(Glibc)
import Glibc
#endif

/// A level-triggered Linux `epoll` set of readable descriptors, each named by a number of the caller's.
///
/// Swift's Glibc module leaves out `<sys/epoll.h>`: the three calls are looked up in the C library at
/// run time and `struct epoll_event` is laid out by hand (packed, 12 bytes, on x86-64; 16 elsewhere).
/// Thousands of sockets cost one `epoll_wait` per round instead of one `poll` entry each. Used from one
/// thread at a time.
public final class EventPoll {
    private typealias Create = @convention(c) (Int32) -> Int32
    private typealias Control = @convention(c) (Int32, Int32, Int32, UnsafeMutableRawPointer?) -> Int32
    private typealias Wait = @convention(c) (Int32, UnsafeMutableRawPointer?, Int32, Int32) -> Int32

    #if arch(x86_64)
    private static let eventSize = 12
    private static let dataOffset = 4
    #else
    private static let eventSize = 16
    private static let dataOffset = 8
    #endif
    /// `EPOLLIN` and `EPOLL_CTL_ADD`.
    private static let readable: UInt32 = 1
    private static let add: Int32 = 1

    private let fd: Int32
    private let control: Control
    private let wait: Wait
    private let events: UnsafeMutableRawBufferPointer
    /// Events one ``wait(milliseconds:)`` returns at most.
    public let capacity: Int

    /// Opens an empty set that reports up to `capacity` ready descriptors per wait.
    public init(capacity: Int) throws(DatagramIOError) {
        guard let handle = dlopen(nil, RTLD_NOW), let create = dlsym(handle, "epoll_create1"),
              let control = dlsym(handle, "epoll_ctl"), let wait = dlsym(handle, "epoll_wait") else {
            throw DatagramIOError("epoll not found in the C library")
        }
        let fd = unsafeBitCast(create, to: Create.self)(Int32(O_CLOEXEC))
        guard fd >= 0 else { throw DatagramIOError("epoll_create1", errno: errno) }
        self.fd = fd
        self.control = unsafeBitCast(control, to: Control.self)
        self.wait = unsafeBitCast(wait, to: Wait.self)
        self.capacity = capacity
        events = .allocate(byteCount: capacity * Self.eventSize, alignment: 8)
    }

    deinit {
        events.deallocate()
        close(fd)
    }

    /// Watches `descriptor` for input; ``wait(milliseconds:)`` reports it as `token`.
    public func watch(_ descriptor: Int32, token: UInt64) throws(DatagramIOError) {
        var event = [UInt8](repeating: 0, count: Self.eventSize)
        event.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Self.readable, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: token, toByteOffset: Self.dataOffset, as: UInt64.self)
        }
        let result = event.withUnsafeMutableBytes { control(fd, Self.add, descriptor, $0.baseAddress) }
        guard result == 0 else { throw DatagramIOError("epoll_ctl", errno: errno) }
    }

    /// Waits up to `milliseconds` (0: not at all) and returns how many tokens ``token(_:)`` now holds.
    public func wait(milliseconds: Int32) -> Int {
        let n = wait(fd, events.baseAddress, Int32(capacity), milliseconds)
        return max(0, Int(n))
    }

    /// The token of ready descriptor `i` of the last wait.
    public func token(_ i: Int) -> UInt64 {
        events.loadUnaligned(fromByteOffset: i * Self.eventSize + Self.dataOffset, as: UInt64.self)
    }
}
