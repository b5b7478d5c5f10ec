/// PUBCOMP: the end of a QoS 2 flow.
public typealias PubCompPacket = PublishAcknowledgement<PubComp>

public enum PubComp: AcknowledgementKind {
    public static let packetType = PacketType.pubcomp
    public static let propertyContext = PropertyContext.pubcomp
    public static let allowedReasonCodes = AllowedReasonCodes.pubrelPubcomp
}
