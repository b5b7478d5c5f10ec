import NIOCore

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
