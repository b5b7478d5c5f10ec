/// PUBREC: first answer to a QoS 2 PUBLISH.
public typealias PubRecPacket = PublishAcknowledgement<PubRec>

public enum PubRec: AcknowledgementKind {
    public static let packetType = PacketType.pubrec
    public static let propertyContext = PropertyContext.pubrec
    public static let allowedReasonCodes = AllowedReasonCodes.pubackPubrec
}
