import NIOCore

/// Timers keyed by client id on one event loop, each carrying a value: the wills waiting for
/// their Will Delay Interval (`WillScheduler`) and the offline sessions waiting to expire
/// (`SessionExpiry`). Few sessions have one at a time, so they live here rather than in every
/// session. Time is the event loop's, so an `EmbeddedEventLoop` drives them in tests.
struct ClientTimers<Value> {
    private var pending: [String: (value: Value, timer: Scheduled<Void>)] = [:]

    var count: Int { pending.count }

    func contains(_ clientID: String) -> Bool {
        pending[clientID] != nil
    }

    /// Runs `fire` on `loop` after `delay` unless the entry is taken or replaced first (`fire`
    /// takes the value with `take`). An entry already there for `clientID` is replaced.
    mutating func schedule(_ value: Value, for clientID: String, after delay: TimeAmount, on loop: any EventLoop,
                           fire: @escaping @Sendable () -> Void) {
        let timer = loop.scheduleTask(in: delay, fire)
        pending[clientID]?.timer.cancel()
        pending[clientID] = (value, timer)
    }

    /// The value waiting for `clientID`, if any; its timer is cancelled.
    mutating func take(_ clientID: String) -> Value? {
        guard !pending.isEmpty, let entry = pending.removeValue(forKey: clientID) else { return nil }
        entry.timer.cancel()
        return entry.value
    }
}

/// Wills waiting for their v5 Will Delay Interval (MQTT 5 3.1.3.2.2), by client id.
typealias WillScheduler = ClientTimers<Message>
/// Offline sessions waiting for their Session Expiry Interval (MQTT-3.1.2-23 / MQTT 5 3.1.2.11.2), by client id.
typealias SessionExpiry = ClientTimers<Void>
