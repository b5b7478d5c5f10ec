@testable import MartletBroker
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import Testing

@Suite struct SessionTests {
    @Test func packetIdentifiersSkipThoseInFlight() {
        let s = Session(clientID: "c", version: .v3_1_1, expiryInterval: 0, inflightWindow: 10)
        let message = Message(topic: "t", payload: .init(), qos: .atLeastOnce, retain: false)
        let delivery = Delivery(message: message, qos: .atLeastOnce, retain: false, subscriptionIdentifiers: [])
        // 1 stays in flight; 2 ... 65,533 are sent and acknowledged, so the next is 65,534.
        #expect(s.inflight.send(delivery) == 1)
        for _ in 2...65_533 {
            let id = s.inflight.send(delivery)
            _ = s.inflight.acknowledge(id)
        }
        #expect(s.inflight.send(delivery) == 65_534)
        #expect(s.inflight.send(delivery) == 65_535)
        // Wraps past 0 and skips 1, which is still in flight.
        #expect(s.inflight.send(delivery) == 2)
    }

    @Test func stateRoundTripsForTakeover() {
        let s = Session(clientID: "c", version: .v5, expiryInterval: 60, inflightWindow: 5)
        s.subscriptions["a/#"] = StoredSubscription(options: .init(qos: .exactlyOnce), identifier: 7)
        s.inboundQoS2 = [3, 4]
        let message = Message(topic: "t", payload: .init(), qos: .atLeastOnce, retain: false)
        let delivery = Delivery(message: message, qos: .atLeastOnce, retain: false, subscriptionIdentifiers: [])
        for _ in 1...98 { _ = s.inflight.acknowledge(s.inflight.send(delivery)) }
        let open = s.inflight.send(delivery)
        let t = Session(clientID: "c", version: .v5, expiryInterval: 60, inflightWindow: 5)
        t.restore(s.state)
        #expect(t.subscriptions["a/#"]?.identifier == 7)
        #expect(t.inboundQoS2 == [3, 4])
        // The flow in flight and the packet identifier counter move with the session.
        #expect(open == 99 && t.inflight.flights.map(\.packetIdentifier) == [99])
        #expect(t.inflight.send(delivery) == 100)
        #expect(t.isPersistent)
    }
}
