// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "AFA",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AFA", targets: ["AFA"]),
        .executable(name: "afa", targets: ["afa"]),
        // Data-parallel training over Open MPI (`mpirun -np N afa-mpi train ...`); the only product
        // that links MPI, so `afa` and the library run where MPI is not installed.
        .executable(name: "afa-mpi", targets: ["afa-mpi"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
    ],
    targets: [
        // C bindings: headers only, flags from pkg-config.
        .systemLibrary(
            name: "CBLASShim", path: "CBLASShim", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev", "liblapacke-dev", "pkg-config"])]),
        .systemLibrary(
            name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
            providers: [.apt(["libpng-dev", "pkg-config"])]),
        // Open MPI (pkg-config ompi-c); its handle macros come back as functions from the shim.
        .systemLibrary(
            name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(
            name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libjpeg",
            providers: [.apt(["libjpeg-dev", "pkg-config"])]),

        // Tensor core: storage, GEMM over OpenBLAS, parallel-for, RNG, SIMD kernels.
        .target(
            name: "TensorCore",
            dependencies: ["CBLASShim", .product(name: "Logging", package: "swift-log")]),
        // Layers with forward and backward side by side.
        .target(name: "Layers", dependencies: ["TensorCore"]),
        // safetensors reading/writing.
        .target(name: "SafeTensors", dependencies: ["TensorCore"]),
        // Image codecs over libpng / libjpeg.
        // C glue for the codecs' longjmp-based error handling (Swift cannot host setjmp).
        .target(name: "CImageCodecs", dependencies: ["CPNG", "CJPEG"]),
        .target(name: "ImageIO", dependencies: ["CPNG", "CJPEG", "CImageCodecs", "TensorCore"]),
        // The public library.
        .target(
            name: "AFA",
            dependencies: ["TensorCore", "Layers", "SafeTensors", "ImageIO", .product(name: "Logging", package: "swift-log")]),
        // Throughput suite (used by `afa bench` and `make bench`).
        .target(
            name: "AFABench", dependencies: ["AFA", "TensorCore", "CBLASShim"], path: "benchmarks/AFABench"),
        // The commands of `afa` (and the training options `afa-mpi` shares).
        .target(
            name: "AFACommandLine",
            dependencies: [
                "AFA", "AFABench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(name: "afa", dependencies: ["AFA", "AFACommandLine"]),
        // The MPI communicator behind data-parallel training.
        .target(name: "AFADistributed", dependencies: ["AFA", "CMPI"]),
        .executableTarget(
            name: "afa-mpi",
            dependencies: [
                "AFA", "AFACommandLine", "AFADistributed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore", "CBLASShim"]),
        .testTarget(name: "ImageIOTests", dependencies: ["ImageIO"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers", "TensorCore"]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors", "TensorCore"]),
        .testTarget(name: "AFATests", dependencies: ["AFA", "Layers", "SafeTensors", "TensorCore"]),
    ],
    // The numeric kernels hand raw buffers to worker threads; Swift 5 mode keeps that explicit
    // (pointers are not Sendable) without wrapping every kernel in boxes.
    swiftLanguageModes: [.v5]
)
