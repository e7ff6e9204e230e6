#if canImport(Glibc)
import Glibc
#endif
import Logging
import Metrics
import ServiceLifecycle

/// Gives the memory the process freed back to the system every `interval` (glibc's `malloc_trim`): a cloud that
/// registered a fleet over TLS freed each connection's buffers when the cameras moved to UDP presence, but glibc
/// keeps freed pages in its arenas, so without this the resident size stays at the storm's peak (30,000 cameras:
/// 8.3 KiB per camera resident instead of 3.6). A no-op where the C library is not glibc.
struct HeapTrimService: Service {
    /// Default of `interval`: 30 s.
    static let defaultInterval: Duration = .seconds(30)

    /// Between two trims.
    let interval: Duration
    let logger: Logger

    /// Trims every `interval` until a graceful shutdown or cancellation.
    func run() async throws {
        let trims = Counter(label: "process_heap_trims_total")
        let took = Timer(label: "process_heap_trim_duration_seconds")
        await cancelWhenGracefulShutdown {
            while (try? await Task.sleep(for: interval)) != nil {
                let started = ContinuousClock.now
                let released = Self.trim()
                let elapsed = ContinuousClock.now - started
                trims.increment()
                took.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
                logger.debug("heap trimmed", metadata: ["released": "\(released)", "ms": "\(elapsed)"])
            }
        }
    }

    /// glibc's `int malloc_trim(size_t pad)` (malloc.h, which the Glibc module does not bring in), looked up once.
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        #if canImport(Glibc)
        guard let symbol = dlsym(nil, "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
        #else
        return nil
        #endif
    }()

    /// Returns free heap pages to the system; whether any were.
    static func trim() -> Bool {
        mallocTrim?(0) == 1
    }
}
