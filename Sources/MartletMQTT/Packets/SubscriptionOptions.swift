import NIOCore

/// Subscription options (MQTT 5 3.8.3.1; at 3.1.1 only the QoS bits exist).
public struct SubscriptionOptions: Sendable, Hashable {
    public enum RetainHandling: UInt8, Sendable, Hashable {
        /// Send retained messages at the time of the subscribe.
        case sendOnSubscribe = 0
        /// Send them only if the subscription did not already exist.
        case sendIfNew = 1
        /// Never send retained messages for this subscription.
        case doNotSend = 2
    }

    public var qos: QoS
    public var noLocal: Bool
    public var retainAsPublished: Bool
    public var retainHandling: RetainHandling

    public init(qos: QoS = .atMostOnce, noLocal: Bool = false, retainAsPublished: Bool = false, retainHandling: RetainHandling = .sendOnSubscribe) {
        self.qos = qos
        self.noLocal = noLocal
        self.retainAsPublished = retainAsPublished
        self.retainHandling = retainHandling
    }

    package var byte: UInt8 {
        qos.rawValue | (noLocal ? 0x04 : 0) | (retainAsPublished ? 0x08 : 0) | (retainHandling.rawValue << 4)
    }

    package static func read(_ byte: UInt8, version: ProtocolVersion) throws(MQTTCodecError) -> SubscriptionOptions {
        let qosRaw = byte & 0x03
        guard let qos = QoS(rawValue: qosRaw) else { throw .invalidQoS(qosRaw) }
        guard version.hasProperties else {
            guard byte & 0xFC == 0 else { throw .reservedBitsSet(field: "subscription options") }
            return SubscriptionOptions(qos: qos)
        }
        guard byte & 0xC0 == 0 else { throw .reservedBitsSet(field: "subscription options") }
        let rh = (byte >> 4) & 0x03
        guard let retainHandling = RetainHandling(rawValue: rh) else { throw .invalidRetainHandling(rh) }
        return SubscriptionOptions(qos: qos, noLocal: byte & 0x04 != 0, retainAsPublished: byte & 0x08 != 0, retainHandling: retainHandling)
    }
}
