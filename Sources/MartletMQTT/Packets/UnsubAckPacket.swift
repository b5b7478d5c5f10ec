import NIOCore

/// UNSUBACK. At 3.1.1 it carries only the packet identifier.
public struct UnsubAckPacket: MQTTPacketBody {
    public static let packetType = PacketType.unsuback
    public var packetIdentifier: UInt16
    /// One per filter at v5; empty at 3.1.1.
    public var reasonCodes: [ReasonCode]
    public var properties: Properties

    public init(packetIdentifier: UInt16, reasonCodes: [ReasonCode] = [], properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCodes = reasonCodes
        self.properties = properties
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        version.hasProperties ? 2 + properties.encodedLength + reasonCodes.count : 2
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        guard packetIdentifier != 0 else { throw .zeroPacketIdentifier(.unsuback) }
        buffer.writeInteger(packetIdentifier)
        guard version.hasProperties else { return }
        try properties.write(to: &buffer)
        for c in reasonCodes { buffer.writeInteger(c.rawValue) }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> UnsubAckPacket {
        let id = try readPacketIdentifier(&body, .unsuback)
        guard version.hasProperties else {
            try expectEnd(body, .unsuback)
            return UnsubAckPacket(packetIdentifier: id)
        }
        let properties = try Properties.read(from: &body, context: .unsuback)
        var codes: [ReasonCode] = []
        while let raw = body.readInteger(as: UInt8.self) {
            guard AllowedReasonCodes.unsuback.contains(raw) else { throw .invalidReasonCode(raw, .unsuback) }
            codes.append(ReasonCode(raw))
        }
        guard !codes.isEmpty else { throw .truncated(field: "UNSUBACK reason codes") }
        return UnsubAckPacket(packetIdentifier: id, reasonCodes: codes, properties: properties)
    }
}
