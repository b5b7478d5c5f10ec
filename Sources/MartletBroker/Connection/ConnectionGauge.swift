import NIOCore
import Synchronization

/// A listener's open connections, and the broker's through `broker`.
final class ConnectionGauge: Sendable {
    let open = Atomic<Int>(0)
    let broker: BrokerCounters

    init(broker: BrokerCounters) {
        self.broker = broker
    }

    /// An admitted connection closed: one less here and broker-wide.
    func closed() {
        broker.openConnections.subtract(1, ordering: .relaxed)
        open.subtract(1, ordering: .relaxed)
    }
}

extension ChannelOptions.Types.SocketOption {
    /// An IPPROTO_TCP-level option by its Linux number.
    static func tcpOption(_ name: Int32) -> Self {
        .init(level: .tcp, name: NIOBSDSocket.Option(rawValue: name))
    }
}

extension ChannelOption where Self == ChannelOptions.Types.SocketOption {
    static func tcpOption(_ name: Int32) -> Self { .tcpOption(name) }
}
