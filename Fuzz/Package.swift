// swift-tools-version:6.1
// libFuzzer target for the MQTT decoder. Built and run by `make fuzz` (part of `make test`):
//   swift build --sanitize=fuzzer -Xswiftc -parse-as-library -Xswiftc -use-ld=lld
//
// Sources/MartletMQTT is a symlink to the real codec, compiled here as this package's own
// target so the fuzz build never depends on how flags reach a path dependency.
import PackageDescription

let package = Package(
    name: "MartletFuzz",
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .target(
            name: "MartletMQTT",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            path: "Sources/MartletMQTT",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "FuzzDecoder",
            dependencies: [
                "MartletMQTT",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
