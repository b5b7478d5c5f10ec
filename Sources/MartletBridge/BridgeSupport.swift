import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// A counting window: at most `size` messages in flight (the remote's, or this broker's,
/// Receive Maximum). `close()` lets every waiter go (the bridge is stopping).
final class FlightWindow: Sendable {
    private struct State {
        var size: Int
        var used = 0
        var closed = false
        var waiters: [CheckedContinuation<Bool, Never>] = []
    }
    private let state: NIOLockedValueBox<State>

    init(size: Int) { state = NIOLockedValueBox(State(size: max(1, size))) }

    var inUse: Int { state.withLockedValue { $0.used } }
    var waiting: Int { state.withLockedValue { $0.waiters.count } }

    /// Waits for a free slot; false once the window is closed.
    func acquire() async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let now = state.withLockedValue { s -> Bool? in
                if s.closed { return false }
                if s.used < s.size {
                    s.used += 1
                    return true
                }
                s.waiters.append(continuation)
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    func release() {
        let next = state.withLockedValue { s -> CheckedContinuation<Bool, Never>? in
            if !s.waiters.isEmpty && s.used <= s.size { return s.waiters.removeFirst() }  // the slot passes on
            s.used = max(0, s.used - 1)
            return nil
        }
        next?.resume(returning: true)
    }

    /// A new Receive Maximum (after a reconnect): waiters that now fit go.
    func resize(_ size: Int) {
        let woken = state.withLockedValue { s -> [CheckedContinuation<Bool, Never>] in
            s.size = max(1, size)
            var woken: [CheckedContinuation<Bool, Never>] = []
            while s.used < s.size, !s.waiters.isEmpty {
                s.used += 1
                woken.append(s.waiters.removeFirst())
            }
            return woken
        }
        for w in woken { w.resume(returning: true) }
    }

    func close() {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Bool, Never>] in
            s.closed = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume(returning: false) }
    }
}

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
    let echoesDropped = Atomic<Int>(0)
    let reconnects = Atomic<Int>(0)
    let acknowledgementNanoseconds = Atomic<Int>(0)
    let acknowledgements = Atomic<Int>(0)

    func render(bridge: String, inflight: Int) -> String {
        let label = "bridge=\"\(bridge)\""
        let seconds = Double(acknowledgementNanoseconds.load(ordering: .relaxed)) / 1e9
        return """
            martlet_bridge_connected{\(label)} \(connected.load(ordering: .relaxed))
            martlet_bridge_messages_sent_total{\(label)} \(sent.load(ordering: .relaxed))
            martlet_bridge_messages_received_total{\(label)} \(received.load(ordering: .relaxed))
            martlet_bridge_messages_dropped_total{\(label),reason="too_large"} \(droppedTooLarge.load(ordering: .relaxed))
            martlet_bridge_messages_dropped_total{\(label),reason="refused"} \(droppedRefused.load(ordering: .relaxed))
            martlet_bridge_echoes_dropped_total{\(label)} \(echoesDropped.load(ordering: .relaxed))
            martlet_bridge_reconnects_total{\(label)} \(reconnects.load(ordering: .relaxed))
            martlet_bridge_inflight_messages{\(label)} \(inflight)
            martlet_bridge_ack_seconds_sum{\(label)} \(seconds)
            martlet_bridge_ack_seconds_count{\(label)} \(acknowledgements.load(ordering: .relaxed))

            """
    }
}
