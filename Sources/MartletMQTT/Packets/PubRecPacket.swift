import NIOCore

/// PUBREC: first answer to a QoS 2 PUBLISH.
public struct PubRecPacket: PublishAcknowledgementPacket {
    public static let packetType = PacketType.pubrec
    public static let propertyContext = PropertyContext.pubrec
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
