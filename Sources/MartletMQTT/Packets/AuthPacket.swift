import NIOCore

/// AUTH (v5 only): extended authentication exchanges.
public struct AuthPacket: MQTTPacketBody {
    public static let packetType = PacketType.auth
    public var reasonCode: ReasonCode
    public var properties: Properties

    public init(reasonCode: ReasonCode = .success, properties: Properties = []) {
        self.reasonCode = reasonCode
        self.properties = properties
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        reasonAndPropertiesLength(reasonCode, properties)
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        guard version.hasProperties else { throw .packetNotValidAtLevel(.auth, version) }
        guard bodyLength(version: version) > 0 else { return }
        buffer.writeInteger(reasonCode.rawValue)
        if !properties.isEmpty { try properties.write(to: &buffer) }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> AuthPacket {
        // Packet type 15 is reserved before v5.
        guard version.hasProperties else { throw .invalidPacketType(PacketType.auth.rawValue) }
        var packet = AuthPacket()
        if body.readableBytes > 0 {
            let raw = try body.readMQTTByte("reason code")
            guard AllowedReasonCodes.auth.contains(raw) else { throw .invalidReasonCode(raw, .auth) }
            packet.reasonCode = ReasonCode(raw)
            if body.readableBytes > 0 { packet.properties = try Properties.read(from: &body, context: .auth) }
        }
        try expectEnd(body, .auth)
        return packet
    }
}
