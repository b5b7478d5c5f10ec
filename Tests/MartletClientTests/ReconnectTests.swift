import Foundation
import MartletBroker
import MartletClient
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
import MartletTestSupport

@Suite struct ReconnectTests {
    static let quick = ReconnectPolicy(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(400))

    func reconnectsAndResubscribes(port: Int, restart: () async throws -> Void) async throws {
        var config = MQTTClientConfiguration(port: port, clientID: "resilient")
        config.reconnect = Self.quick
        let client = try await MQTTClient.connect(config)
        try await client.subscribe("r/#", qos: .atLeastOnce)
        try await restart()
        // The broker forgot everything; the client comes back and subscribes again.
        try await waitFor(.seconds(10), "the client to reconnect") { client.reconnectCount >= 1 ? true : nil }
        let publisher = try await MQTTClient.connect(.init(port: port, clientID: "pub"))
        let received = try await withThrowingTaskGroup(of: [ReceivedMessage].self) { group in
            group.addTask { try await next(1, from: client, timeout: .seconds(10)) }
            // Until the resubscription has landed, publications may find no subscriber.
            group.addTask {
                for i in 0..<100 {
                    try await publisher.publish("r/\(i)", payload: ByteBuffer(string: "after restart"), qos: .atLeastOnce)
                    try await Task.sleep(for: .milliseconds(50))
                }
                return []
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
        #expect(received.first?.payload == ByteBuffer(string: "after restart"))
        try await client.disconnect()
        try await publisher.disconnect()
    }

    @Test("reconnect after martletd restarts, with resubscribe")
    func reconnectMartlet() async throws {
        var config = BrokerConfiguration()
        config.listeners = [.init(host: "127.0.0.1", port: 0)]
        config.eventLoops = 1
        config.sysInterval = .zero
        let first = MQTTBroker(configuration: config)
        try await first.start()
        let port = first.localAddresses[0].port!
        config.listeners = [.init(host: "127.0.0.1", port: port)]
        let second = MQTTBroker(configuration: config)
        try await reconnectsAndResubscribes(port: port) {
            try await first.shutdown()
            try await second.start()
        }
        try await second.shutdown()
    }

    @Test("reconnect after Debian's mosquitto restarts, with resubscribe")
    func reconnectMosquitto() async throws {
        let port = Int.random(in: 20_000...29_000)
        var broker = try await startMosquitto(port: port)
        try await reconnectsAndResubscribes(port: port) {
            await stopMosquitto(broker)
            broker = try await startMosquitto(port: port)
        }
        await stopMosquitto(broker)
    }

    @Test("QoS 2 exactly once across reconnects: connections cut mid-stream, every message delivered once")
    func qos2ExactlyOnceAcrossReconnect() async throws {
        try await withBroker { broker, port in
            let proxy = try await CuttableProxy(to: port)
            defer { proxy.close() }
            let subscriber = try await MQTTClient.connect(.init(port: port, clientID: "counter"))
            try await subscriber.subscribe("once/#", qos: .exactlyOnce)
            var config = MQTTClientConfiguration(port: proxy.port, clientID: "publisher")
            config.cleanStart = false
            config.reconnect = Self.quick
            let publisher = try await MQTTClient.connect(config)
            let count = 200
            let publishing = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in 0..<count {
                        group.addTask {
                            try await publisher.publish("once/\(i)", payload: ByteBuffer(string: "\(i)"), qos: .exactlyOnce)
                        }
                    }
                    try await group.waitForAll()
                }
            }
            // Cut the publisher's connection three times while its flows are in progress.
            for cuts in 1...3 {
                try await Task.sleep(for: .milliseconds(30))
                proxy.cut()
                try await waitFor(.seconds(10), "reconnect \(cuts)") { publisher.reconnectCount >= cuts ? true : nil }
            }
            try await publishing.value
            #expect(publisher.reconnectCount >= 1)
            let got = try await next(count, from: subscriber, timeout: .seconds(20))
            #expect(Set(got.map { String(buffer: $0.payload) }).count == count)
            // Nothing more: no duplicates trail in.
            let extra = try? await next(1, from: subscriber, timeout: .milliseconds(500))
            #expect(extra == nil)
            try await publisher.disconnect()
            _ = broker
        }
    }

    @Test("waitUntilClosed: not on a lost connection that is re-established; on disconnect(), on giving up, and on a loss without reconnect")
    func waitUntilClosed() async throws {
        try await withBroker { _, port in
            let proxy = try await CuttableProxy(to: port)
            defer { proxy.close() }
            func watch(_ client: MQTTClient) -> NIOLockedValueBox<Bool> {
                let closed = NIOLockedValueBox(false)
                Task {
                    await client.waitUntilClosed()
                    closed.withLockedValue { $0 = true }
                }
                return closed
            }
            var config = MQTTClientConfiguration(port: proxy.port, clientID: "waiter")
            config.reconnect = Self.quick
            let client = try await MQTTClient.connect(config)
            let closed = watch(client)
            proxy.cut()
            try await waitFor(.seconds(10), "the reconnect") { client.reconnectCount >= 1 ? true : nil }
            #expect(closed.withLockedValue { $0 } == false)
            try await client.disconnect()
            try await waitFor(.seconds(10), "waitUntilClosed after disconnect()") { closed.withLockedValue { $0 } ? true : nil }
            await client.waitUntilClosed()  // already closed: returns at once

            // Reconnecting gives up after two attempts against a port nothing listens on.
            let gone = try await CuttableProxy(to: port)
            config.port = gone.port
            config.clientID = "giving-up"
            config.reconnect = ReconnectPolicy(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(40), maximumAttempts: 2)
            let quitter = try await MQTTClient.connect(config)
            let quitterClosed = watch(quitter)
            gone.close()
            try await waitFor(.seconds(10), "waitUntilClosed after giving up") { quitterClosed.withLockedValue { $0 } ? true : nil }

            config.port = proxy.port
            config.clientID = "no-reconnect"
            config.reconnect = nil
            let plain = try await MQTTClient.connect(config)
            let plainClosed = watch(plain)
            proxy.cut()
            try await waitFor(.seconds(10), "waitUntilClosed after the loss") { plainClosed.withLockedValue { $0 } ? true : nil }
        }
    }

    @Test("dead-broker detection: a broker that stops answering PINGREQ is left, and the client reconnects")
    func deadBrokerDetection() async throws {
        // Answers CONNECT with CONNACK, then never says anything again.
        let connections = NIOLockedValueBox(0)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                connections.withLockedValue { $0 += 1 }
                return channel.pipeline.addHandler(SilentBroker())
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        var config = MQTTClientConfiguration(port: server.localAddress!.port!, clientID: "watchful")
        config.keepAlive = 1
        config.reconnect = Self.quick
        let start = ContinuousClock.now
        let client = try await MQTTClient.connect(config)
        try await waitFor(.seconds(6), "the second connection") { connections.withLockedValue { $0 } >= 2 ? true : nil }
        // Two keepalive intervals without PINGRESP, then the backoff.
        #expect(ContinuousClock.now - start >= .seconds(2))
        try await client.disconnect()
    }
}

/// A fake broker for dead-peer tests: CONNACK to the first bytes, silence afterwards.
final class SilentBroker: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let answered = NIOLockedValueBox(false)
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let first = answered.withLockedValue { a in defer { a = true }; return !a }
        if first { context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: [0x20, 0x02, 0x00, 0x00])), promise: nil) }
    }
}

