/// A v5 reason code (and, for CONNACK at 3.1.1, the connect return code).
///
/// One byte can mean different things in different packets (0x00 is Success,
/// Normal disconnection and Granted QoS 0), so this is a struct over the raw
/// byte with a named value for every code of the spec's table 2-6, rather than
/// an enum that would have to pick one name per byte.
public struct ReasonCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public init(_ rawValue: UInt8) { self.rawValue = rawValue }

    public static let success = ReasonCode(0x00)
    public static let normalDisconnection = ReasonCode(0x00)
    public static let grantedQoS0 = ReasonCode(0x00)
    public static let grantedQoS1 = ReasonCode(0x01)
    public static let grantedQoS2 = ReasonCode(0x02)
    public static let disconnectWithWillMessage = ReasonCode(0x04)
    public static let noMatchingSubscribers = ReasonCode(0x10)
    public static let noSubscriptionExisted = ReasonCode(0x11)
    public static let continueAuthentication = ReasonCode(0x18)
    public static let reAuthenticate = ReasonCode(0x19)
    public static let unspecifiedError = ReasonCode(0x80)
    public static let malformedPacket = ReasonCode(0x81)
    public static let protocolError = ReasonCode(0x82)
    public static let implementationSpecificError = ReasonCode(0x83)
    public static let unsupportedProtocolVersion = ReasonCode(0x84)
    public static let clientIdentifierNotValid = ReasonCode(0x85)
    public static let badUserNameOrPassword = ReasonCode(0x86)
    public static let notAuthorized = ReasonCode(0x87)
    public static let serverUnavailable = ReasonCode(0x88)
    public static let serverBusy = ReasonCode(0x89)
    public static let banned = ReasonCode(0x8A)
    public static let serverShuttingDown = ReasonCode(0x8B)
    public static let badAuthenticationMethod = ReasonCode(0x8C)
    public static let keepAliveTimeout = ReasonCode(0x8D)
    public static let sessionTakenOver = ReasonCode(0x8E)
    public static let topicFilterInvalid = ReasonCode(0x8F)
    public static let topicNameInvalid = ReasonCode(0x90)
    public static let packetIdentifierInUse = ReasonCode(0x91)
    public static let packetIdentifierNotFound = ReasonCode(0x92)
    public static let receiveMaximumExceeded = ReasonCode(0x93)
    public static let topicAliasInvalid = ReasonCode(0x94)
    public static let packetTooLarge = ReasonCode(0x95)
    public static let messageRateTooHigh = ReasonCode(0x96)
    public static let quotaExceeded = ReasonCode(0x97)
    public static let administrativeAction = ReasonCode(0x98)
    public static let payloadFormatInvalid = ReasonCode(0x99)
    public static let retainNotSupported = ReasonCode(0x9A)
    public static let qosNotSupported = ReasonCode(0x9B)
    public static let useAnotherServer = ReasonCode(0x9C)
    public static let serverMoved = ReasonCode(0x9D)
    public static let sharedSubscriptionsNotSupported = ReasonCode(0x9E)
    public static let connectionRateExceeded = ReasonCode(0x9F)
    public static let maximumConnectTime = ReasonCode(0xA0)
    public static let subscriptionIdentifiersNotSupported = ReasonCode(0xA1)
    public static let wildcardSubscriptionsNotSupported = ReasonCode(0xA2)

    /// 3.1.1 SUBACK failure return code.
    public static let subscribeFailure = ReasonCode(0x80)

    /// Codes of 0x80 and above report a failure (MQTT 5 section 2.4).
    public var isFailure: Bool { rawValue >= 0x80 }

    public var description: String {
        let name: String
        switch rawValue {
        case 0x00: name = "Success"
        case 0x01: name = "Granted QoS 1"
        case 0x02: name = "Granted QoS 2"
        case 0x04: name = "Disconnect with Will Message"
        case 0x10: name = "No matching subscribers"
        case 0x11: name = "No subscription existed"
        case 0x18: name = "Continue authentication"
        case 0x19: name = "Re-authenticate"
        case 0x80: name = "Unspecified error"
        case 0x81: name = "Malformed Packet"
        case 0x82: name = "Protocol Error"
        case 0x83: name = "Implementation specific error"
        case 0x84: name = "Unsupported Protocol Version"
        case 0x85: name = "Client Identifier not valid"
        case 0x86: name = "Bad User Name or Password"
        case 0x87: name = "Not authorized"
        case 0x88: name = "Server unavailable"
        case 0x89: name = "Server busy"
        case 0x8A: name = "Banned"
        case 0x8B: name = "Server shutting down"
        case 0x8C: name = "Bad authentication method"
        case 0x8D: name = "Keep Alive timeout"
        case 0x8E: name = "Session taken over"
        case 0x8F: name = "Topic Filter invalid"
        case 0x90: name = "Topic Name invalid"
        case 0x91: name = "Packet Identifier in use"
        case 0x92: name = "Packet Identifier not found"
        case 0x93: name = "Receive Maximum exceeded"
        case 0x94: name = "Topic Alias invalid"
        case 0x95: name = "Packet too large"
        case 0x96: name = "Message rate too high"
        case 0x97: name = "Quota exceeded"
        case 0x98: name = "Administrative action"
        case 0x99: name = "Payload format invalid"
        case 0x9A: name = "Retain not supported"
        case 0x9B: name = "QoS not supported"
        case 0x9C: name = "Use another server"
        case 0x9D: name = "Server moved"
        case 0x9E: name = "Shared Subscriptions not supported"
        case 0x9F: name = "Connection rate exceeded"
        case 0xA0: name = "Maximum connect time"
        case 0xA1: name = "Subscription Identifiers not supported"
        case 0xA2: name = "Wildcard Subscriptions not supported"
        default: name = "Unknown"
        }
        return "0x" + String(rawValue, radix: 16, uppercase: true) + " " + name
    }
}
