@testable import MartletBroker
import MartletMQTT
import NIOCore
import Testing

@Suite struct OutboxTests {
    func delivery(_ topic: String, _ qos: QoS, payload: Int = 10) -> Delivery {
        Delivery(message: Message(topic: topic, payload: ByteBuffer(repeating: 0, count: payload), qos: qos, retain: false),
                 qos: qos, retain: false, subscriptionIdentifiers: [])
    }

    @Test("keeps order, bytes (payload + topic + 64 per delivery) and the QoS 0 count through append, pop and eviction")
    func figuresFollowEveryChange() {
        var outbox = Outbox()
        let a = delivery("a", .atLeastOnce), b = delivery("b", .atMostOnce), c = delivery("c", .atMostOnce, payload: 100)
        for d in [a, b, c] { outbox.append(d) }
        #expect(outbox.count == 3 && outbox.qos0Count == 2)
        #expect(outbox.bytes == a.cost + b.cost + c.cost)
        #expect(outbox.bytes == (10 + 1 + 64) * 2 + (100 + 1 + 64))
        // The oldest QoS 0 goes first when only QoS 0 may give way; order is kept.
        #expect(outbox.evictOldest(qos0Only: true)?.message.topic == "b")
        #expect(outbox.qos0Count == 1 && outbox.bytes == a.cost + c.cost)
        #expect(outbox.popFirst()?.message.topic == "a")
        #expect(outbox.first?.message.topic == "c")
        #expect(outbox.evictOldest(qos0Only: false)?.message.topic == "c")
        #expect(outbox.isEmpty && outbox.bytes == 0 && outbox.qos0Count == 0)
        #expect(outbox.evictOldest(qos0Only: true) == nil)
        #expect(outbox.popFirst() == nil)
    }

    @Test("room is counted in messages and in bytes; removeAll says what it held")
    func roomAndRemoveAll() {
        var outbox = Outbox()
        let d = delivery("t", .atLeastOnce)
        #expect(outbox.hasRoom(for: d.cost, messages: 1, bytes: d.cost))
        outbox.append(d)
        #expect(!outbox.hasRoom(for: d.cost, messages: 1, bytes: 10_000))
        #expect(!outbox.hasRoom(for: d.cost, messages: 10, bytes: 2 * d.cost - 1))
        #expect(outbox.hasRoom(for: d.cost, messages: 10, bytes: 2 * d.cost))
        // With only QoS 1 queued, nothing gives way for QoS 0 eviction.
        #expect(outbox.evictOldest(qos0Only: true) == nil)
        let removed = outbox.removeAll()
        #expect(removed.messages == 1 && removed.bytes == d.cost)
        #expect(outbox.isEmpty && outbox.bytes == 0)
    }
}
