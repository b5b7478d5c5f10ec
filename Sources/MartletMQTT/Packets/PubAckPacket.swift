/// PUBACK: the answer to a QoS 1 PUBLISH.
public typealias PubAckPacket = PublishAcknowledgement<PubAck>

public enum PubAck: AcknowledgementKind {
    public static let packetType = PacketType.puback
    public static let propertyContext = PropertyContext.puback
    public static let allowedReasonCodes = AllowedReasonCodes.pubackPubrec
}
