import NIOCore

/// What every control packet type provides to the framing code in `MQTTPacket`.
public protocol MQTTPacketBody: Sendable, Hashable {
    static var packetType: PacketType { get }
    /// The low nibble of the fixed header's first byte.
    var fixedHeaderFlags: UInt8 { get }
    /// Bytes after the remaining length.
    func bodyLength(version: ProtocolVersion) -> Int
    func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError)
    /// Reads the whole body, which `body` holds exactly.
    static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> Self
}

extension MQTTPacketBody {
    public var fixedHeaderFlags: UInt8 { Self.packetType.requiredFlags }
}

func readPacketIdentifier(_ body: inout ByteBuffer, _ type: PacketType) throws(MQTTCodecError) -> UInt16 {
    let id = try body.readMQTTUInt16("packet identifier")
    guard id != 0 else { throw .zeroPacketIdentifier(type) }
    return id
}

func expectEnd(_ body: ByteBuffer, _ type: PacketType) throws(MQTTCodecError) {
    if body.readableBytes != 0 { throw .unexpectedTrailingBytes(type, count: body.readableBytes) }
}

/// The v5 shape shared by DISCONNECT and AUTH: an optional reason code and properties,
/// both left out when the code is 0x00 and there are no properties.
func reasonAndPropertiesLength(_ code: ReasonCode, _ properties: Properties) -> Int {
    if properties.isEmpty { return code == .success ? 0 : 1 }
    return 1 + properties.encodedLength
}
