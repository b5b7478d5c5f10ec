import NIOCore

/// Streaming decoder: bytes in any split in, whole packets out.
///
/// As a server it learns the protocol level from the CONNECT it decodes; as a
/// client it is told the level it asked for.
public struct MQTTPacketDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = MQTTPacket

    /// The largest packet accepted, fixed header included (v5 "Maximum Packet Size").
    public var maximumPacketSize: Int
    public var version: ProtocolVersion?

    public static let defaultMaximumPacketSize = 268_435_460

    public init(version: ProtocolVersion? = nil, maximumPacketSize: Int = MQTTPacketDecoder.defaultMaximumPacketSize) {
        self.version = version
        self.maximumPacketSize = maximumPacketSize
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> MQTTPacket? {
        guard let packet = try MQTTPacket.decode(from: &buffer, version: version, maximumPacketSize: maximumPacketSize) else {
            return nil
        }
        if version == nil, case .connect(let connect) = packet {
            version = connect.protocolVersion
        }
        return packet
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> MQTTPacket? {
        try decode(buffer: &buffer)
    }
}

/// Turns a connection's reads into packets, keeping no read buffer alive between packets:
/// only the start of an unfinished packet is kept, copied into a buffer of its own size.
/// An idle connection therefore holds no receive memory.
public struct MQTTPacketFramer {
    public var decoder: MQTTPacketDecoder
    private var partial: ByteBuffer?

    public init(decoder: MQTTPacketDecoder) {
        self.decoder = decoder
    }

    /// Bytes of an unfinished packet held from earlier reads.
    public var bufferedBytes: Int { partial?.readableBytes ?? 0 }
    /// Memory held for that unfinished packet.
    public var bufferedCapacity: Int { partial?.capacity ?? 0 }

    /// Calls `body` for each whole packet, in order; `body` returns false to stop: the rest
    /// is held, and decoded by the next call (which may pass an empty buffer). Throws the
    /// decoder's errors.
    public mutating func process(_ incoming: ByteBuffer, allocator: ByteBufferAllocator, _ body: (MQTTPacket) throws -> Bool) throws {
        var incoming = incoming
        let continuing = partial != nil
        var buffer: ByteBuffer
        if var p = partial {
            partial = nil
            p.writeBuffer(&incoming)
            buffer = p
        } else {
            buffer = incoming
        }
        while let packet = try decoder.decode(buffer: &buffer) {
            guard try body(packet) else { break }
        }
        guard buffer.readableBytes > 0 else { return }
        if continuing && buffer.readerIndex == 0 {
            partial = buffer  // already our own buffer, and nothing in it was consumed
        } else {
            // A fresh buffer for the unfinished packet: reusing one whose front was consumed
            // would grow it by a read's worth on every packet of a continuous stream.
            var own = allocator.buffer(capacity: buffer.readableBytes)
            own.writeBuffer(&buffer)
            partial = own
        }
    }

    /// Holds `incoming` behind what is already held, without decoding (the reader is paused).
    public mutating func hold(_ incoming: ByteBuffer, allocator: ByteBufferAllocator) {
        var incoming = incoming
        guard incoming.readableBytes > 0 else { return }
        if var p = partial {
            partial = nil
            p.writeBuffer(&incoming)
            partial = p
        } else {
            var own = allocator.buffer(capacity: incoming.readableBytes)
            own.writeBuffer(&incoming)
            partial = own
        }
    }
}
