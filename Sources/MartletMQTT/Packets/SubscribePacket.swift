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

    var byte: UInt8 {
        qos.rawValue | (noLocal ? 0x04 : 0) | (retainAsPublished ? 0x08 : 0) | (retainHandling.rawValue << 4)
    }

    static func read(_ byte: UInt8, version: ProtocolVersion) throws(MQTTCodecError) -> SubscriptionOptions {
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

/// One topic filter of a SUBSCRIBE. The filter is checked by the broker (which answers
/// a bad one with a failure code in SUBACK), not by the decoder.
public struct Subscription: Sendable, Hashable {
    public var topicFilter: String
    public var options: SubscriptionOptions
    public init(topicFilter: String, options: SubscriptionOptions = .init()) {
        self.topicFilter = topicFilter
        self.options = options
    }
    public init(_ topicFilter: String, qos: QoS) {
        self.init(topicFilter: topicFilter, options: .init(qos: qos))
    }
}

/// SUBSCRIBE.
public struct SubscribePacket: MQTTPacketBody {
    public static let packetType = PacketType.subscribe
    public var packetIdentifier: UInt16
    public var subscriptions: [Subscription]
    public var properties: Properties

    public init(packetIdentifier: UInt16, subscriptions: [Subscription], properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.subscriptions = subscriptions
        self.properties = properties
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        var n = 2 + (version.hasProperties ? properties.encodedLength : 0)
        for s in subscriptions { n += MQTTString.encodedLength(s.topicFilter) + 1 }
        return n
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        guard packetIdentifier != 0 else { throw .zeroPacketIdentifier(.subscribe) }
        buffer.writeInteger(packetIdentifier)
        if version.hasProperties { try properties.write(to: &buffer) }
        for s in subscriptions {
            try buffer.writeMQTTString(s.topicFilter, "topic filter")
            buffer.writeInteger(version.hasProperties ? s.options.byte : s.options.qos.rawValue)
        }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> SubscribePacket {
        let id = try readPacketIdentifier(&body, .subscribe)
        let properties = version.hasProperties ? try Properties.read(from: &body, context: .subscribe) : Properties()
        var subscriptions: [Subscription] = []
        while body.readableBytes > 0 {
            let filter = try body.readMQTTString("topic filter")
            let options = try SubscriptionOptions.read(try body.readMQTTByte("subscription options"), version: version)
            subscriptions.append(Subscription(topicFilter: filter, options: options))
        }
        guard !subscriptions.isEmpty else { throw .noTopicFilters(.subscribe) }
        return SubscribePacket(packetIdentifier: id, subscriptions: subscriptions, properties: properties)
    }
}

/// SUBACK: one reason code per filter of the SUBSCRIBE, in order.
public struct SubAckPacket: MQTTPacketBody {
    public static let packetType = PacketType.suback
    public var packetIdentifier: UInt16
    public var reasonCodes: [ReasonCode]
    public var properties: Properties

    public init(packetIdentifier: UInt16, reasonCodes: [ReasonCode], properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCodes = reasonCodes
        self.properties = properties
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        2 + (version.hasProperties ? properties.encodedLength : 0) + reasonCodes.count
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        guard packetIdentifier != 0 else { throw .zeroPacketIdentifier(.suback) }
        buffer.writeInteger(packetIdentifier)
        if version.hasProperties { try properties.write(to: &buffer) }
        for c in reasonCodes { buffer.writeInteger(c.rawValue) }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> SubAckPacket {
        let id = try readPacketIdentifier(&body, .suback)
        let properties = version.hasProperties ? try Properties.read(from: &body, context: .suback) : Properties()
        var codes: [ReasonCode] = []
        codes.reserveCapacity(body.readableBytes)
        let allowed = version.hasProperties ? AllowedReasonCodes.suback : AllowedReasonCodes.subackV3
        while let raw = body.readInteger(as: UInt8.self) {
            guard allowed.contains(raw) else { throw .invalidReasonCode(raw, .suback) }
            codes.append(ReasonCode(raw))
        }
        guard !codes.isEmpty else { throw .truncated(field: "SUBACK reason codes") }
        return SubAckPacket(packetIdentifier: id, reasonCodes: codes, properties: properties)
    }
}

/// UNSUBSCRIBE.
public struct UnsubscribePacket: MQTTPacketBody {
    public static let packetType = PacketType.unsubscribe
    public var packetIdentifier: UInt16
    public var topicFilters: [String]
    public var properties: Properties

    public init(packetIdentifier: UInt16, topicFilters: [String], properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.topicFilters = topicFilters
        self.properties = properties
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        var n = 2 + (version.hasProperties ? properties.encodedLength : 0)
        for f in topicFilters { n += MQTTString.encodedLength(f) }
        return n
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        guard packetIdentifier != 0 else { throw .zeroPacketIdentifier(.unsubscribe) }
        buffer.writeInteger(packetIdentifier)
        if version.hasProperties { try properties.write(to: &buffer) }
        for f in topicFilters { try buffer.writeMQTTString(f, "topic filter") }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> UnsubscribePacket {
        let id = try readPacketIdentifier(&body, .unsubscribe)
        let properties = version.hasProperties ? try Properties.read(from: &body, context: .unsubscribe) : Properties()
        var filters: [String] = []
        while body.readableBytes > 0 { filters.append(try body.readMQTTString("topic filter")) }
        guard !filters.isEmpty else { throw .noTopicFilters(.unsubscribe) }
        return UnsubscribePacket(packetIdentifier: id, topicFilters: filters, properties: properties)
    }
}

/// UNSUBACK. At 3.1.1 it carries only the packet identifier.
public struct UnsubAckPacket: MQTTPacketBody {
    public static let packetType = PacketType.unsuback
    public var packetIdentifier: UInt16
    /// One per filter at v5; empty at 3.1.1.
    public var reasonCodes: [ReasonCode]
    public var properties: Properties

    public init(packetIdentifier: UInt16, reasonCodes: [ReasonCode] = [], properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCodes = reasonCodes
        self.properties = properties
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        version.hasProperties ? 2 + properties.encodedLength + reasonCodes.count : 2
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        guard packetIdentifier != 0 else { throw .zeroPacketIdentifier(.unsuback) }
        buffer.writeInteger(packetIdentifier)
        guard version.hasProperties else { return }
        try properties.write(to: &buffer)
        for c in reasonCodes { buffer.writeInteger(c.rawValue) }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> UnsubAckPacket {
        let id = try readPacketIdentifier(&body, .unsuback)
        guard version.hasProperties else {
            try expectEnd(body, .unsuback)
            return UnsubAckPacket(packetIdentifier: id)
        }
        let properties = try Properties.read(from: &body, context: .unsuback)
        var codes: [ReasonCode] = []
        while let raw = body.readInteger(as: UInt8.self) {
            guard AllowedReasonCodes.unsuback.contains(raw) else { throw .invalidReasonCode(raw, .unsuback) }
            codes.append(ReasonCode(raw))
        }
        guard !codes.isEmpty else { throw .truncated(field: "UNSUBACK reason codes") }
        return UnsubAckPacket(packetIdentifier: id, reasonCodes: codes, properties: properties)
    }
}
