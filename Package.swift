// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "martlet",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "MartletMQTT", targets: ["MartletMQTT"]),
        .library(name: "MartletClient", targets: ["MartletClient"]),
        .library(name: "MartletBroker", targets: ["MartletBroker"]),
        .library(name: "MartletTLS", targets: ["MartletTLS"]),
        .library(name: "MartletAuth", targets: ["MartletAuth"]),
        .library(name: "MartletBridge", targets: ["MartletBridge"]),
        .library(name: "MartletCluster", targets: ["MartletCluster"]),
        // Harnesses for the microbenchmarks (Benchmarks/); not linked by martletd or martlet.
        .library(name: "MartletBenchSupport", targets: ["MartletBenchSupport"]),
        .executable(name: "martletd", targets: ["martletd"]),
        .executable(name: "martlet", targets: ["martlet"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .target(
            name: "CMartletOpenSSL",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        .target(
            // Debian's libsqlite3: the session store (`persistence:`).
            name: "CMartletSQLite",
            linkerSettings: [.linkedLibrary("sqlite3")]
        ),
        .target(
            // Debian's libnats (libnats-dev): NATS and JetStream for `cluster:`.
            name: "CMartletNATS",
            linkerSettings: [.linkedLibrary("nats")]
        ),
        .target(
            name: "MartletTLS",
            dependencies: [
                "CMartletOpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MartletMQTT",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            // Password files, the authenticator and ACLs: shared by the broker and `martlet passwd`.
            name: "MartletAuth",
            dependencies: [
                "MartletMQTT",
                "MartletTLS",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MartletBroker",
            dependencies: [
                "MartletAuth",
                "MartletMQTT",
                "MartletTLS",
                "CMartletSQLite",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        .target(
            // RoutingProbe and TLSRecordProbe: the microbenchmarks drive a router and a TLS
            // connection through them without sockets.
            name: "MartletBenchSupport",
            dependencies: [
                "MartletBroker", "MartletMQTT", "MartletTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MartletClient",
            dependencies: [
                "MartletMQTT",
                "MartletTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            // Bridges to other brokers: MartletClient on both sides, the broker reached over
            // its in-process link. martletd wires it in; the broker does not link the client.
            name: "MartletBridge",
            dependencies: [
                "MartletBroker", "MartletClient", "MartletMQTT", "MartletTLS",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            // Cluster nodes over NATS JetStream: the broker's ClusterLink, built on libnats.
            // martletd wires it in; the broker does not link libnats.
            name: "MartletCluster",
            dependencies: [
                "MartletBroker", "MartletMQTT", "CMartletNATS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "martletd",
            dependencies: [
                "MartletBroker",
                "MartletBridge",
                "MartletCluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "martlet",
            dependencies: [
                "MartletClient",
                "MartletAuth",
                "MartletMQTT",
                "MartletTLS",
                "CMartletSQLite",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MartletTestSupport",
            dependencies: [
                "MartletBroker", "MartletTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/MartletTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "MartletMQTTTests",
            dependencies: ["MartletMQTT", "MartletTestSupport", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MartletTLSTests",
            dependencies: [
                "MartletTestSupport",
                "MartletTLS", "CMartletOpenSSL", "MartletBenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MartletBrokerTests",
            dependencies: [
                "MartletTestSupport", "MartletBroker", "MartletAuth", "MartletMQTT", "MartletBenchSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MartletClientTests",
            dependencies: [
                "MartletTestSupport",
                "MartletClient", "MartletBroker", "MartletTLS", "MartletMQTT",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MartletClusterTests",
            dependencies: ["MartletCluster", "MartletBroker", "MartletMQTT", "MartletTestSupport", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MartletBridgeTests",
            dependencies: ["MartletBridge", "MartletBroker", "MartletMQTT", "MartletTestSupport", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ConformanceTests",
            dependencies: [
                "MartletTestSupport",
                "MartletBroker", "MartletAuth", "MartletMQTT", "MartletTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "InteropTests",
            dependencies: [
                "MartletTestSupport", "MartletBroker", "MartletAuth", "MartletClient", "MartletTLS", "MartletMQTT", "MartletBridge", "MartletCluster",
                .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio")],
            exclude: ["paho", "scripts", "browser", "mqttjs"],
            swiftSettings: strict
        ),
    ]
)
