// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets, one per kind of input the product reads from files or the network. Each is built
// with `-sanitize=fuzzer,address` (see `make fuzz`); they are not part of the library's build.
let kinds = ["safetensors", "checkpoint", "image", "labels", "dataset-lists", "recipe"]

let package = Package(
    name: "afa-fuzz",
    platforms: [.macOS(.v15)],
    products: kinds.map { .executable(name: "fuzz-\($0)", targets: ["fuzz-\($0)"]) },
    dependencies: [.package(name: "AFA", path: "../..")],
    targets: [.target(name: "FuzzDriver", path: "Sources/FuzzDriver")] + kinds.map {
        .executableTarget(name: "fuzz-\($0)", dependencies: ["FuzzDriver", .product(name: "AFA", package: "AFA")], path: "Sources/\($0)")
    }
)
