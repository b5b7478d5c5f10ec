import Logging
import NIOConcurrencyHelpers

/// What every router shares: configuration, the client-id registry, the retained store
/// and broker-wide counters.
final class BrokerCore: Sendable {
    let configuration: BrokerConfiguration
    let registry = SessionRegistry()
    let retained = RetainedStore()
    let counters = BrokerCounters()
    let logger: Logger

    init(configuration: BrokerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }
}

/// Broker-wide totals. Routers add to them in batches, not per message.
public final class BrokerCounters: Sendable {
    public struct Snapshot: Sendable, Hashable {
        public var connections = 0
        public var messagesReceived = 0
        public var messagesSent = 0
        public var droppedQueueFull = 0
        public var droppedTooLarge = 0
        public var keepaliveExpiries = 0
        public var protocolErrors = 0
    }
    private let box = NIOLockedValueBox(Snapshot())

    public var snapshot: Snapshot { box.withLockedValue { $0 } }

    func update(_ body: (inout Snapshot) -> Void) {
        box.withLockedValue { body(&$0) }
    }
}
