@testable import MartletBroker
import MartletMQTT
import NIOCore
import Testing

@Suite struct OutgoingFlightsTests {
    func delivery(_ qos: QoS) -> Delivery {
        Delivery(message: Message(topic: "t", payload: ByteBuffer(string: "x"), qos: qos, retain: false),
                 qos: qos, retain: false, subscriptionIdentifiers: [])
    }

    @Test("QoS 1: PUBACK closes the flow once; a PUBACK for a QoS 2 flow or an unknown id closes nothing")
    func qos1Flow() {
        var flights = OutgoingFlights()
        let one = flights.send(delivery(.atLeastOnce))
        let two = flights.send(delivery(.exactlyOnce))
        #expect(one == 1 && two == 2 && flights.count == 2)
        let r1 = flights.acknowledge(two)
        #expect(r1 == nil)
        let r2 = flights.acknowledge(one)
        #expect(r2?.packetIdentifier == one)
        let r3 = flights.acknowledge(one)
        #expect(r3 == nil)
        #expect(flights.flights.map(\.packetIdentifier) == [2])
    }

    @Test("QoS 2 (MQTT 4.3.3): PUBREC releases, a resent PUBREC is answered again, PUBCOMP closes; a failure PUBREC ends the flow; an unknown PUBREC is not found")
    func qos2Flow() {
        var flights = OutgoingFlights()
        let id = flights.send(delivery(.exactlyOnce))
        let r4 = flights.complete(id)
        #expect(r4 == nil)  // no PUBCOMP before PUBREC
        let r5 = flights.received(pubrec: id, failed: false)
        #expect(r5.0 == .release && r5.1?.packetIdentifier == id)
        let r6 = flights.received(pubrec: id, failed: false)
        #expect(r6.0 == .releasedAlready)
        #expect(flights.flights.first?.stage == .awaitingPubComp)
        let r7 = flights.complete(id)
        #expect(r7?.stage == .awaitingPubComp)
        #expect(flights.isEmpty)
        let r8 = flights.received(pubrec: id, failed: false)
        #expect(r8.0 == .unknown && r8.1 == nil)
        let failed = flights.send(delivery(.exactlyOnce))
        let r9 = flights.received(pubrec: failed, failed: true)
        #expect(r9.0 == .ended && r9.1?.packetIdentifier == failed)
        #expect(flights.isEmpty)
    }

    @Test("MQTT-2.3.1-4: an identifier is not reused while its flow is open, across the wrap from 65535 to 1")
    func identifiersAreNotReused() {
        var flights = OutgoingFlights()
        let held = flights.send(delivery(.atLeastOnce))  // 1 stays open throughout
        var seen: Set<UInt16> = [held]
        for _ in 0..<70_000 {
            let id = flights.send(delivery(.atLeastOnce))
            #expect(id != 0 && id != held)
            seen.insert(id)
            let r10 = flights.acknowledge(id)
            #expect(r10 != nil)
        }
        #expect(seen.count == 65_535)
        let r11 = flights.abandon(held)
        #expect(r11 != nil)
        #expect(flights.isEmpty)
    }
}
