import NIOCore

/// SUBACK: one reason code per filter of the SUBSCRIBE, in order.
public struct SubAckPacket: MQTTPacketBody {
    public static let packetType = PacketType.suback
    public var packetIdentifier: UInt16
    public var reasonCodes: [ReasonCode]
    public var properties: Properties

    public init(packetIdentifier: UInt16, reasonCodes: [ReasonCode], properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCodes = reasonCodes
        self.properties = properties
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        2 + (version.hasProperties ? properties.encodedLength : 0) + reasonCodes.count
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        guard packetIdentifier != 0 else { throw .zeroPacketIdentifier(.suback) }
        buffer.writeInteger(packetIdentifier)
        if version.hasProperties { try properties.write(to: &buffer) }
        for c in reasonCodes { buffer.writeInteger(c.rawValue) }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) -> SubAckPacket {
        let id = try readPacketIdentifier(&body, .suback)
        let properties = version.hasProperties ? try Properties.read(from: &body, context: .suback) : Properties()
        var codes: [ReasonCode] = []
        codes.reserveCapacity(body.readableBytes)
        let allowed = version.hasProperties ? AllowedReasonCodes.suback : AllowedReasonCodes.subackV3
        while let raw = body.readInteger(as: UInt8.self) {
            guard allowed.contains(raw) else { throw .invalidReasonCode(raw, .suback) }
            codes.append(ReasonCode(raw))
        }
        guard !codes.isEmpty else { throw .truncated(field: "SUBACK reason codes") }
        return SubAckPacket(packetIdentifier: id, reasonCodes: codes, properties: properties)
    }
}
