@testable import MartletBroker
import NIOCore
import Testing

@Suite struct TokenBucketTests {
    @Test("max_connection_rate: a second's worth at once, then one per 1/rate seconds, never more than a second's worth saved up")
    func rate() {
        let start = NIODeadline.uptimeNanoseconds(5_000_000_000)
        var bucket = TokenBucket(ratePerSecond: 10, now: start)
        let burst = (0..<11).map { _ in bucket.take(now: start) }
        #expect(burst == Array(repeating: true, count: 10) + [false])
        let early = bucket.take(now: start + .milliseconds(99))
        let onTime = bucket.take(now: start + .milliseconds(200))
        #expect(!early && onTime)
        // An idle minute saves up one second's worth, not sixty.
        let later = start + .seconds(60)
        let afterIdle = (0..<11).map { _ in bucket.take(now: later) }
        #expect(afterIdle.filter { $0 }.count == 10)
    }
}
