import NIOCore

/// When each connection's timers (connect timeout, keepalive, write stall) next need a look,
/// in slots of the sweep interval. A sweep checks only the connections whose slot has come,
/// instead of every connection every sweep: an idle connection with a 60 s keepalive is
/// looked at once per 90 s, not twice a second.
///
/// A connection's slot is where its earliest deadline falls. Activity moves deadlines later
/// without touching the wheel: a connection checked before its deadline (a packet came
/// meanwhile) goes to the slot of its new deadline. Whatever moves a deadline earlier (the
/// session attached with a short keepalive, the socket stopped taking writes) schedules the
/// connection again.
struct TimerWheel {
    private let origin: NIODeadline
    private let slotLength: Int64
    private var slots: [Int64: [Int]] = [:]
    /// Each connection's one live slot (entries in other slots are stale and skipped).
    private var scheduled: [Int: Int64] = [:]
    /// The last slot handed out by `due`.
    private var swept: Int64 = 0

    init(origin: NIODeadline, interval: TimeAmount) {
        self.origin = origin
        self.slotLength = max(1, interval.nanoseconds)
    }

    /// The connections watched.
    var count: Int { scheduled.count }

    /// Watches `id` from the slot its `deadline` falls in (never one already swept); nil: no
    /// deadline applies, nothing to watch.
    mutating func schedule(_ id: Int, at deadline: NIODeadline?) {
        guard let deadline else {
            scheduled[id] = nil
            return
        }
        let offset = (deadline - origin).nanoseconds
        // The first slot that starts at or after the deadline.
        let slot = max(offset <= 0 ? 0 : (offset + slotLength - 1) / slotLength, swept + 1)
        if scheduled[id] == slot { return }
        scheduled[id] = slot
        slots[slot, default: []].append(id)
    }

    mutating func remove(_ id: Int) {
        scheduled[id] = nil
    }

    /// The connections whose slot has started by `now`, each once, earliest slot first;
    /// they are no longer watched until scheduled again.
    mutating func due(now: NIODeadline) -> [Int] {
        let current = max(0, (now - origin).nanoseconds / slotLength)
        var due: [Int] = []
        while swept < current {
            swept += 1
            guard let ids = slots.removeValue(forKey: swept) else { continue }
            for id in ids where scheduled[id] == swept {
                scheduled[id] = nil
                due.append(id)
            }
        }
        return due
    }
}
