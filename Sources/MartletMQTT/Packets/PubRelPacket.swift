/// PUBREL: the sender releases a QoS 2 message.
public typealias PubRelPacket = PublishAcknowledgement<PubRel>

public enum PubRel: AcknowledgementKind {
    public static let packetType = PacketType.pubrel
    public static let propertyContext = PropertyContext.pubrel
    public static let allowedReasonCodes = AllowedReasonCodes.pubrelPubcomp
}
