import Benchmark
import MartletBenchSupport
import MartletBroker

/// One QoS 0 PUBLISH of 64 bytes, from the publisher's bytes through the connection handler
/// and the router to the write on every subscriber's connection, with 1, 10 and 100 local
/// subscribers (embedded channels: no sockets, no other loop). The target is no allocation
/// per subscriber: the encoded PUBLISH is one buffer shared by every subscriber's write, so
/// mallocs per publish must not grow with the subscriber count.
let publishBenchmarks: @Sendable () -> Void = {
    for subscribers in [1, 10, 100] {
        Benchmark(
            "publish_qos0_to_\(subscribers)",
            configuration: .init(
                metrics: [.wallClock, .mallocCountTotal],
                scalingFactor: .kilo,
                maxDuration: .seconds(2),
                maxIterations: 10_000,
                // Deviations allowed from Thresholds/ (in the unscaled unit: per 1,000 publishes).
                // Time per publish may move by 10 µs plus 2 µs per subscriber: most of it is the
                // embedded channels' own bookkeeping, so only a gross regression should fail.
                // Allocations: 2 per publish for 1, 10 or 100 subscribers (the shared encoded PUBLISH);
                // one more per publish fails.
                thresholds: [
                    .wallClock: .init(absolute: [.p90: 10_000_000 + 2_000_000 * subscribers]),
                    .mallocCountTotal: .init(absolute: [.p90: 100]),
                ]
            )
        ) { benchmark in
            let probe = try RoutingProbe(subscribers: subscribers)
            var written = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                written += try probe.routeOne()
            }
            benchmark.stopMeasurement()
            precondition(written == subscribers * benchmark.scaledIterations.count, "every subscriber gets every message")
            blackHole(written)
        }
    }
}
