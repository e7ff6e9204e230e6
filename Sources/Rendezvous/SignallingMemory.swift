#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(CustomByteBufferAllocator) import NIOCore

/// What one signalling connection is allowed to hold in memory, and the allocators that keep it there.
///
/// An idle camera's TLS connection is the cloud's largest per-camera cost. `NIOSSLHandler` allocates a 32 KiB
/// plaintext read buffer and a 16 KiB ciphertext write buffer per connection and keeps both for its life; signalling
/// messages are a few hundred bytes, so almost all of those pages are never written. ``lazyPagesAllocator`` returns
/// the untouched pages of such buffers to the kernel at allocation, so they cost memory only once written, and
/// ``receiveAllocator`` bounds the buffer the channel reads the socket into (and keeps between reads).
enum SignallingMemory {
    /// Bytes the channel reads from the socket at once, and keeps allocated between reads: 1 KiB. A ClientHello or
    /// a signalling message larger than this takes several reads (NIO reads up to 4 times per wake-up), which
    /// costs a few syscalls for the rare large message; the adaptive default (2 KiB, growing to 64 KiB and kept
    /// at its largest) costs memory on every idle connection.
    static let receiveBufferBytes = 1024

    /// The socket read buffer of a signalling connection: fixed at ``receiveBufferBytes``.
    static var receiveAllocator: FixedSizeRecvByteBufferAllocator { .init(capacity: receiveBufferBytes) }

    /// Allocations at least this large (16 KiB: `NIOSSLHandler`'s record-sized buffers) give their whole pages
    /// back to the kernel when allocated; smaller ones are plain `malloc`.
    static let lazyPagesThreshold = 16 * 1024

    /// A `ByteBufferAllocator` whose large buffers cost resident memory only for the pages written: see
    /// ``lazyPagesThreshold``; such buffers start on a page. The pages released read as zeros, and the allocator's
    /// memory is the C heap's (`free` and `realloc` take it), so buffers from it mix freely with any other `ByteBuffer`.
    static let lazyPagesAllocator = ByteBufferAllocator(
        allocate: { size in
            guard size >= SignallingMemory.lazyPagesThreshold else { return malloc(size) }
            // Page-aligned, so a buffer whose writes stay within its first few bytes costs one page, not two.
            var pointer: UnsafeMutableRawPointer?
            guard posix_memalign(&pointer, SignallingMemory.pageSize, size) == 0, let pointer else { return nil }
            releasePages(pointer, from: 0, to: size)
            return pointer
        },
        reallocate: { pointer, oldSize, newSize in
            let moved = realloc(pointer, newSize)
            // Only the bytes past the old size are unwritten (realloc copied the rest).
            if let moved, newSize >= SignallingMemory.lazyPagesThreshold, newSize > oldSize {
                releasePages(moved, from: oldSize, to: newSize)
            }
            return moved
        },
        deallocate: { free($0) },
        copy: { destination, source, count in destination.copyMemory(from: source, byteCount: count) })

    /// The size of a memory page.
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Returns the whole pages of `pointer[from..<to]` to the kernel (`MADV_DONTNEED`: they read as zeros when next
    /// touched); the partial pages at either end, which the C heap's own bookkeeping may share, are left alone.
    static func releasePages(_ pointer: UnsafeMutableRawPointer, from start: Int, to end: Int) {
        let base = UInt(bitPattern: pointer)
        let page = UInt(pageSize)
        let first = (base + UInt(start) + page - 1) / page * page
        let last = (base + UInt(end)) / page * page
        guard last > first, let region = UnsafeMutableRawPointer(bitPattern: first) else { return }
        _ = madvise(region, Int(last - first), Int32(MADV_DONTNEED))
    }
}
