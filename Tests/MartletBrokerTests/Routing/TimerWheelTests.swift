@testable import MartletBroker
import NIOCore
import Testing

/// The slots of the sweep's timer wheel: a connection comes due in the first slot that starts
/// at or after its deadline, once, and only its latest scheduling counts.
@Suite struct TimerWheelTests {
    let origin = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var ms: (Int64) -> NIODeadline { { [origin] in origin + .milliseconds($0) } }

    @Test func dueInTheSlotAtOrAfterItsDeadline() {
        var wheel = TimerWheel(origin: origin, interval: .milliseconds(500))
        wheel.schedule(1, at: ms(1_200))
        wheel.schedule(2, at: ms(1_500))
        wheel.schedule(3, at: ms(10_000))
        #expect(wheel.due(now: ms(1_000)).isEmpty)
        #expect(wheel.due(now: ms(1_499)).isEmpty)
        #expect(wheel.due(now: ms(1_500)) == [1, 2])
        #expect(wheel.due(now: ms(9_999)).isEmpty)
        #expect(wheel.due(now: ms(60_000)) == [3])
        #expect(wheel.count == 0)
    }

    @Test func onlyTheLatestSchedulingCounts() {
        var wheel = TimerWheel(origin: origin, interval: .milliseconds(500))
        wheel.schedule(1, at: ms(90_000))
        wheel.schedule(1, at: ms(2_000))  // an earlier deadline (e.g. the socket stopped taking writes)
        wheel.schedule(2, at: ms(1_000))
        wheel.schedule(2, at: ms(5_000))  // a later one
        wheel.schedule(3, at: ms(1_000))
        wheel.remove(3)
        #expect(wheel.due(now: ms(1_000)).isEmpty)
        #expect(wheel.due(now: ms(2_000)) == [1])
        #expect(wheel.due(now: ms(100_000)) == [2])
        wheel.schedule(4, at: nil)
        #expect(wheel.count == 0)
    }

    @Test func aPastDeadlineIsDueAtTheNextSlotNotOneAlreadySwept() {
        var wheel = TimerWheel(origin: origin, interval: .milliseconds(500))
        #expect(wheel.due(now: ms(3_000)).isEmpty)
        wheel.schedule(1, at: ms(100))
        #expect(wheel.due(now: ms(3_000)).isEmpty)
        #expect(wheel.due(now: ms(3_500)) == [1])
    }
}
