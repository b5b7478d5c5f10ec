import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Will messages (MQTT 3.1.1 section 3.1.2.5) and keepalive (3.1.2.10).
@Suite struct WillTests {
    func watcher(_ port: Int, qos: QoS = .atMostOnce) async throws -> RawClient {
        let (w, _) = try await RawClient.connected(port: port, clientID: "watcher-\(UInt32.random(in: 0...UInt32.max))")
        _ = try await w.subscribe("will/#", qos: qos)
        return w
    }

    @Test("MQTT-3.1.2-8: the will is published when the socket closes without DISCONNECT")
    func willOnSocketClose() async throws {
        try await withBroker { _, port in
            let w = try await watcher(port, qos: .atLeastOnce)
            let (c, _) = try await RawClient.connected(port: port, clientID: "dying",
                will: Will(topic: "will/dying", payload: ByteBuffer(string: "bye"), qos: .atLeastOnce))
            await c.close()
            let m = try await w.nextPublish()
            #expect(m.topic == "will/dying")
            #expect(m.payloadString == "bye")
            #expect(m.qos == .atLeastOnce)
        }
    }

    @Test("MQTT-3.14.4-3: DISCONNECT discards the will")
    func noWillOnDisconnect() async throws {
        try await withBroker { _, port in
            let w = try await watcher(port)
            let (c, _) = try await RawClient.connected(port: port, clientID: "polite",
                will: Will(topic: "will/polite", payload: ByteBuffer(string: "bye")))
            try await c.send(h("E0 00"))
            try await c.expectClosed()
            try await w.expectSilence()
        }
    }

    @Test("the will is published on a protocol error")
    func willOnProtocolError() async throws {
        try await withBroker { _, port in
            let w = try await watcher(port)
            let (c, _) = try await RawClient.connected(port: port, clientID: "rude",
                will: Will(topic: "will/rude", payload: ByteBuffer(string: "bye")))
            try await c.send(h("38 03 00 01 't'"))  // DUP on QoS 0
            try await c.expectClosed()
            #expect(try await w.nextPublish().topic == "will/rude")
        }
    }

    @Test("MQTT-3.1.2-17: a will with retain set is retained")
    func retainedWill() async throws {
        try await withBroker { broker, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "r",
                will: Will(topic: "will/retained", payload: ByteBuffer(string: "last"), retain: true))
            await c.close()
            try await waitFor(.seconds(10), "the will to be retained") { broker.retainedCount == 1 ? true : nil }
            let (late, _) = try await RawClient.connected(port: port, clientID: "late")
            _ = try await late.subscribe("will/#")
            let m = try await late.nextPublish()
            #expect(m.retain == true)
            #expect(m.payloadString == "last")
        }
    }

    @Test("MQTT-3.1.2-24 (real time): no packet within 1.5 × keepalive → closed, not before, the will published")
    func keepaliveExpiry() async throws {
        try await withBroker { _, port in
            let w = try await watcher(port)
            // Timed from before CONNECT is sent, so the broker cannot have seen it earlier.
            let start = ContinuousClock.now
            let (c, _) = try await RawClient.connected(port: port, clientID: "silent", keepAlive: 1,
                will: Will(topic: "will/silent", payload: ByteBuffer(string: "timeout")))
            try await c.expectClosed(timeout: .seconds(10))
            // A smoke test on real time: how soon after 1.5 × keepalive the sweep closes it is
            // TimeRulesTests' to check, on a manual clock.
            #expect(ContinuousClock.now - start >= .milliseconds(1500))
            #expect(try await w.nextPublish().topic == "will/silent")
        }
    }
}
