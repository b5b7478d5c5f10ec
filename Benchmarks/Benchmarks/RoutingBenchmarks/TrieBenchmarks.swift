import Benchmark
import MartletBroker
import MartletMQTT

/// Topic matching in the subscription trie with 100,000 subscriptions: exact filters, `+`
/// filters and `#` filters mixed, as one PUBLISH's routing pays it. Thresholds are checked in
/// (Thresholds/); `swift package benchmark baseline check` compares.
final class Subscriber {}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 10_000,
        // p90 time may move by up to 1 µs per match (a gross regression fails); allocations stay at zero.
        thresholds: [.wallClock: .init(absolute: [.p90: 1_000_000]), .mallocCountTotal: .init(absolute: [.p90: 0])]
    )

    // 100,000 subscriptions: 80,000 exact (devices/N/telemetry), 15,000 with '+'
    // (devices/+/alerts/N), 5,000 with '#' (fleet/N/#).
    var trie = SubscriptionTrie<Subscriber>()
    var subscribers: [Subscriber] = []
    for i in 0..<100_000 {
        let s = Subscriber()
        subscribers.append(s)
        let filter: String
        switch i % 20 {
        case 0..<16: filter = "devices/\(i)/telemetry"
        case 16, 17, 18: filter = "devices/+/alerts/\(i)"
        default: filter = "fleet/\(i % 5000)/#"
        }
        _ = trie.insert(filter: filter, subscriber: s, options: .init(qos: .atMostOnce))
    }
    let built = trie

    for (name, topic) in [
        ("exact", "devices/4000/telemetry"),
        ("plus", "devices/7/alerts/16"),
        ("hash", "fleet/123/engine/temp"),
        ("miss", "nothing/here/at/all"),
    ] {
        // Plain names: the threshold files are named after them.
        Benchmark("trie_100k_\(name)") { benchmark in
            var matched = 0
            for _ in benchmark.scaledIterations {
                built.forEachMatch(topic: topic) { _ in matched += 1 }
            }
            blackHole(matched)
            blackHole(subscribers.count)
        }
    }
    publishBenchmarks()
}
