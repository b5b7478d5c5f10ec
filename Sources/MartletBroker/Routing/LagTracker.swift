import NIOCore

/// Publisher pacing (`pause_publishers_for_slow_subscribers`) and subscriber stalls on one
/// event loop, with every threshold stated here:
///
/// - A session **lags** once a message would be queued for it while its outbox is at least
///   half full (messages or bytes); it stops lagging when it drains to a quarter.
/// - A publisher whose message was queued for a lagging session, or handed to a loop that
///   has one, is **paused** (not read) until no session anywhere lags and the loop's marks
///   are below their low water.
/// - Messages for another loop are handed over in batches of at most `handOverBatch`; a loop
///   may have at most `unroutedMessageBound` handed over and not yet routed there. Together
///   they stay within the free half of a lagging queue, so that pacing across two loops
///   loses nothing to `queue_full` however small `max_queued_messages` is.
/// - A lagging session that took nothing off its outbox for `subscriber_stall_timeout`, or
///   lagged for ten times that, **stalls**: it stops holding publishers back and its outbox
///   follows the slow-consumer policy.
///
/// The lists are this loop's; the counts other loops read are atomics on the `Router`.
struct LagTracker {
    /// This loop's lagging sessions, watched for stalls at each sweep.
    private(set) var lagging: [Session] = []
    /// Publishers of this loop whose socket is not being read.
    private(set) var paused: [ConnectionRef] = []

    /// The loop's and the broker's levels that pausing and resuming compare.
    struct Marks {
        var queuedBytesOnline: Int
        var unroutedBytes: Int
        var unroutedMessages: Int
        var laggingSubscribers: Int
    }

    // MARK: Rules

    /// Half the queue: a session past it starts lagging (only for queues of 4 or more).
    static func startsLagging(queued: Int, bytes: Int, _ limits: BrokerConfiguration) -> Bool {
        limits.maximumQueuedMessages >= 4
            && (queued * 2 >= limits.maximumQueuedMessages || bytes * 2 >= limits.maximumQueuedBytes)
    }

    /// A quarter of the queue: a lagging or stalled session back under it is neither.
    static func endsLag(queued: Int, bytes: Int, _ limits: BrokerConfiguration) -> Bool {
        queued * 4 <= limits.maximumQueuedMessages && bytes * 4 <= limits.maximumQueuedBytes
    }

    /// With pacing, a batch for another loop is handed over once it holds this many messages,
    /// without waiting for the end of the read burst (so lagging there is seen here promptly).
    static func handOverBatch(_ limits: BrokerConfiguration) -> Int {
        guard limits.pausePublishersForSlowSubscribers else { return .max }
        return max(1, min(Router.batchHandOver, limits.maximumQueuedMessages / 8))
    }

    /// With pacing, how many messages a loop may have handed to others and not yet routed.
    /// With `handOverBatch` it is at most 3/8 of the queue, under the half a lagging queue
    /// still has free.
    static func unroutedMessageBound(_ limits: BrokerConfiguration) -> Int {
        guard limits.pausePublishersForSlowSubscribers else { return .max }
        return max(2 * handOverBatch(limits), limits.maximumQueuedMessages / 4)
    }

    /// Whether a publisher that just published on this loop stops being read.
    static func shouldPause(_ marks: Marks, _ limits: BrokerConfiguration) -> Bool {
        marks.queuedBytesOnline > limits.inboundHighWaterBytes
            || marks.unroutedBytes > limits.maximumUnroutedBytes
            || marks.unroutedMessages > unroutedMessageBound(limits)
    }

    /// Whether this loop's paused publishers are read again: every mark below its low water
    /// (half the bound for the unrouted ones) and, with pacing, no lagging session anywhere.
    static func mayResume(_ marks: Marks, _ limits: BrokerConfiguration) -> Bool {
        marks.queuedBytesOnline < limits.inboundLowWaterBytes
            && marks.unroutedBytes <= limits.maximumUnroutedBytes / 2
            && marks.unroutedMessages <= unroutedMessageBound(limits) / 2
            && (!limits.pausePublishersForSlowSubscribers || marks.laggingSubscribers == 0)
    }

    // MARK: Lagging sessions

    /// Starts watching a session that began lagging at `now`.
    mutating func startLagging(_ session: Session, now: NIODeadline) {
        session.drainedAtCheck = session.drained
        session.progressAt = now
        session.laggingSince = now
        lagging.append(session)
    }

    mutating func stopLagging(_ session: Session) {
        lagging.removeAll { $0 === session }
    }

    /// The lagging sessions that stall at `now`, with why; progress since the last check
    /// (messages taken off the outbox) restarts a session's stall clock.
    mutating func stalls(now: NIODeadline, timeout: TimeAmount) -> [(session: Session, why: String)] {
        var stalled: [(Session, String)] = []
        for session in lagging {
            if now - session.laggingSince >= timeout * 10 {
                stalled.append((session, "lagging for ten stall timeouts"))
            } else if session.drained != session.drainedAtCheck {
                session.drainedAtCheck = session.drained
                session.progressAt = now
            } else if now - session.progressAt >= timeout {
                stalled.append((session, "nothing taken off its outbox for the stall timeout"))
            }
        }
        return stalled
    }

    // MARK: Paused publishers

    mutating func pause(_ connection: ConnectionRef) {
        paused.append(connection)
    }

    /// Every paused publisher, now to be resumed.
    mutating func resumeAll() -> [ConnectionRef] {
        defer { paused = [] }
        return paused
    }

    /// A paused connection that closes leaves the list; returns how many entries left.
    mutating func forget(connectionID: Int) -> Int {
        guard !paused.isEmpty else { return 0 }
        let before = paused.count
        paused.removeAll { $0.value.connectionID == connectionID }
        return before - paused.count
    }
}
