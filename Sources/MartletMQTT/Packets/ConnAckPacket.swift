import NIOCore

/// CONNACK.
public struct ConnAckPacket: MQTTPacketBody {
    public static let packetType = PacketType.connack

    public var sessionPresent: Bool
    /// At 3.1.1 this is the connect return code (0…5), see `ConnectReturnCode`.
    public var reasonCode: ReasonCode
    public var properties: Properties

    public init(sessionPresent: Bool = false, reasonCode: ReasonCode = .success, properties: Properties = []) {
        self.sessionPresent = sessionPresent
        self.reasonCode = reasonCode
        self.properties = properties
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        2 + (version.hasProperties ? properties.encodedLength : 0)
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        buffer.writeInteger(UInt8(sessionPresent ? 1 : 0))
        buffer.writeInteger(reasonCode.rawValue)
        if version.hasProperties { try properties.write(to: &buffer) }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> ConnAckPacket {
        let ack = try body.readMQTTByte("connect acknowledge flags")
        guard ack & 0xFE == 0 else { throw .reservedBitsSet(field: "connect acknowledge flags") }
        let code = try body.readMQTTByte("connect reason code")
        if version.hasProperties {
            guard AllowedReasonCodes.connack.contains(code) else { throw .invalidReasonCode(code, .connack) }
        } else {
            guard AllowedReasonCodes.connackV3.contains(code) else { throw .invalidReasonCode(code, .connack) }
        }
        let properties = version.hasProperties ? try Properties.read(from: &body, context: .connack) : Properties()
        try expectEnd(body, .connack)
        return ConnAckPacket(sessionPresent: ack & 1 != 0, reasonCode: ReasonCode(code), properties: properties)
    }
}
