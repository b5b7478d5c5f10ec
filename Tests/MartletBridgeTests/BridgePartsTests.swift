import MartletBroker
import MartletMQTT
import NIOCore
import MartletTestSupport
import Testing
@testable import MartletBridge

/// The bridge's parts without sockets: topic remapping and the 3.1.1 echo filter.
@Suite struct BridgePartsTests {
    @Test("prefix remapping as mosquitto's topic line: strip one prefix, add the other; a topic outside the prefix is not mapped")
    func remapping() {
        let out = BridgeConfiguration.Topic(filter: "sensors/#", direction: .out, qos: .atLeastOnce, localPrefix: "", remotePrefix: "site1/")
        #expect(out.localFilter == "sensors/#")
        #expect(out.remoteFilter == "site1/sensors/#")
        #expect(out.remoteTopic(forLocal: "sensors/t/1") == "site1/sensors/t/1")
        #expect(out.localTopic(forRemote: "site1/sensors/t/1") == "sensors/t/1")
        #expect(out.localTopic(forRemote: "site2/sensors/t/1") == nil)
        let into = BridgeConfiguration.Topic(filter: "commands/#", direction: .in, qos: .exactlyOnce, localPrefix: "site1/", remotePrefix: "")
        #expect(into.localTopic(forRemote: "commands/reboot") == "site1/commands/reboot")
        #expect(into.remoteTopic(forLocal: "commands/reboot") == nil)
        #expect(into.forwardsIn && !into.forwardsOut)
        let both = BridgeConfiguration.Topic(filter: "#", direction: .both)
        #expect(both.forwardsIn && both.forwardsOut)
        #expect(both.remoteTopic(forLocal: "a/b") == "a/b")
    }

    @Test("the echo filter drops one arrival per message sent, only with the same topic and payload, and forgets after its lifetime")
    func echoFilter() {
        var filter = EchoFilter(capacity: 3, lifetime: .seconds(30))
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
        func isEcho(_ topic: String, _ payload: String, at now: NIODeadline) -> Bool {
            filter.isEcho(topic: topic, payload: ByteBuffer(string: payload), now: now)
        }
        filter.sent(topic: "a", payload: ByteBuffer(string: "x"), now: t0)
        filter.sent(topic: "a", payload: ByteBuffer(string: "x"), now: t0)
        #expect(!isEcho("a", "y", at: t0))
        #expect(!isEcho("b", "x", at: t0))
        #expect(isEcho("a", "x", at: t0))
        #expect(isEcho("a", "x", at: t0))
        #expect(!isEcho("a", "x", at: t0), "two sent, two echoes dropped, the third copy is a real message")
        filter.sent(topic: "old", payload: ByteBuffer(string: "1"), now: t0)
        #expect(!isEcho("old", "1", at: t0 + .seconds(31)))
        // Capacity: the oldest is forgotten first.
        for i in 0..<4 { filter.sent(topic: "c\(i)", payload: ByteBuffer(), now: t0 + .seconds(40)) }
        #expect(!isEcho("c0", "", at: t0 + .seconds(40)))
        #expect(isEcho("c3", "", at: t0 + .seconds(40)))
    }
}
