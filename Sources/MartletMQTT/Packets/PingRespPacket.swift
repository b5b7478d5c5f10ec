import NIOCore

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
