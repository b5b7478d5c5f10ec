import NIOCore

/// Any MQTT control packet.
public enum MQTTPacket: Sendable, Hashable {
    case connect(ConnectPacket)
    case connack(ConnAckPacket)
    case publish(PublishPacket)
    case puback(PubAckPacket)
    case pubrec(PubRecPacket)
    case pubrel(PubRelPacket)
    case pubcomp(PubCompPacket)
    case subscribe(SubscribePacket)
    case suback(SubAckPacket)
    case unsubscribe(UnsubscribePacket)
    case unsuback(UnsubAckPacket)
    case pingreq
    case pingresp
    case disconnect(DisconnectPacket)
    case auth(AuthPacket)

    public var type: PacketType {
        switch self {
        case .connect: return .connect
        case .connack: return .connack
        case .publish: return .publish
        case .puback: return .puback
        case .pubrec: return .pubrec
        case .pubrel: return .pubrel
        case .pubcomp: return .pubcomp
        case .subscribe: return .subscribe
        case .suback: return .suback
        case .unsubscribe: return .unsubscribe
        case .unsuback: return .unsuback
        case .pingreq: return .pingreq
        case .pingresp: return .pingresp
        case .disconnect: return .disconnect
        case .auth: return .auth
        }
    }

    // MARK: Encoding

    /// Appends the whole packet (fixed header included) to `buffer`.
    public func write(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        switch self {
        case .connect(let p): try Self.write(p, to: &buffer, version: version)
        case .connack(let p): try Self.write(p, to: &buffer, version: version)
        case .publish(let p): try Self.write(p, to: &buffer, version: version)
        case .puback(let p): try Self.write(p, to: &buffer, version: version)
        case .pubrec(let p): try Self.write(p, to: &buffer, version: version)
        case .pubrel(let p): try Self.write(p, to: &buffer, version: version)
        case .pubcomp(let p): try Self.write(p, to: &buffer, version: version)
        case .subscribe(let p): try Self.write(p, to: &buffer, version: version)
        case .suback(let p): try Self.write(p, to: &buffer, version: version)
        case .unsubscribe(let p): try Self.write(p, to: &buffer, version: version)
        case .unsuback(let p): try Self.write(p, to: &buffer, version: version)
        case .pingreq: try Self.write(PingReqPacket(), to: &buffer, version: version)
        case .pingresp: try Self.write(PingRespPacket(), to: &buffer, version: version)
        case .disconnect(let p): try Self.write(p, to: &buffer, version: version)
        case .auth(let p): try Self.write(p, to: &buffer, version: version)
        }
    }

    /// Writes one packet body with its fixed header; the length is computed before any byte is written.
    public static func write<P: MQTTPacketBody>(_ packet: P, to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        let length = packet.bodyLength(version: version)
        guard length <= VariableByteInteger.maximum else { throw .valueTooLarge(field: "remaining length") }
        buffer.reserveCapacity(minimumWritableBytes: 1 + VariableByteInteger.encodedLength(length) + length)
        buffer.writeInteger(P.packetType.rawValue << 4 | packet.fixedHeaderFlags)
        buffer.writeMQTTVariableByteInteger(length)
        let start = buffer.writerIndex
        try packet.writeBody(to: &buffer, version: version)
        assert(buffer.writerIndex - start == length, "\(P.packetType) wrote \(buffer.writerIndex - start) bytes, announced \(length)")
    }

    /// Total encoded size, fixed header included.
    public func encodedLength(version: ProtocolVersion) -> Int {
        func total<P: MQTTPacketBody>(_ p: P) -> Int {
            let n = p.bodyLength(version: version)
            return 1 + VariableByteInteger.encodedLength(n) + n
        }
        switch self {
        case .connect(let p): return total(p)
        case .connack(let p): return total(p)
        case .publish(let p): return total(p)
        case .puback(let p): return total(p)
        case .pubrec(let p): return total(p)
        case .pubrel(let p): return total(p)
        case .pubcomp(let p): return total(p)
        case .subscribe(let p): return total(p)
        case .suback(let p): return total(p)
        case .unsubscribe(let p): return total(p)
        case .unsuback(let p): return total(p)
        case .pingreq, .pingresp: return 2
        case .disconnect(let p): return total(p)
        case .auth(let p): return total(p)
        }
    }

