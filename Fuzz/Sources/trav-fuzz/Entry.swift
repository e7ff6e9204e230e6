import FuzzTargets

/// The target libFuzzer's callback runs; set once before the driver starts.
enum Selected {
    nonisolated(unsafe) static var target: FuzzTarget?
}

/// libFuzzer's per-input entry point; `-sanitize=fuzzer` links a runtime that refers to it even though
/// `main` starts the driver itself with ``Selected/target`` set.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    Selected.target?.run(bytes)
    return 0
}
