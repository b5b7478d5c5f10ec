import NIOCore

/// PUBLISH. The payload is a slice of the received buffer: decoding copies no payload bytes.
public struct PublishPacket: MQTTPacketBody {
    public static let packetType = PacketType.publish

    /// The QoS and the packet identifier together: an identifier exists exactly for QoS 1 and 2.
    public enum Delivery: Sendable, Hashable {
        case atMostOnce
        case atLeastOnce(UInt16)
        case exactlyOnce(UInt16)

        /// QoS 1 and 2 without an identifier get 0, which no valid packet carries (encoding
        /// one throws `zeroPacketIdentifier`).
        public init(qos: QoS, packetIdentifier: UInt16?) {
            switch qos {
            case .atMostOnce: self = .atMostOnce
            case .atLeastOnce: self = .atLeastOnce(packetIdentifier ?? 0)
            case .exactlyOnce: self = .exactlyOnce(packetIdentifier ?? 0)
            }
        }

        public var qos: QoS {
            switch self {
            case .atMostOnce: .atMostOnce
            case .atLeastOnce: .atLeastOnce
            case .exactlyOnce: .exactlyOnce
            }
        }

        public var packetIdentifier: UInt16? {
            switch self {
            case .atMostOnce: nil
            case .atLeastOnce(let id), .exactlyOnce(let id): id
            }
        }
    }

    public var topic: String
    public var payload: ByteBuffer
    public var delivery: Delivery
    public var retain: Bool
    public var dup: Bool
    public var properties: Properties

    public var qos: QoS { delivery.qos }
    /// Present exactly when `qos` is above 0.
    public var packetIdentifier: UInt16? { delivery.packetIdentifier }

    public init(
        topic: String, payload: ByteBuffer, delivery: Delivery, retain: Bool = false, dup: Bool = false, properties: Properties = []
    ) {
        self.topic = topic
        self.payload = payload
        self.delivery = delivery
        self.retain = retain
        self.dup = dup
        self.properties = properties
    }

    public init(
        topic: String, payload: ByteBuffer, qos: QoS = .atMostOnce, retain: Bool = false, dup: Bool = false,
        packetIdentifier: UInt16? = nil, properties: Properties = []
    ) {
        self.init(topic: topic, payload: payload, delivery: Delivery(qos: qos, packetIdentifier: packetIdentifier),
                  retain: retain, dup: dup, properties: properties)
    }

    public var fixedHeaderFlags: UInt8 {
        (dup ? 0x08 : 0) | (qos.rawValue << 1) | (retain ? 0x01 : 0)
    }

    /// Bytes before the payload: topic, packet identifier and properties.
    public func variableHeaderLength(version: ProtocolVersion) -> Int {
        var n = 2 + topic.utf8.count
        if qos != .atMostOnce { n += 2 }
        if version.hasProperties { n += properties.encodedLength }
        return n
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        variableHeaderLength(version: version) + payload.readableBytes
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        try writeVariableHeader(to: &buffer, version: version)
        buffer.writeImmutableBuffer(payload)
    }

    /// Topic, packet identifier and properties: everything between the fixed header and the payload.
    private func writeVariableHeader(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        try buffer.writeMQTTString(topic, "topic name")
        if let id = delivery.packetIdentifier {
            guard id != 0 else { throw .zeroPacketIdentifier(.publish) }
            buffer.writeInteger(id)
        }
        if version.hasProperties { try properties.write(to: &buffer) }
    }

    /// Appends the packet without its payload: fixed header (whose remaining length counts the
    /// payload), topic, packet identifier and properties. Written before `payload` as a second
    /// buffer, it makes the whole packet without copying the payload.
    public func writeHeader(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        let length = bodyLength(version: version)
        guard length <= VariableByteInteger.maximum else { throw .valueTooLarge(field: "remaining length") }
        let header = variableHeaderLength(version: version)
        buffer.reserveCapacity(minimumWritableBytes: 1 + VariableByteInteger.encodedLength(length) + header)
        buffer.writeInteger(Self.packetType.rawValue << 4 | fixedHeaderFlags)
        buffer.writeMQTTVariableByteInteger(length)
        try writeVariableHeader(to: &buffer, version: version)
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> PublishPacket {
        let qosRaw = (flags >> 1) & 0x03
        guard let qos = QoS(rawValue: qosRaw) else { throw .invalidQoS(qosRaw) }
        let dup = flags & 0x08 != 0
        if dup && qos == .atMostOnce { throw .duplicateFlagOnQoS0 }
        let topic = try body.readMQTTString("topic name")
        let delivery: Delivery = switch qos {
        case .atMostOnce: .atMostOnce
        case .atLeastOnce: .atLeastOnce(try readPacketIdentifier(&body, .publish))
        case .exactlyOnce: .exactlyOnce(try readPacketIdentifier(&body, .publish))
        }
        let properties = version.hasProperties ? try Properties.read(from: &body, context: .publish) : Properties()
        if topic.isEmpty {
            // v5 lets a topic alias stand in for the name (MQTT-3.3.2-1 / 3.3.2.3.4).
            guard version.hasProperties else { throw .invalidTopicName(.empty) }
            guard properties.topicAlias != nil else { throw .emptyTopicWithoutAlias }
        } else {
            do { try Topic.validateName(topic) } catch { throw .invalidTopicName(error) }
        }
        let payload = body.readSlice(length: body.readableBytes)!
        if properties.payloadFormatIndicator == 1 && !MQTTString.isWellFormedUTF8(payload) {
            throw .payloadFormatInvalid
        }
        return PublishPacket(topic: topic, payload: payload, delivery: delivery, retain: flags & 0x01 != 0, dup: dup, properties: properties)
    }
}
