import MartletMQTT
import NIOCore
import MartletTestSupport

func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }
func buffer(_ string: String) -> ByteBuffer { ByteBuffer(string: string) }

func encode(_ packet: MQTTPacket, _ version: ProtocolVersion) throws -> [UInt8] {
    var out = ByteBuffer()
    try packet.write(to: &out, version: version)
    return Array(out.readableBytesView)
}

/// Decodes exactly one packet that must fill `bytes`.
func decodeOne(_ bytes: [UInt8], _ version: ProtocolVersion?, maximumPacketSize: Int = 1 << 20) throws -> MQTTPacket {
    var buf = ByteBuffer(bytes: bytes)
    guard let packet = try MQTTPacket.decode(from: &buf, version: version, maximumPacketSize: maximumPacketSize) else {
        throw Incomplete()
    }
    guard buf.readableBytes == 0 else { throw Incomplete() }
    return packet
}

struct Incomplete: Error {}

