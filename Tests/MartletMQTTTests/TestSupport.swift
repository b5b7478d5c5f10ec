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

/// Deterministic generator so a failing randomized case can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
