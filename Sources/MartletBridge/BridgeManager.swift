import Logging
import MartletBroker
import NIOConcurrencyHelpers

/// The running bridges, by name. `apply` takes a (re)loaded configuration: bridges added
/// start, removed ones stop (their local session ends), changed ones restart, and the
/// others are not touched.
public final class BridgeManager: Sendable {
    private let broker: MQTTBroker
    private let logger: Logger
    private let bridges = NIOLockedValueBox<[String: Bridge]>([:])
    /// One `apply` or `shutdown` at a time, in call order.
    private let serial = SerialQueue()

    public init(broker: MQTTBroker, logger: Logger) {
        self.broker = broker
        self.logger = logger
        let bridges = self.bridges
        broker.addMetricsSource {
            let running = bridges.withLockedValue { $0.values.sorted { $0.configuration.name < $1.configuration.name } }
            return Array(running.map { $0.statistics.render(bridge: $0.configuration.name, inflight: $0.inflight) }.joined().utf8)
        }
    }

    /// One bridge's figures now (nil: no bridge of that name runs).
    public func status(_ name: String) -> BridgeStatus? {
        guard let bridge = bridges.withLockedValue({ $0[name] }) else { return nil }
        let s = bridge.statistics
        return BridgeStatus(
            connected: s.connected.load(ordering: .relaxed) == 1, sent: s.sent.load(ordering: .relaxed),
            received: s.received.load(ordering: .relaxed), droppedTooLarge: s.droppedTooLarge.load(ordering: .relaxed),
            droppedRefused: s.droppedRefused.load(ordering: .relaxed), echoesDropped: s.echoesDropped.load(ordering: .relaxed),
            reconnects: s.reconnects.load(ordering: .relaxed), inflight: bridge.inflight,
            queuedMessages: s.queue.withLockedValue { $0?.queuedMessages ?? 0 }, queuedBytes: s.queue.withLockedValue { $0?.queuedBytes ?? 0 },
            dropped: s.dropped)
    }

    public func apply(_ configurations: [BridgeConfiguration]) async {
        await serial.run {
            let running = self.bridges.withLockedValue { $0 }
            let wanted = Dictionary(configurations.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            for (name, bridge) in running where wanted[name] != bridge.configuration {
                let removed = wanted[name] == nil
                self.logger.info(removed ? "bridge removed" : "bridge changed: restarting", metadata: ["bridge": "\(name)"])
                await bridge.stop(discard: removed)
                _ = self.bridges.withLockedValue { $0.removeValue(forKey: name) }
            }
            for configuration in configurations where self.bridges.withLockedValue({ $0[configuration.name] }) == nil {
                let bridge = Bridge(configuration: configuration, broker: self.broker, logger: self.logger,
                                    replacing: running[configuration.name]?.configuration)
                self.bridges.withLockedValue { $0[configuration.name] = bridge }
                self.logger.info("bridge starting", metadata: [
                    "bridge": "\(configuration.name)", "remote": "\(configuration.host):\(configuration.port)",
                    "topics": "\(configuration.topics.count)",
                ])
                bridge.start()
            }
        }
    }

    /// Stops every bridge; their local sessions keep what waits for the remote.
    public func shutdown() async {
        await serial.run {
            let running = self.bridges.withLockedValue { s in
                defer { s = [:] }
                return Array(s.values)
            }
            for bridge in running { await bridge.stop(discard: false) }
        }
    }
}

/// A bridge's state and totals since it started.
public struct BridgeStatus: Sendable, Hashable {
    public var connected: Bool
    /// Messages the remote acknowledged (QoS 0: sent).
    public var sent: Int
    /// Messages from the remote this broker acknowledged (QoS 0: published here).
    public var received: Int
    public var droppedTooLarge: Int
    public var droppedRefused: Int
    /// Copies a 3.1.1 remote sent back of what the bridge published there, dropped.
    public var echoesDropped: Int
    public var reconnects: Int
    public var inflight: Int
    /// What waits in the bridge's queue (its session here), as last read (once a second).
    public var queuedMessages: Int
    public var queuedBytes: Int
    /// Drops by reason (`queue_full`, `evicted`, … of the queue; `too_large`, `refused`).
    public var dropped: [String: Int]
}

/// Runs async blocks one after another.
final class SerialQueue: Sendable {
    private let tail = NIOLockedValueBox<Task<Void, Never>?>(nil)

    func run(_ body: @escaping @Sendable () async -> Void) async {
        let task = tail.withLockedValue { last -> Task<Void, Never> in
            let previous = last
            let next = Task {
                await previous?.value
                await body()
            }
            last = next
            return next
        }
        await task.value
    }
}
