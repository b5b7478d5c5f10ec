import NIOCore

/// PUBREL: the sender releases a QoS 2 message.
public struct PubRelPacket: PublishAcknowledgementPacket {
    public static let packetType = PacketType.pubrel
    public static let propertyContext = PropertyContext.pubrel
    public static let allowedReasonCodes = AllowedReasonCodes.pubrelPubcomp
    public var packetIdentifier: UInt16
    public var reasonCode: ReasonCode
    public var properties: Properties
    public init(packetIdentifier: UInt16, reasonCode: ReasonCode = .success, properties: Properties = []) {
        self.packetIdentifier = packetIdentifier
        self.reasonCode = reasonCode
        self.properties = properties
    }
}
