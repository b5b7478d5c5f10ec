import MartletMQTT
import NIOCore

/// libFuzzer entry point: the input is a byte stream from a peer. The first byte picks
/// the level the connection speaks and how the stream is split into reads; the
/// decoder must turn the rest into packets or a typed error, never a crash, a hang
/// or an allocation beyond the maximum packet size. Every decoded packet must
/// re-encode and decode to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let selector = data[0]
    let versions: [ProtocolVersion?] = [nil, .v3_1, .v3_1_1, .v5]
    let version = versions[Int(selector & 0x03)]
    let chunk = Int(selector >> 2) + 1
    let bytes = UnsafeBufferPointer(start: data + 1, count: size - 1)

    let processor = NIOSingleStepByteToMessageProcessor(MQTTPacketDecoder(version: version, maximumPacketSize: 1 << 16))
    var index = 0
    // The level the stream speaks: fixed for a client, learned from CONNECT for a server,
    // exactly as the decoder itself learns it.
    var streamLevel = version
    do {
        while index < bytes.count {
            let end = min(index + chunk, bytes.count)
            let buffer = ByteBuffer(bytes: bytes[index..<end])
            try processor.process(buffer: buffer) { packet in
                let level: ProtocolVersion
                if case .connect(let c) = packet {
                    level = c.protocolVersion
                    if streamLevel == nil { streamLevel = c.protocolVersion }
                } else {
                    level = streamLevel ?? .v3_1_1
                }
                var out = ByteBuffer()
                do {
                    try packet.write(to: &out, version: level)
                } catch {
                    return  // e.g. a decoded field the encoder refuses; not a crash
                }
                var again = out
                let decoded = try? MQTTPacket.decode(from: &again, version: level, maximumPacketSize: 1 << 20)
                if decoded != packet {
                    fatalError("round trip changed \(packet) into \(String(describing: decoded))")
                }
            }
            index = end
        }
    } catch is MQTTCodecError {
        return 0
    } catch {
        return 0
    }
    return 0
}
