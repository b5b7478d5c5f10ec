import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore

/// A retained message as stored: what a new subscriber receives with RETAIN=1.
public struct RetainedMessage: Sendable, Hashable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: QoS
    public var properties: Properties
}

/// Retained messages of the whole broker, one per topic.
///
/// Shared by every event loop; writes are one dictionary update under a lock and
/// reads happen only on SUBSCRIBE, so a lock costs less here than an actor hop.
public final class RetainedStore: Sendable {
    private let storage = NIOLockedValueBox<[String: RetainedMessage]>([:])

    public init() {}

    public var count: Int { storage.withLockedValue { $0.count } }

    /// Stores `message`, or deletes the topic's retained message when the payload is empty (MQTT-3.3.1-10).
    public func store(_ message: RetainedMessage) {
        storage.withLockedValue {
            if message.payload.readableBytes == 0 {
                $0.removeValue(forKey: message.topic)
            } else {
                $0[message.topic] = message
            }
        }
    }

    /// Retained messages whose topic matches `filter`, in topic order.
    public func matching(_ filter: String) -> [RetainedMessage] {
        let all = storage.withLockedValue { dict in
            dict.values.filter { Topic.matches(filter: filter, topic: $0.topic) }
        }
        return all.sorted { $0.topic < $1.topic }
    }
}
