import NIOCore

/// DISCONNECT. At 3.1.1 it has no body.
public struct DisconnectPacket: MQTTPacketBody {
    public static let packetType = PacketType.disconnect
    public var reasonCode: ReasonCode
    public var properties: Properties

    public init(reasonCode: ReasonCode = .normalDisconnection, properties: Properties = []) {
        self.reasonCode = reasonCode
        self.properties = properties
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        version.hasProperties ? reasonAndPropertiesLength(reasonCode, properties) : 0
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        guard version.hasProperties, bodyLength(version: version) > 0 else { return }
        buffer.writeInteger(reasonCode.rawValue)
        if !properties.isEmpty { try properties.write(to: &buffer) }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> DisconnectPacket {
        var packet = DisconnectPacket()
        if version.hasProperties && body.readableBytes > 0 {
            let raw = try body.readMQTTByte("reason code")
            guard AllowedReasonCodes.disconnect.contains(raw) else { throw .invalidReasonCode(raw, .disconnect) }
            packet.reasonCode = ReasonCode(raw)
            if body.readableBytes > 0 { packet.properties = try Properties.read(from: &body, context: .disconnect) }
        }
        try expectEnd(body, .disconnect)
        return packet
    }
}
