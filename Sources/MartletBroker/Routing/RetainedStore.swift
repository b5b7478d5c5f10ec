import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore

/// A retained message as stored: what a new subscriber receives with RETAIN=1.
public struct RetainedMessage: Sendable, Hashable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: QoS
    public var properties: Properties
    /// When its Message Expiry Interval runs out; after that no subscriber receives it.
    public var expiresAt: NIODeadline?

    public init(topic: String, payload: ByteBuffer, qos: QoS, properties: Properties, expiresAt: NIODeadline? = nil) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.properties = properties
        self.expiresAt = expiresAt
    }
}

/// Retained messages of the whole broker, one per topic.
///
/// Shared by every event loop; writes are one dictionary update under a lock and
/// reads happen only on SUBSCRIBE, so a lock costs less here than an actor hop.
public final class RetainedStore: Sendable {
    private let storage = NIOLockedValueBox<[String: RetainedMessage]>([:])

    public init() {}

    public var count: Int { storage.withLockedValue { $0.count } }

    /// Stores `message`, or deletes the topic's retained message when the payload is empty
    /// (MQTT-3.3.1-10). With `limit` > 0 and that many topics already held, a message for a
    /// topic not held yet is refused (returns false); replacing or deleting always works.
    @discardableResult
    public func store(_ message: RetainedMessage, limit: Int = 0) -> Bool {
        storage.withLockedValue {
            if message.payload.readableBytes == 0 {
                $0.removeValue(forKey: message.topic)
                return true
            }
            if limit > 0 && $0.count >= limit && $0[message.topic] == nil { return false }
            $0[message.topic] = message
            return true
        }
    }

    /// Retained messages whose topic matches `filter`, in topic order; expired ones are
    /// deleted instead (MQTT-3.3.2-5). A filter without wildcards is one lookup; a wildcard
    /// filter is matched against every stored topic.
    public func matching(_ filter: String, now: NIODeadline = .now()) -> [RetainedMessage] {
        let exact = !filter.utf8.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") })
        let found = storage.withLockedValue { dict -> [RetainedMessage] in
            let candidates = exact ? (dict[filter].map { [$0] } ?? []) : dict.values.filter { Topic.matches(filter: filter, topic: $0.topic) }
            var live: [RetainedMessage] = []
            live.reserveCapacity(candidates.count)
            for message in candidates {
                if let expiresAt = message.expiresAt, expiresAt <= now {
                    dict.removeValue(forKey: message.topic)
                } else {
                    live.append(message)
                }
            }
            return live
        }
        return exact ? found : found.sorted { $0.topic < $1.topic }
    }
}
