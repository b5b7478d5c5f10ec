import NIOCore

/// PINGREQ: no body.
public struct PingReqPacket: MQTTPacketBody {
    public static let packetType = PacketType.pingreq
    public init() {}
    public func bodyLength(version: ProtocolVersion) -> Int { 0 }
    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {}
    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> PingReqPacket {
        try expectEnd(body, .pingreq)
        return PingReqPacket()
    }
}

/// PINGRESP: no body.
public struct PingRespPacket: MQTTPacketBody {
    public static let packetType = PacketType.pingresp
    public init() {}
    public func bodyLength(version: ProtocolVersion) -> Int { 0 }
    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {}
    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> PingRespPacket {
        try expectEnd(body, .pingresp)
        return PingRespPacket()
    }
}

/// The v5 shape shared by DISCONNECT and AUTH: an optional reason code and properties,
/// both left out when the code is 0x00 and there are no properties.
private func reasonAndPropertiesLength(_ code: ReasonCode, _ properties: Properties) -> Int {
    if properties.isEmpty { return code == .success ? 0 : 1 }
    return 1 + properties.encodedLength
}

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
