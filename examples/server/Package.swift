// swift-tools-version:6.0
import PackageDescription

// An HTTP server that segments uploaded images with a trained AFA checkpoint. It depends on the
// library by path; the library itself has no server dependency.
let package = Package(
    name: "afa-server",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "afa-server", targets: ["afa-server"]),
    ],
    dependencies: [
        .package(name: "AFA", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.9.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // Routes, request context, metrics and configuration: everything but `main`, so tests can build the app.
        .target(
            name: "AFAServer",
            dependencies: [
                .product(name: "AFA", package: "AFA"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .executableTarget(
            name: "afa-server",
            dependencies: [
                "AFAServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "AFAServerTests",
            dependencies: [
                "AFAServer",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]),
    ]
)