    // MARK: Decoding

    /// The fixed header of a packet whose bytes may not all have arrived yet.
    public struct FixedHeader: Sendable, Hashable {
        public var typeAndFlags: UInt8
        public var remainingLength: Int
        /// Bytes of the fixed header itself (1 + the length's bytes).
        public var headerLength: Int
        public var totalLength: Int { headerLength + remainingLength }
    }

    /// Reads the fixed header at the reader index without consuming anything.
    /// Returns nil until enough bytes have arrived to know the length.
    public static func peekFixedHeader(_ buffer: ByteBuffer) throws(MQTTCodecError) -> FixedHeader? {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        guard let (length, lengthBytes) = try VariableByteInteger.peek(buffer, at: buffer.readerIndex + 1) else { return nil }
        return FixedHeader(typeAndFlags: first, remainingLength: Int(length), headerLength: 1 + lengthBytes)
    }

    /// Takes one whole packet off the front of `buffer`, or returns nil (consuming nothing)
    /// if it has not all arrived. The size limit is enforced from the fixed header alone,
    /// before any body byte needs to be buffered.
    public static func decode(from buffer: inout ByteBuffer, version: ProtocolVersion?, maximumPacketSize: Int) throws(MQTTCodecError) -> MQTTPacket? {
        guard let header = try peekFixedHeader(buffer) else { return nil }
        guard header.totalLength <= maximumPacketSize else {
            throw .packetTooLarge(size: header.totalLength, maximum: maximumPacketSize)
        }
        guard buffer.readableBytes >= header.totalLength else { return nil }
        buffer.moveReaderIndex(forwardBy: header.headerLength)
        var body = buffer.readSlice(length: header.remainingLength)!
        return try decodeBody(typeAndFlags: header.typeAndFlags, body: &body, version: version)
    }

    /// Decodes a body whose fixed header has been read. Before the version is known
    /// (a server before CONNECT) packets other than CONNECT are read with 3.1.1 rules.
    public static func decodeBody(typeAndFlags: UInt8, body: inout ByteBuffer, version: ProtocolVersion?) throws(MQTTCodecError) -> MQTTPacket {
        let rawType = typeAndFlags >> 4
        let flags = typeAndFlags & 0x0F
        guard let type = PacketType(rawValue: rawType) else { throw .invalidPacketType(rawType) }
        if type != .publish && flags != type.requiredFlags {
            throw .invalidFixedHeaderFlags(type, flags: flags)
        }
        let v = version ?? .v3_1_1
        switch type {
        case .connect: return .connect(try ConnectPacket.readBody(flags: flags, from: &body, version: v))
        case .connack: return .connack(try ConnAckPacket.readBody(flags: flags, from: &body, version: v))
        case .publish: return .publish(try PublishPacket.readBody(flags: flags, from: &body, version: v))
        case .puback: return .puback(try PubAckPacket.readBody(flags: flags, from: &body, version: v))
        case .pubrec: return .pubrec(try PubRecPacket.readBody(flags: flags, from: &body, version: v))
        case .pubrel: return .pubrel(try PubRelPacket.readBody(flags: flags, from: &body, version: v))
        case .pubcomp: return .pubcomp(try PubCompPacket.readBody(flags: flags, from: &body, version: v))
        case .subscribe: return .subscribe(try SubscribePacket.readBody(flags: flags, from: &body, version: v))
        case .suback: return .suback(try SubAckPacket.readBody(flags: flags, from: &body, version: v))
        case .unsubscribe: return .unsubscribe(try UnsubscribePacket.readBody(flags: flags, from: &body, version: v))
        case .unsuback: return .unsuback(try UnsubAckPacket.readBody(flags: flags, from: &body, version: v))
        case .pingreq:
            _ = try PingReqPacket.readBody(flags: flags, from: &body, version: v)
            return .pingreq
        case .pingresp:
            _ = try PingRespPacket.readBody(flags: flags, from: &body, version: v)
            return .pingresp
        case .disconnect: return .disconnect(try DisconnectPacket.readBody(flags: flags, from: &body, version: v))
        case .auth: return .auth(try AuthPacket.readBody(flags: flags, from: &body, version: v))
        }
    }
}
