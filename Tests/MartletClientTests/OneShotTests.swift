import Foundation
import MartletClient
import MartletMQTT
import MartletTLS
import NIOCore
import Testing
import MartletTestSupport

@Suite struct OneShotTests {
    @Test("MQTTURL parses user, password, host, port and topic, with escapes and defaults")
    func urls() throws {
        let u = try MQTTURL(string: "mqtt://al%40ice:p%3Ass@broker.local:1884/a/b%20c")
        #expect(!u.secure && u.user == "al@ice" && u.password == "p:ss")
        #expect(u.host == "broker.local" && u.port == 1884 && u.topic == "a/b c")
        #expect(try MQTTURL(string: "mqtts://h/t").port == 8883)
        #expect(try MQTTURL(string: "mqtt://[::1]:1999/t").host == "::1")
        #expect(throws: MQTTURL.ParseError.scheme) { try MQTTURL(string: "http://h/t") }
        // WebSocket URLs: the first path segment is the endpoint, the rest the topic.
        let ws = try MQTTURL(string: "ws://broker.local:8080/mqtt/sensors/1")
        #expect(ws.webSocketPath == "/mqtt" && ws.topic == "sensors/1" && ws.port == 8080 && !ws.secure)
        #expect(try MQTTURL(string: "wss://h/ws/t").port == 443)
        #expect(try MQTTURL(string: "wss://h/ws/t").secure)
        #expect(try MQTTURL(string: "mqtt://h/t").webSocketPath == nil)
        #expect(throws: MQTTURL.ParseError.noTopic) { try MQTTURL(string: "ws://h/mqtt") }
        #expect(throws: MQTTURL.ParseError.noTopic) { try MQTTURL(string: "mqtt://h") }
        #expect(throws: MQTTURL.ParseError.badPort) { try MQTTURL(string: "mqtt://h:x/t") }
    }

    @Test("publish(to: URL) connects, publishes at QoS 1 and disconnects, against martletd and mosquitto")
    func oneShot() async throws {
        for start in [withMartlet, { try await withMosquitto($1) }] as [(TLSConfiguration?, (Int) async throws -> Void) async throws -> Void] {
            try await start(nil) { port in
                let sub = try await MQTTClient.connect(.init(port: port, clientID: "watcher"))
                try await sub.subscribe("oneshot/#", qos: .atLeastOnce)
                try await MQTTClient.publish(to: URL(string: "mqtt://127.0.0.1:\(port)/oneshot/x")!, payload: ByteBuffer(string: "once"))
                let got = try await next(1, from: sub)
                #expect(got.map(\.topic) == ["oneshot/x"])
                try await sub.disconnect()
            }
        }
    }

    @Test("the pool keeps at most `size` warm connections and reuses them")
    func pool() async throws {
        try await withBroker { broker, port in
            let pool = MQTTClientPool(.init(port: port, clientID: "pooled"), size: 2)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<20 {
                    group.addTask { try await pool.publish("pool/\(i)", payload: ByteBuffer(string: "\(i)")) }
                }
                try await group.waitForAll()
            }
            #expect(await pool.openConnections <= 2)
            #expect(try await broker.statistics().connections <= 2)
            // Later publications reuse the warm connections: no new connection is accepted.
            // Counters are folded in once per sweep (100 ms in tests).
            let accepted = try await waitFor(.seconds(10), "the accepted counter") { () -> Int? in
                let n = broker.counters.connectionsAccepted
                return n > 0 && n <= 2 ? n : nil
            }
            for i in 0..<5 { try await pool.publish("pool/later", payload: ByteBuffer(string: "\(i)")) }
            try await waitFor(.seconds(10), "25 messages received") { broker.counters.messagesReceived == 25 ? true : nil }
            #expect(broker.counters.connectionsAccepted == accepted)
            await pool.close()
        }
    }
}
