// swift-tools-version:6.1
// Microbenchmarks (ordo-one/benchmark). Not part of `make test`:
//   make benchmarks    (cd Benchmarks && swift package benchmark)
import PackageDescription

let package = Package(
    name: "MartletBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "martlet", path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "CodecBenchmarks",
            dependencies: [
                .product(name: "MartletMQTT", package: "martlet"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/CodecBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "RoutingBenchmarks",
            dependencies: [
                .product(name: "MartletBroker", package: "martlet"),
                .product(name: "MartletBenchSupport", package: "martlet"),
                .product(name: "MartletMQTT", package: "martlet"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/RoutingBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "TLSBenchmarks",
            dependencies: [
                .product(name: "MartletTLS", package: "martlet"),
                .product(name: "MartletBenchSupport", package: "martlet"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/TLSBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
