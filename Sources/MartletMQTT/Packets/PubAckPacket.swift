import NIOCore

/// PUBACK: the answer to a QoS 1 PUBLISH.
public struct PubAckPacket: PublishAcknowledgementPacket {
    public static let packetType = PacketType.puback
    public static let propertyContext = PropertyContext.puback
    public static let allowedReasonCodes = AllowedReasonCodes.pubackPubrec
    public var packetIdentifier: UInt16
    public var reasonCode: ReasonCode
    public var properties: Properties
    public init(packetIdentifier: UInt16, reasonCode: ReasonCode = .success, properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCode = reasonCode
        self.properties = properties
    }
}
