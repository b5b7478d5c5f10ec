@testable import MartletBroker
import NIOCore
import Testing

@Suite struct LagTrackerTests {
    func limits(queue: Int, bytes: Int = 1 << 30, pacing: Bool = true) -> BrokerConfiguration {
        var c = BrokerConfiguration()
        c.maximumQueuedMessages = queue
        c.maximumQueuedBytes = bytes
        c.pausePublishersForSlowSubscribers = pacing
        return c
    }

    @Test("a session lags at half its queue (messages or bytes) and stops at a quarter; queues under 4 never lag")
    func lagThresholds() {
        let c = limits(queue: 1000, bytes: 100_000)
        #expect(!LagTracker.startsLagging(queued: 499, bytes: 0, c))
        #expect(LagTracker.startsLagging(queued: 500, bytes: 0, c))
        #expect(LagTracker.startsLagging(queued: 1, bytes: 50_000, c))
        #expect(!LagTracker.endsLag(queued: 251, bytes: 0, c))
        #expect(LagTracker.endsLag(queued: 250, bytes: 25_000, c))
        #expect(!LagTracker.endsLag(queued: 0, bytes: 25_001, c))
        #expect(!LagTracker.startsLagging(queued: 3, bytes: 0, limits(queue: 3)))
    }

    @Test("with pacing, what one loop may hand another after a queue starts lagging fits the queue's free half, for any queue size")
    func crossLoopBoundFitsTheFreeHalf() {
        for queue in [4, 10, 100, 200, 1000, 5000, 100_000] {
            let c = limits(queue: queue)
            // Handed over and not yet routed, plus one batch still being filled.
            let inFlight = LagTracker.unroutedMessageBound(c) + LagTracker.handOverBatch(c)
            #expect(inFlight <= queue / 2 + 1, "queue \(queue): \(inFlight) may arrive after lagging starts")
        }
        #expect(LagTracker.handOverBatch(limits(queue: 1000)) == 125)
        #expect(LagTracker.handOverBatch(limits(queue: 100_000)) == Router.batchHandOver)
        #expect(LagTracker.unroutedMessageBound(limits(queue: 1000, pacing: false)) == .max)
    }

    @Test("a publisher pauses above any high mark and resumes only when all are at their low water and nothing lags")
    func pauseAndResumeHysteresis() {
        var c = limits(queue: 1000)
        c.inboundHighWaterBytes = 1000
        c.inboundLowWaterBytes = 500
        c.maximumUnroutedBytes = 800
        let calm = LagTracker.Marks(queuedBytesOnline: 0, unroutedBytes: 0, unroutedMessages: 0, laggingSubscribers: 0)
        #expect(!LagTracker.shouldPause(calm, c))
        #expect(LagTracker.mayResume(calm, c))
        var m = calm
        m.queuedBytesOnline = 1001
        #expect(LagTracker.shouldPause(m, c))
        m.queuedBytesOnline = 700  // between the marks: neither pauses nor resumes
        #expect(!LagTracker.shouldPause(m, c) && !LagTracker.mayResume(m, c))
        m = calm
        m.unroutedMessages = LagTracker.unroutedMessageBound(c) + 1
        #expect(LagTracker.shouldPause(m, c))
        m.unroutedMessages = LagTracker.unroutedMessageBound(c) / 2
        #expect(LagTracker.mayResume(m, c))
        m.laggingSubscribers = 1
        #expect(!LagTracker.mayResume(m, c))
        c.pausePublishersForSlowSubscribers = false
        #expect(LagTracker.mayResume(m, c))
    }

    @Test("a lagging session stalls after the stall timeout without progress, or after ten timeouts however it progresses")
    func stalls() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let timeout = TimeAmount.seconds(2)
        var tracker = LagTracker()
        let idle = Session(clientID: "idle", version: .v3_1_1, expiryInterval: 0, inflightWindow: 10)
        let slow = Session(clientID: "slow", version: .v3_1_1, expiryInterval: 0, inflightWindow: 10)
        tracker.startLagging(idle, now: start)
        tracker.startLagging(slow, now: start)
        for second in 1...19 {
            slow.drained += 1  // takes one message off its outbox every second
            let stalled = tracker.stalls(now: start + .seconds(Int64(second)), timeout: timeout).map(\.session.clientID)
            #expect(stalled == (second >= 2 ? ["idle"] : []), "at \(second) s")
        }
        slow.drained += 1
        #expect(tracker.stalls(now: start + .seconds(20), timeout: timeout).map(\.session.clientID) == ["idle", "slow"])
        tracker.stopLagging(idle)
        #expect(tracker.lagging.map(\.clientID) == ["slow"])
    }
}
