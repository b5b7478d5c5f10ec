import MartletBroker
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// MQTT 3.1.1 has no No Local: a remote sends a bridge back what the bridge published there
/// when the bridge subscribes to the same topics (`direction: both`). The bridge remembers
/// what it sent (topic and payload, a bounded number, for a limited time) and drops one
/// arriving copy per message sent, so a message does not bounce back in.
struct EchoFilter {
    private struct Key: Hashable {
        var topic: String
        var payload: ByteBuffer
    }
    private var pending: [Key: Int] = [:]
    private var order: [(key: Key, at: NIODeadline)] = []
    private var head = 0
    let capacity: Int
    let lifetime: TimeAmount

    init(capacity: Int = 10_000, lifetime: TimeAmount = .seconds(30)) {
        self.capacity = capacity
        self.lifetime = lifetime
    }

    mutating func sent(topic: String, payload: ByteBuffer, now: NIODeadline) {
        expire(now: now)
        if order.count - head >= capacity { forgetOldest() }
        let key = Key(topic: topic, payload: payload)
        pending[key, default: 0] += 1
        order.append((key, now))
    }

    /// True when this arrival is the echo of something sent (it is then forgotten).
    mutating func isEcho(topic: String, payload: ByteBuffer, now: NIODeadline) -> Bool {
        expire(now: now)
        let key = Key(topic: topic, payload: payload)
        guard let n = pending[key] else { return false }
        pending[key] = n > 1 ? n - 1 : nil
        return true
    }

    private mutating func expire(now: NIODeadline) {
        while head < order.count, now - order[head].at > lifetime { forgetOldest() }
        if head > 1024 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
    }

    private mutating func forgetOldest() {
        let key = order[head].key
        head += 1
        if let n = pending[key] { pending[key] = n > 1 ? n - 1 : nil }
    }
}

/// One bridge's figures, for /metrics and the closing log line.
final class BridgeStatistics: Sendable {
    let connected = Atomic<Int>(0)
    let sent = Atomic<Int>(0)
    let received = Atomic<Int>(0)
    let droppedTooLarge = Atomic<Int>(0)
    let droppedRefused = Atomic<Int>(0)
    /// QoS 0 messages that could not wait: the remote disconnected; more than
    /// `max_queued_messages` waiting for the remote's socket (or this broker's link) to drain.
    let droppedLinkDown = Atomic<Int>(0)
    let droppedRemoteBusy = Atomic<Int>(0)
    let droppedLocalBusy = Atomic<Int>(0)
    /// QoS 1/2 sent to the remote and not yet acknowledged.
    let inflight = Atomic<Int>(0)
    let echoesDropped = Atomic<Int>(0)
    let reconnects = Atomic<Int>(0)
    let acknowledgementNanoseconds = Atomic<Int>(0)
    let acknowledgements = Atomic<Int>(0)
    /// The bridge's session on this broker (its queue and what the queue dropped), read once
    /// a second.
    let queue = NIOLockedValueBox<SessionReport?>(nil)

    /// Drops by reason: the queue's (`queue_policy`, expiry, …) and the bridge's own
    /// (`too_large` for the remote, `refused` by either side, QoS 0 `link_down`,
    /// `remote_busy`, `local_busy`).
    var dropped: [String: Int] {
        let report = queue.withLockedValue { $0 }
        var result: [String: Int] = [:]
        for reason in DropReason.allCases { result[reason.rawValue] = report?.dropped[reason] ?? 0 }
        result[DropReason.tooLarge.rawValue, default: 0] += droppedTooLarge.load(ordering: .relaxed)
        result["refused"] = droppedRefused.load(ordering: .relaxed)
        result["link_down"] = droppedLinkDown.load(ordering: .relaxed)
        result["remote_busy"] = droppedRemoteBusy.load(ordering: .relaxed)
        result["local_busy"] = droppedLocalBusy.load(ordering: .relaxed)
        return result
    }

    func render(bridge: String, inflight: Int) -> String {
        let label = "bridge=\"\(bridge)\""
        let seconds = Double(acknowledgementNanoseconds.load(ordering: .relaxed)) / 1e9
        let report = queue.withLockedValue { $0 }
        let drops = dropped.sorted { $0.key < $1.key }.map { "martlet_bridge_messages_dropped_total{\(label),reason=\"\($0.key)\"} \($0.value)\n" }.joined()
        return drops + """
            martlet_bridge_connected{\(label)} \(connected.load(ordering: .relaxed))
            martlet_bridge_messages_sent_total{\(label)} \(sent.load(ordering: .relaxed))
            martlet_bridge_messages_received_total{\(label)} \(received.load(ordering: .relaxed))
            martlet_bridge_queued_messages{\(label)} \(report?.queuedMessages ?? 0)
            martlet_bridge_queued_bytes{\(label)} \(report?.queuedBytes ?? 0)
            martlet_bridge_echoes_dropped_total{\(label)} \(echoesDropped.load(ordering: .relaxed))
            martlet_bridge_reconnects_total{\(label)} \(reconnects.load(ordering: .relaxed))
            martlet_bridge_inflight_messages{\(label)} \(inflight)
            martlet_bridge_ack_seconds_sum{\(label)} \(seconds)
            martlet_bridge_ack_seconds_count{\(label)} \(acknowledgements.load(ordering: .relaxed))

            """
    }
}
