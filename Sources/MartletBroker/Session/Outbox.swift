import DequeModule

/// A session's deliveries waiting for the socket to drain, for the inflight window or for the
/// client to come back, in order, with their bytes (`Delivery.cost`, what `max_queued_bytes`
/// bounds) and how many are QoS 0 (the first to give way). The limits and the slow-consumer
/// policy are the router's; this keeps the figures true whatever is added or taken.
struct Outbox: Sendable {
    private(set) var deliveries: Deque<Delivery> = []
    /// Sum of `cost` over the deliveries.
    private(set) var bytes = 0
    private(set) var qos0Count = 0

    var isEmpty: Bool { deliveries.isEmpty }
    var count: Int { deliveries.count }
    var first: Delivery? { deliveries.first }

    /// Whether one more delivery of `cost` fits within `messages` and `bytes`.
    func hasRoom(for cost: Int, messages maximumMessages: Int, bytes maximumBytes: Int) -> Bool {
        deliveries.count < maximumMessages && bytes + cost <= maximumBytes
    }

    mutating func append(_ delivery: Delivery) {
        deliveries.append(delivery)
        bytes += delivery.cost
        if delivery.qos == .atMostOnce { qos0Count += 1 }
    }

    mutating func popFirst() -> Delivery? {
        guard let delivery = deliveries.popFirst() else { return nil }
        taken(delivery)
        return delivery
    }

    /// Removes the oldest delivery, or with `qos0Only` the oldest QoS 0 one.
    mutating func evictOldest(qos0Only: Bool) -> Delivery? {
        if !qos0Only { return popFirst() }
        guard qos0Count > 0, let i = deliveries.firstIndex(where: { $0.qos == .atMostOnce }) else { return nil }
        let delivery = deliveries.remove(at: i)
        taken(delivery)
        return delivery
    }

    /// Removes the deliveries `take` accepts (asked in order); returns them.
    mutating func remove(where take: (Delivery) -> Bool) -> [Delivery] {
        var taken: [Delivery] = []
        deliveries.removeAll { delivery in
            guard take(delivery) else { return false }
            taken.append(delivery)
            return true
        }
        for delivery in taken { self.taken(delivery) }
        return taken
    }

    /// Empties it; returns what it held.
    mutating func removeAll() -> (messages: Int, bytes: Int) {
        defer { self = Outbox() }
        return (deliveries.count, bytes)
    }

    private mutating func taken(_ delivery: Delivery) {
        bytes -= delivery.cost
        if delivery.qos == .atMostOnce { qos0Count -= 1 }
    }
}
