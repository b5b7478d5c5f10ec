/// Why bytes from a peer were refused.
///
/// Every case names what was wrong and maps to the v5 reason code the receiver
/// should put in its DISCONNECT (or CONNACK), so the connection handler never
/// has to guess.
public enum MQTTCodecError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A variable byte integer with a continuation bit on its fourth byte.
    case malformedVariableByteInteger
    /// The fixed header announces a packet larger than the configured maximum.
    case packetTooLarge(size: Int, maximum: Int)
    /// Packet type 0, or AUTH at a level that has no AUTH.
    case invalidPacketType(UInt8)
    /// Reserved fixed-header flag bits that the spec fixes were not as required.
    case invalidFixedHeaderFlags(PacketType, flags: UInt8)
    /// A QoS of 3 in a PUBLISH, a will or a subscription.
    case invalidQoS(UInt8)
    /// DUP set on a QoS 0 PUBLISH (MQTT-3.3.1-2).
    case duplicateFlagOnQoS0
    /// The remaining length ended in the middle of a field.
    case truncated(field: String)
    /// Bytes left over after the last field of the packet.
    case unexpectedTrailingBytes(PacketType, count: Int)
    /// A string that is not well-formed UTF-8 (which includes UTF-16 surrogates).
    case invalidUTF8(field: String)
    /// A string containing U+0000 (MQTT-1.5.4-2).
    case nullCharacter(field: String)
    /// A topic name that breaks the topic rules (wildcards, empty, too long).
    case invalidTopicName(TopicValidationError)
    /// A topic filter that breaks the topic rules.
    case invalidTopicFilter(TopicValidationError)
    /// A packet identifier of 0 where a non-zero one is required (MQTT-2.3.1-1).
    case zeroPacketIdentifier(PacketType)
    /// A CONNECT whose protocol name is not "MQTT" (or "MQIsdp" at level 3).
    case invalidProtocolName(String)
    /// A CONNECT with a protocol level this codec does not speak.
    case unsupportedProtocolVersion(UInt8)
    /// The reserved bit 0 of the CONNECT flags is set (MQTT-3.1.2-3).
    case reservedConnectFlagSet
    /// Will QoS or will retain set while the will flag is 0 (MQTT-3.1.2-11/13/15).
    case willFieldsWithoutWillFlag
    /// Password flag set without user name flag at 3.1.1 (MQTT-3.1.2-22).
    case passwordWithoutUserName
    /// Reserved bits of a flags byte (CONNACK acknowledge flags, subscription options).
    case reservedBitsSet(field: String)
    /// A SUBSCRIBE or UNSUBSCRIBE with no topic filter (MQTT-3.8.3-3, MQTT-3.10.3-2).
    case noTopicFilters(PacketType)
    /// Retain handling 3 in the subscription options.
    case invalidRetainHandling(UInt8)
    /// An unknown property identifier.
    case unknownProperty(UInt32)
    /// A property in a packet that may not carry it.
    case propertyNotAllowed(PropertyIdentifier, in: PropertyContext)
    /// A single-valued property that appeared twice.
    case duplicateProperty(PropertyIdentifier)
    /// A property value outside its range (a receive maximum of 0, a boolean of 2, …).
    case invalidPropertyValue(PropertyIdentifier)
    /// A reason code that the packet may not carry.
    case invalidReasonCode(UInt8, PacketType)
    /// An empty topic name without a topic alias.
    case emptyTopicWithoutAlias
    /// A payload marked as UTF-8 (payload format indicator 1) that is not.
    case payloadFormatInvalid
    /// The packet type is not valid at this protocol level (AUTH at 3.1.1).
    case packetNotValidAtLevel(PacketType, ProtocolVersion)
    /// Encoding: a value does not fit its wire field.
    case valueTooLarge(field: String)

    /// The v5 reason code that answers this error.
    public var reasonCode: ReasonCode {
        switch self {
        case .packetTooLarge: return .packetTooLarge
        case .unsupportedProtocolVersion: return .unsupportedProtocolVersion
        case .payloadFormatInvalid: return .payloadFormatInvalid
        case .invalidTopicName: return .topicNameInvalid
        case .invalidTopicFilter: return .topicFilterInvalid
        // A Topic Alias of 0 (MQTT 5 3.3.2.3.4).
        case .invalidPropertyValue(.topicAlias): return .topicAliasInvalid
        case .duplicateProperty, .invalidPropertyValue, .propertyNotAllowed, .invalidRetainHandling,
            .emptyTopicWithoutAlias, .packetNotValidAtLevel, .invalidProtocolName,
            .zeroPacketIdentifier, .noTopicFilters:
            return .protocolError
        case .malformedVariableByteInteger, .invalidPacketType, .invalidFixedHeaderFlags, .invalidQoS,
            .duplicateFlagOnQoS0, .truncated, .unexpectedTrailingBytes, .invalidUTF8, .nullCharacter,
            .reservedConnectFlagSet, .willFieldsWithoutWillFlag, .passwordWithoutUserName,
            .reservedBitsSet, .unknownProperty, .invalidReasonCode, .valueTooLarge:
            return .malformedPacket
        }
    }

    public var description: String {
        switch self {
        case .malformedVariableByteInteger: return "variable byte integer longer than 4 bytes"
        case .packetTooLarge(let size, let maximum):
            return "packet of \(size) bytes exceeds the maximum packet size of \(maximum)"
        case .invalidPacketType(let t): return "invalid control packet type \(t)"
        case .invalidFixedHeaderFlags(let t, let f): return "invalid fixed header flags 0x\(String(f, radix: 16)) for \(t)"
        case .invalidQoS(let q): return "invalid QoS \(q)"
        case .duplicateFlagOnQoS0: return "DUP flag set on a QoS 0 PUBLISH"
        case .truncated(let field): return "packet ends inside \(field)"
        case .unexpectedTrailingBytes(let t, let n): return "\(n) unexpected bytes after the end of \(t)"
        case .invalidUTF8(let field): return "\(field) is not well-formed UTF-8"
        case .nullCharacter(let field): return "\(field) contains U+0000"
        case .invalidTopicName(let e): return "invalid topic name: \(e)"
        case .invalidTopicFilter(let e): return "invalid topic filter: \(e)"
        case .zeroPacketIdentifier(let t): return "\(t) with packet identifier 0"
        case .invalidProtocolName(let n): return "invalid protocol name \"\(n)\""
        case .unsupportedProtocolVersion(let v): return "unsupported protocol level \(v)"
        case .reservedConnectFlagSet: return "reserved CONNECT flag set"
        case .willFieldsWithoutWillFlag: return "will QoS or will retain set without the will flag"
        case .passwordWithoutUserName: return "password flag set without user name flag"
        case .reservedBitsSet(let field): return "reserved bits set in \(field)"
        case .noTopicFilters(let t): return "\(t) without any topic filter"
        case .invalidRetainHandling(let v): return "invalid retain handling \(v)"
        case .unknownProperty(let id): return "unknown property identifier 0x\(String(id, radix: 16))"
        case .propertyNotAllowed(let p, let c): return "property \(p) is not allowed in \(c)"
        case .duplicateProperty(let p): return "property \(p) appears more than once"
        case .invalidPropertyValue(let p): return "invalid value for property \(p)"
        case .invalidReasonCode(let c, let t): return "reason code 0x\(String(c, radix: 16)) is not valid in \(t)"
        case .emptyTopicWithoutAlias: return "empty topic name without a topic alias"
        case .payloadFormatInvalid: return "payload is marked UTF-8 but is not well-formed UTF-8"
        case .packetNotValidAtLevel(let t, let v): return "\(t) is not valid at MQTT \(v)"
        case .valueTooLarge(let field): return "\(field) does not fit its wire field"
        }
    }
}
