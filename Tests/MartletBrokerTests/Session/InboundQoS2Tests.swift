@testable import MartletBroker
import Testing

@Suite struct InboundQoS2Tests {
    @Test("MQTT-4.3.3-2: a QoS 2 PUBLISH resent before its PUBREL is not delivered twice; after PUBREL the id is new again")
    func exactlyOnce() {
        var inbound = InboundQoS2()
        let first = inbound.arrived(7, receiveMaximum: nil)
        let resent = inbound.arrived(7, receiveMaximum: nil)
        let released = inbound.released(7)
        let releasedAgain = inbound.released(7)  // PUBCOMP 0x92 for an unknown id
        let reused = inbound.arrived(7, receiveMaximum: nil)
        #expect([first, resent, reused] == [.deliver, .duplicate, .deliver])
        #expect(released && !releasedAgain)
    }

    @Test("MQTT 5 3.3.4: one QoS 2 PUBLISH more than the Receive Maximum is refused, a resend of a waiting one is not; 3.1.1 has no limit")
    func receiveMaximum() {
        var inbound = InboundQoS2()
        var arrivals: [InboundQoS2.Arrival] = []
        for id: UInt16 in [1, 2, 3, 2] { arrivals.append(inbound.arrived(id, receiveMaximum: 2)) }
        #expect(arrivals == [.deliver, .deliver, .overReceiveMaximum, .duplicate])
        let released = inbound.released(1)
        let third = inbound.arrived(3, receiveMaximum: 2)
        #expect(released && third == .deliver)
        var v3 = InboundQoS2()
        let all = (UInt16(1)...1000).map { v3.arrived($0, receiveMaximum: nil) }
        #expect(all.allSatisfy { $0 == .deliver })
        #expect(v3.count == 1000)
    }
}
