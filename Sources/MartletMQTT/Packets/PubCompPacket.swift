import NIOCore

/// PUBCOMP: the end of a QoS 2 flow.
public struct PubCompPacket: PublishAcknowledgementPacket {
    public static let packetType = PacketType.pubcomp
    public static let propertyContext = PropertyContext.pubcomp
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
