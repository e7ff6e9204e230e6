// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "trav",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Traversal", targets: ["Traversal"]),
        .library(name: "Strategies", targets: ["Strategies"]),
        .library(name: "STUNLite", targets: ["STUNLite"]),
        .library(name: "TURNLite", targets: ["TURNLite"]),
        .library(name: "Rendezvous", targets: ["Rendezvous"]),
        .library(name: "Media", targets: ["Media"]),
        .library(name: "SourceLimits", targets: ["SourceLimits"]),
        // The C API (header: Sources/CTrav/include/trav.h), for camera firmware and apps in C.
        .library(name: "TravC", type: .dynamic, targets: ["TravC"]),
        .executable(name: "trav", targets: ["trav"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.3.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "SourceLimits",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "STUNLite",
            dependencies: [
                "SourceLimits",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Raw Linux datagram I/O (epoll, recvmmsg/sendmmsg): the relay's data plane and the flood generators.
        .target(name: "DatagramIO", dependencies: ["STUNLite"]),
        .target(
            name: "TURNLite",
            dependencies: [
                "STUNLite", "SourceLimits", "DatagramIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .systemLibrary(
            name: "CUsrsctp",
            providers: [.apt(["libusrsctp-dev"])]),
        .target(
            name: "Traversal",
            dependencies: [
                "CUsrsctp", "SourceLimits",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]),
        .target(
            name: "Rendezvous",
            dependencies: [
                "Traversal", "STUNLite", "TURNLite", "SourceLimits",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]),
        .target(
            name: "Strategies",
            dependencies: [
                "Traversal", "STUNLite", "TURNLite", "SourceLimits",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        .target(
            name: "Media",
            dependencies: [
                "Traversal",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        .target(name: "NATLab"),
        .target(name: "CTrav"),
        .target(
            name: "TravC",
            dependencies: [
                "CTrav", "Traversal", "Strategies", "Media",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "trav",
            dependencies: [
                "Traversal", "Strategies", "STUNLite", "TURNLite", "Rendezvous", "NATLab", "Media", "SourceLimits", "WebRTC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("Resources/testsrc.h264"), .copy("Resources/testsrc-low.h264")]),
        .target(
            name: "FloodKit",
            dependencies: [
                "STUNLite", "TURNLite", "DatagramIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Benchmarks/FloodKit"),
        .executableTarget(
            name: "stun-flood",
            dependencies: ["FloodKit", "DatagramIO", "STUNLite"],
            path: "Benchmarks/STUNFlood"),
        .executableTarget(
            name: "cloud-storm",
            dependencies: ["Traversal", "Rendezvous", .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/CloudStorm"),
        .executableTarget(
            name: "turn-flood",
            dependencies: ["FloodKit", .product(name: "NIOPosix", package: "swift-nio")],
            path: "Benchmarks/TURNFlood"),
        .testTarget(name: "STUNLiteTests", dependencies: ["STUNLite", "NATLab",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio")]),
        .target(name: "PeerTestSupport", dependencies: ["Traversal"], path: "Tests/PeerTestSupport"),
        .testTarget(name: "TraversalTests", dependencies: ["Traversal", "SourceLimits", "PeerTestSupport",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "MediaTests", dependencies: ["Media", "Traversal", "PeerTestSupport"]),
        .testTarget(name: "SourceLimitsTests", dependencies: ["SourceLimits",
            .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "TURNLiteTests", dependencies: ["TURNLite", "STUNLite", "NATLab", "Rendezvous", "SourceLimits", "DatagramIO",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl")]),
        .testTarget(name: "StrategiesTests", dependencies: ["Strategies", "Traversal", "STUNLite", "TURNLite", "NATLab", "Rendezvous", "Media", "SourceLimits",
            .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "DatagramIOTests", dependencies: ["DatagramIO", "STUNLite"]),
        .testTarget(name: "FloodKitTests", dependencies: ["FloodKit", "TURNLite", "STUNLite", "Rendezvous",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl")]),
        .testTarget(name: "NATLabTests", dependencies: ["NATLab", "STUNLite"]),
        // WebRTC for browser viewers: session descriptions, ICE candidates, the ICE agent, DTLS 1.2 over OpenSSL and the
        // camera's BrowserViewerSession with SCTP over DTLS (RFC 8866, 8839, 8841, 8445, 6347, 8261).
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", providers: [.apt(["libssl-dev"])]),
        // It drives Traversal's channel engine through `@_spi(WebRTC)` (DataChannelEngine), so OpenSSL stays out of Traversal.
        .target(name: "WebRTC", dependencies: ["STUNLite", "COpenSSL", "Traversal", "Media",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1")]),
        .testTarget(name: "WebRTCTests", dependencies: ["WebRTC", "STUNLite", "NATLab", "Traversal", "Media", "PeerTestSupport", "SourceLimits", "Rendezvous", "TURNLite",
            .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl")]),
        .testTarget(name: "TravCTests", dependencies: ["NATLab", "TravC", "CTrav"]),
        .target(
            name: "FuzzTargets",
            dependencies: [
                "STUNLite", "TURNLite", "Traversal", "Strategies", "Media", "WebRTC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Fuzz/Sources/FuzzTargets"),
        .testTarget(name: "FuzzTests", dependencies: ["FuzzTargets", "PeerTestSupport"]),
        .testTarget(name: "RendezvousTests", dependencies: ["Rendezvous", "Traversal", "STUNLite", "TURNLite", "NATLab", "SourceLimits",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]),
    ]
)

// The libFuzzer driver (README "Fuzzing"): only with TRAV_FUZZ=1, since it calls libFuzzer's entry point, which
// is linked only in a `-sanitize=fuzzer` build. Scripts/fuzz.sh sets it. The targets themselves (FuzzTargets) are
// always built, and FuzzTests replays the committed corpora through them.
//
// With TRAV_FUZZ_QUICK=1 as well (Scripts/fuzz.sh --quick, the bounded run Scripts/test.sh makes), only our own
// modules are instrumented (-sanitize=fuzzer, no AddressSanitizer) and the build shares the normal scratch path,
// so the dependencies already built for the tests are reused instead of built a second time.
if Context.environment["TRAV_FUZZ"] == "1" {
    let quick = Context.environment["TRAV_FUZZ_QUICK"] == "1"
    let instrument: [SwiftSetting]? = quick ? [.unsafeFlags(["-sanitize=fuzzer"])] : nil
    if quick {
        let ours: Set<String> = ["SourceLimits", "STUNLite", "TURNLite", "Traversal", "Strategies", "Media", "WebRTC", "FuzzTargets"]
        for target in package.targets where ours.contains(target.name) {
            target.swiftSettings = (target.swiftSettings ?? []) + (instrument ?? [])
        }
    }
    package.targets += [
        .target(name: "CFuzzDriver", path: "Fuzz/Sources/CFuzzDriver"),
        .executableTarget(
            name: "trav-fuzz",
            dependencies: ["CFuzzDriver", "FuzzTargets"],
            path: "Fuzz/Sources/trav-fuzz",
            swiftSettings: instrument,
            linkerSettings: quick ? [.unsafeFlags(["-sanitize=fuzzer"])] : nil),
    ]
    package.products += [.executable(name: "trav-fuzz", targets: ["trav-fuzz"])]
}
