@testable import MartletBroker
import NIOCore
import Testing

@Suite struct RateLimitedLogTests {
    @Test("said at the first event, then at most once per interval with the count since; the time is given, not read")
    func oncePerInterval() {
        var log = RateLimitedLog(every: .seconds(5))
        let t0 = NIODeadline.uptimeNanoseconds(100_000_000_000)
        #expect(log.record(at: t0) == 1)
        #expect(log.record(at: t0 + .seconds(1)) == nil)
        #expect(log.record(at: t0 + .seconds(4)) == nil)
        // The interval has passed: the two held back and this one.
        #expect(log.record(at: t0 + .seconds(5)) == 3)
        #expect(log.record(at: t0 + .milliseconds(9_999)) == nil)
        #expect(log.record(at: t0 + .seconds(11)) == 2)
    }
}
