import Benchmark
import Foundation
import MartletBenchSupport
import MartletTLS
import NIOCore

/// One TLS record encrypted by a client and decrypted by a server (OpenSSL 3 over the memory
/// BIOs martletd uses, in one process, no socket), for 64-byte and 16 KiB payloads, TLS 1.3
/// (AES-GCM as negotiated) and TLS 1.2. Certificates: certs/out (`make certs/out/server.pem`).
let benchmarks: @Sendable () -> Void = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    func contexts(_ version: TLSConfiguration.Version) throws -> (TLSContext, TLSContext) {
        var server = TLSConfiguration.server(
            certificateChainFile: root + "/certs/out/server.pem", privateKeyFile: root + "/certs/out/server.key")
        var client = TLSConfiguration.client(caFile: root + "/certs/out/ca.pem", serverName: "localhost")
        server.maximumVersion = version
        client.maximumVersion = version
        return (try TLSContext(configuration: client, role: .client), try TLSContext(configuration: server, role: .server))
    }

    for (versionName, version) in [("tls13", TLSConfiguration.Version.tls13), ("tls12", .tls12)] {
        for size in [64, 16_384] {
            Benchmark(
                "tls_record_\(versionName)_\(size)",
                configuration: .init(
                    metrics: [.wallClock, .mallocCountTotal],
                    scalingFactor: .kilo,
                    maxDuration: .seconds(2),
                    maxIterations: 10_000,
                    // Deviations allowed from Thresholds/ (per 1,000 records): time by 50 %,
                    // allocations by one per record.
                    thresholds: [
                        .wallClock: .init(relative: [.p90: 50]),
                        .mallocCountTotal: .init(absolute: [.p90: 1_000]),
                    ]
                )
            ) { benchmark in
                let (client, server) = try contexts(version)
                let probe = try TLSRecordProbe(client: client, server: server)
                let record = ByteBuffer(repeating: 0x5A, count: size)
                var carried = 0
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    carried += try probe.send(record)
                }
                benchmark.stopMeasurement()
                precondition(carried == size * benchmark.scaledIterations.count, "every record arrives whole")
            }
        }
    }
}
