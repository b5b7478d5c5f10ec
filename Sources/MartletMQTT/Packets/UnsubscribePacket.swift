import NIOCore

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
