/// The packet (or will) a property list belongs to; decides which properties are allowed.
public enum PropertyContext: Sendable, Hashable, CustomStringConvertible {
    case connect, connack, publish, will, puback, pubrec, pubrel, pubcomp
    case subscribe, suback, unsubscribe, unsuback, disconnect, auth

    public var description: String {
        switch self {
        case .connect: return "CONNECT"
        case .connack: return "CONNACK"
        case .publish: return "PUBLISH"
        case .will: return "Will Properties"
        case .puback: return "PUBACK"
        case .pubrec: return "PUBREC"
        case .pubrel: return "PUBREL"
        case .pubcomp: return "PUBCOMP"
        case .subscribe: return "SUBSCRIBE"
        case .suback: return "SUBACK"
        case .unsubscribe: return "UNSUBSCRIBE"
        case .unsuback: return "UNSUBACK"
        case .disconnect: return "DISCONNECT"
        case .auth: return "AUTH"
        }
    }
}

/// v5 property identifiers (MQTT 5 table 2-4) with their wire types and where they may appear.
public enum PropertyIdentifier: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case payloadFormatIndicator = 0x01
    case messageExpiryInterval = 0x02
    case contentType = 0x03
    case responseTopic = 0x08
    case correlationData = 0x09
    case subscriptionIdentifier = 0x0B
    case sessionExpiryInterval = 0x11
    case assignedClientIdentifier = 0x12
    case serverKeepAlive = 0x13
    case authenticationMethod = 0x15
    case authenticationData = 0x16
    case requestProblemInformation = 0x17
    case willDelayInterval = 0x18
    case requestResponseInformation = 0x19
    case responseInformation = 0x1A
    case serverReference = 0x1C
    case reasonString = 0x1F
    case receiveMaximum = 0x21
    case topicAliasMaximum = 0x22
    case topicAlias = 0x23
    case maximumQoS = 0x24
    case retainAvailable = 0x25
    case userProperty = 0x26
    case maximumPacketSize = 0x27
    case wildcardSubscriptionAvailable = 0x28
    case subscriptionIdentifierAvailable = 0x29
    case sharedSubscriptionAvailable = 0x2A

    public enum WireType: Sendable {
        case byte, twoByteInteger, fourByteInteger, variableByteInteger, utf8String, binaryData, utf8StringPair
    }

    public var wireType: WireType {
        switch self {
        case .payloadFormatIndicator, .requestProblemInformation, .requestResponseInformation, .maximumQoS,
            .retainAvailable, .wildcardSubscriptionAvailable, .subscriptionIdentifierAvailable,
            .sharedSubscriptionAvailable:
            return .byte
        case .serverKeepAlive, .receiveMaximum, .topicAliasMaximum, .topicAlias:
            return .twoByteInteger
        case .messageExpiryInterval, .sessionExpiryInterval, .willDelayInterval, .maximumPacketSize:
            return .fourByteInteger
        case .subscriptionIdentifier:
            return .variableByteInteger
        case .contentType, .responseTopic, .assignedClientIdentifier, .authenticationMethod,
            .responseInformation, .serverReference, .reasonString:
            return .utf8String
        case .correlationData, .authenticationData:
            return .binaryData
        case .userProperty:
            return .utf8StringPair
        }
    }

    /// Whether the property may appear in a property list of `context`.
    public func isAllowed(in context: PropertyContext) -> Bool {
        switch self {
        case .payloadFormatIndicator, .messageExpiryInterval, .contentType, .responseTopic, .correlationData:
            return context == .publish || context == .will
        case .subscriptionIdentifier:
            return context == .publish || context == .subscribe
        case .sessionExpiryInterval:
            return context == .connect || context == .connack || context == .disconnect
        case .assignedClientIdentifier, .serverKeepAlive, .responseInformation, .maximumQoS, .retainAvailable,
            .wildcardSubscriptionAvailable, .subscriptionIdentifierAvailable, .sharedSubscriptionAvailable:
            return context == .connack
        case .authenticationMethod, .authenticationData:
            return context == .connect || context == .connack || context == .auth
        case .requestProblemInformation, .requestResponseInformation:
            return context == .connect
        case .willDelayInterval:
            return context == .will
        case .serverReference:
            return context == .connack || context == .disconnect
        case .reasonString:
            switch context {
            case .connack, .puback, .pubrec, .pubrel, .pubcomp, .suback, .unsuback, .disconnect, .auth: return true
            default: return false
            }
        case .receiveMaximum, .topicAliasMaximum, .maximumPacketSize:
            return context == .connect || context == .connack
        case .topicAlias:
            return context == .publish
        case .userProperty:
            return true
        }
    }

    /// User properties repeat freely; a PUBLISH may carry several subscription identifiers.
    func mayRepeat(in context: PropertyContext) -> Bool {
        self == .userProperty || (self == .subscriptionIdentifier && context == .publish)
    }

    public var description: String {
        switch self {
        case .payloadFormatIndicator: return "Payload Format Indicator"
        case .messageExpiryInterval: return "Message Expiry Interval"
        case .contentType: return "Content Type"
        case .responseTopic: return "Response Topic"
        case .correlationData: return "Correlation Data"
        case .subscriptionIdentifier: return "Subscription Identifier"
        case .sessionExpiryInterval: return "Session Expiry Interval"
        case .assignedClientIdentifier: return "Assigned Client Identifier"
        case .serverKeepAlive: return "Server Keep Alive"
        case .authenticationMethod: return "Authentication Method"
        case .authenticationData: return "Authentication Data"
        case .requestProblemInformation: return "Request Problem Information"
        case .willDelayInterval: return "Will Delay Interval"
        case .requestResponseInformation: return "Request Response Information"
        case .responseInformation: return "Response Information"
        case .serverReference: return "Server Reference"
        case .reasonString: return "Reason String"
        case .receiveMaximum: return "Receive Maximum"
        case .topicAliasMaximum: return "Topic Alias Maximum"
        case .topicAlias: return "Topic Alias"
        case .maximumQoS: return "Maximum QoS"
        case .retainAvailable: return "Retain Available"
        case .userProperty: return "User Property"
        case .maximumPacketSize: return "Maximum Packet Size"
        case .wildcardSubscriptionAvailable: return "Wildcard Subscription Available"
        case .subscriptionIdentifierAvailable: return "Subscription Identifier Available"
        case .sharedSubscriptionAvailable: return "Shared Subscription Available"
        }
    }
}
