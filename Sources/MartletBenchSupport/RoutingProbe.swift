import Logging
import MartletBroker
import MartletMQTT
import NIOCore
import NIOEmbedded

/// One router on an embedded event loop with a publisher and `subscribers` subscribers of one
/// topic, all connected through the real connection handler: what the microbenchmarks
/// (Benchmarks/RoutingBenchmarks) drive to measure one QoS 0 PUBLISH from the publisher's
/// bytes to every subscriber's write, without sockets. Not used by the broker itself.
///
/// Not Sendable: it lives on the thread that made it (the embedded loop's).
public final class RoutingProbe {
    private let loop: EmbeddedEventLoop
    private let router: Router
    private let publisher: EmbeddedChannel
    private let subscribers: [EmbeddedChannel]
    private let publish: ByteBuffer

    /// Connects the clients (v3.1.1, QoS 0 subscriptions to `topic`) and encodes the PUBLISH.
    public init(subscribers count: Int, topic: String = "bench/topic", payloadSize: Int = 64) throws {
        let loop = EmbeddedEventLoop()
        self.loop = loop
        var configuration = BrokerConfiguration()
        configuration.eventLoops = 1
        let core = BrokerCore(configuration: configuration, logger: Logger(label: "martlet.probe", factory: { _ in SwiftLogNoOpLogHandler() }))
        // Every client shares one listener's settings, as accepted connections do.
        let settings = core.connectionSettings.withLockedValue { $0[0] }
        let router = Router(index: 0, eventLoop: loop, core: core, customExecutor: InlineExecutor())
        self.router = router
        router.assumeIsolated { $0.start(peers: [router]) }

        func client(_ id: String) throws -> EmbeddedChannel {
            let channel = EmbeddedChannel(loop: loop)
            try channel.pipeline.syncOperations.addHandler(makeConnectionHandler(router: router, settings: settings, logger: core.logger))
            try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
            var connect = ByteBuffer()
            try MQTTPacket.connect(ConnectPacket(keepAlive: 0, clientIdentifier: id)).write(to: &connect, version: .v3_1_1)
            try channel.writeInbound(connect)
            channel.pipeline.fireChannelReadComplete()
            return channel
        }
        var subscribers: [EmbeddedChannel] = []
        for i in 0..<count {
            let channel = try client("s\(i)")
            var subscribe = ByteBuffer()
            try MQTTPacket.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init(topic, qos: .atMostOnce)]))
                .write(to: &subscribe, version: .v3_1_1)
            try channel.writeInbound(subscribe)
            channel.pipeline.fireChannelReadComplete()
            subscribers.append(channel)
        }
        self.subscribers = subscribers
        publisher = try client("p")
        var publish = ByteBuffer()
        try MQTTPacket.publish(PublishPacket(topic: topic, payload: ByteBuffer(repeating: 0x5A, count: payloadSize), qos: .atMostOnce))
            .write(to: &publish, version: .v3_1_1)
        self.publish = publish
        _ = discardOutput()
    }

    /// Feeds one PUBLISH to the publisher's connection (one read burst), routes it, and
    /// returns how many subscribers it was written to (their output is discarded).
    @discardableResult
    public func routeOne() throws -> Int {
        try publisher.writeInbound(publish)
        publisher.pipeline.fireChannelReadComplete()  // the end of the read burst: the router flushes
        return discardOutput()
    }

    /// Drops what the clients were sent; returns how many subscriber writes there were.
    private func discardOutput() -> Int {
        var writes = 0
        for channel in subscribers {
            while let _ = try? channel.readOutbound(as: ByteBuffer.self) { writes += 1 }
        }
        while let _ = try? publisher.readOutbound(as: ByteBuffer.self) {}
        return writes
    }
}

/// Runs a job at once on the calling thread and treats every caller as isolated. Only for
/// RoutingProbe and the broker's manual-clock unit tests, where one thread does everything on an embedded loop (which cannot serve as
/// an executor itself).
public final class InlineExecutor: SerialExecutor {
    public init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        job.runSynchronously(on: asUnownedSerialExecutor())
    }

    public func checkIsolated() {}

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }
}
