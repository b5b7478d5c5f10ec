import MartletBenchSupport
import MartletBroker
import Testing

/// The harness the publish microbenchmarks measure: it must really route through the
/// connection handler and router, or the numbers mean nothing.
@Suite struct RoutingProbeTests {
    @Test(arguments: [1, 10, 100])
    func everySubscriberGetsEachPublish(_ subscribers: Int) throws {
        let probe = try RoutingProbe(subscribers: subscribers)
        for _ in 0..<3 {
            #expect(try probe.routeOne() == subscribers)
        }
    }
}
