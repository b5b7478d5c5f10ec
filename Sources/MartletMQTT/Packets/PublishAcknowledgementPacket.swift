import NIOCore

/// What tells PUBACK, PUBREC, PUBREL and PUBCOMP apart: the packet type, where their
/// properties may appear, and the reason codes each may carry.
public protocol AcknowledgementKind: Sendable {
    static var packetType: PacketType { get }
    static var propertyContext: PropertyContext { get }
    static var allowedReasonCodes: Set<UInt8> { get }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (`PubAckPacket`, … name each): a packet identifier, a
/// reason code and properties, coded alike.
public struct PublishAcknowledgement<Kind: AcknowledgementKind>: PublishAcknowledgementPacket {
    public static var packetType: PacketType { Kind.packetType }
    public static var propertyContext: PropertyContext { Kind.propertyContext }
    public static var allowedReasonCodes: Set<UInt8> { Kind.allowedReasonCodes }
    public var packetIdentifier: UInt16
    public var reasonCode: ReasonCode
    public var properties: Properties

    public init(packetIdentifier: UInt16, reasonCode: ReasonCode = .success, properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCode = reasonCode
        self.properties = properties
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
