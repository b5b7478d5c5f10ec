@testable import MartletBroker
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@Suite struct ClientTimersTests {
    @Test("a timer fires after its delay on the loop's clock; taking the value first cancels it; scheduling again replaces it")
    func fireTakeReplace() {
        let loop = EmbeddedEventLoop()
        let fired = NIOLockedValueBox<[String]>([])
        var timers = ClientTimers<Int>()
        timers.schedule(1, for: "a", after: .seconds(10), on: loop) { fired.withLockedValue { $0.append("a") } }
        timers.schedule(2, for: "b", after: .seconds(10), on: loop) { fired.withLockedValue { $0.append("b") } }
        timers.schedule(3, for: "c", after: .seconds(10), on: loop) { fired.withLockedValue { $0.append("c") } }
        #expect(timers.count == 3)
        loop.advanceTime(by: .seconds(5))
        #expect(timers.take("a") == 1)
        #expect(timers.take("a") == nil)
        timers.schedule(4, for: "c", after: .seconds(10), on: loop) { fired.withLockedValue { $0.append("c again") } }
        loop.advanceTime(by: .seconds(5))
        #expect(fired.withLockedValue { $0 } == ["b"])
        loop.advanceTime(by: .seconds(5))
        #expect(fired.withLockedValue { $0 } == ["b", "c again"])
        #expect(timers.contains("c"))
        #expect(timers.take("c") == 4)
    }
}
