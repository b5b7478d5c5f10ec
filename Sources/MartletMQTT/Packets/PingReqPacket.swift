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
