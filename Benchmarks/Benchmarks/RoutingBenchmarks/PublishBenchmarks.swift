import Benchmark
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
                thresholds: [
                    // Time per publish (µs scale) may move by half a microsecond per subscriber
                    // plus 2 µs; the allocations are fixed per publish, whatever the fan-out.
                    .wallClock: .init(absolute: [.p90: Int(2_000_000 + 500_000 * subscribers)]),
                    .mallocCountTotal: .init(absolute: [.p90: 4_000]),
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
