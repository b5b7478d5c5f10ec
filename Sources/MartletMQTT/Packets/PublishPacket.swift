import NIOCore

/// PUBLISH. The payload is a slice of the received buffer: decoding copies no payload bytes.
public struct PublishPacket: MQTTPacketBody {
    public static let packetType = PacketType.publish

    public var topic: String
    public var payload: ByteBuffer
    public var qos: QoS
    public var retain: Bool
    public var dup: Bool
    /// Present exactly when `qos` is above 0.
    public var packetIdentifier: UInt16?
    public var properties: Properties

    public init(
        topic: String, payload: ByteBuffer, qos: QoS = .atMostOnce, retain: Bool = false, dup: Bool = false,
        packetIdentifier: UInt16? = nil, properties: Properties = []
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packetIdentifier = packetIdentifier
        self.properties = properties
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
        if qos != .atMostOnce {
            guard let id = packetIdentifier, id != 0 else { throw .zeroPacketIdentifier(.publish) }
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
        let packetIdentifier = qos == .atMostOnce ? nil : try readPacketIdentifier(&body, .publish)
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
        return PublishPacket(
            topic: topic, payload: payload, qos: qos, retain: flags & 0x01 != 0, dup: dup,
            packetIdentifier: packetIdentifier, properties: properties)
    }
}

/// The shared shape of PUBACK, PUBREC, PUBREL and PUBCOMP.
public protocol PublishAcknowledgementPacket: MQTTPacketBody {
    var packetIdentifier: UInt16 { get }
    var reasonCode: ReasonCode { get }
    var properties: Properties { get }
    init(packetIdentifier: UInt16, reasonCode: ReasonCode, properties: Properties)
    static var propertyContext: PropertyContext { get }
    static var allowedReasonCodes: Set<UInt8> { get }
}

extension PublishAcknowledgementPacket {
    /// v5 lets a success without properties drop the reason code (MQTT 5 3.4.2.1).
    private func isShortForm(_ version: ProtocolVersion) -> Bool {
        !version.hasProperties || (reasonCode == .success && properties.isEmpty)
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        if isShortForm(version) { return 2 }
        return properties.isEmpty ? 3 : 3 + properties.encodedLength
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        guard packetIdentifier != 0 else { throw .zeroPacketIdentifier(Self.packetType) }
        buffer.writeInteger(packetIdentifier)
        if isShortForm(version) { return }
        buffer.writeInteger(reasonCode.rawValue)
        if !properties.isEmpty { try properties.write(to: &buffer) }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> Self {
        let id = try readPacketIdentifier(&body, packetType)
        var code = ReasonCode.success
        var properties = Properties()
        if version.hasProperties && body.readableBytes > 0 {
            let raw = try body.readMQTTByte("reason code")
            guard allowedReasonCodes.contains(raw) else { throw .invalidReasonCode(raw, packetType) }
            code = ReasonCode(raw)
            if body.readableBytes > 0 { properties = try Properties.read(from: &body, context: propertyContext) }
        }
        try expectEnd(body, packetType)
        return Self(packetIdentifier: id, reasonCode: code, properties: properties)
    }
}

/// PUBACK: the answer to a QoS 1 PUBLISH.
public struct PubAckPacket: PublishAcknowledgementPacket {
    public static let packetType = PacketType.puback
    public static let propertyContext = PropertyContext.puback
    public static let allowedReasonCodes = AllowedReasonCodes.pubackPubrec
    public var packetIdentifier: UInt16
    public var reasonCode: ReasonCode
    public var properties: Properties
    public init(packetIdentifier: UInt16, reasonCode: ReasonCode = .success, properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCode = reasonCode
        self.properties = properties
    }
}

/// PUBREC: first answer to a QoS 2 PUBLISH.
public struct PubRecPacket: PublishAcknowledgementPacket {
    public static let packetType = PacketType.pubrec
    public static let propertyContext = PropertyContext.pubrec
    public static let allowedReasonCodes = AllowedReasonCodes.pubackPubrec
    public var packetIdentifier: UInt16
    public var reasonCode: ReasonCode
    public var properties: Properties
    public init(packetIdentifier: UInt16, reasonCode: ReasonCode = .success, properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCode = reasonCode
        self.properties = properties
    }
}

/// PUBREL: the sender releases a QoS 2 message.
public struct PubRelPacket: PublishAcknowledgementPacket {
    public static let packetType = PacketType.pubrel
    public static let propertyContext = PropertyContext.pubrel
    public static let allowedReasonCodes = AllowedReasonCodes.pubrelPubcomp
    public var packetIdentifier: UInt16
    public var reasonCode: ReasonCode
    public var properties: Properties
    public init(packetIdentifier: UInt16, reasonCode: ReasonCode = .success, properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCode = reasonCode
        self.properties = properties
    }
}

/// PUBCOMP: the end of a QoS 2 flow.
public struct PubCompPacket: PublishAcknowledgementPacket {
    public static let packetType = PacketType.pubcomp
    public static let propertyContext = PropertyContext.pubcomp
    public static let allowedReasonCodes = AllowedReasonCodes.pubrelPubcomp
    public var packetIdentifier: UInt16
    public var reasonCode: ReasonCode
    public var properties: Properties
    public init(packetIdentifier: UInt16, reasonCode: ReasonCode = .success, properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCode = reasonCode
        self.properties = properties
    }
}
