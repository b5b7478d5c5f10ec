// swift-tools-version:6.1
// libFuzzer target for the MQTT decoder. Built and run by `make fuzz` (part of `make test`):
//   swift build --sanitize=fuzzer --sanitize=address -Xswiftc -parse-as-library
import PackageDescription

let package = Package(
    name: "MartletFuzz",
    dependencies: [
        .package(name: "martlet", path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "FuzzDecoder",
            dependencies: [
                .product(name: "MartletMQTT", package: "martlet"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
)
