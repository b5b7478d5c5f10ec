/// The protocol level carried in CONNECT.
///
/// Level 3 ("MQIsdp", MQTT 3.1) is recognised so that a broker can refuse it
/// cleanly or speak it with 3.1.1 rules, which differ only in the CONNECT header.
public enum ProtocolVersion: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case v3_1 = 3
    case v3_1_1 = 4
    case v5 = 5

    /// The protocol name a CONNECT of this level carries.
    public var protocolName: String {
        self == .v3_1 ? "MQIsdp" : "MQTT"
    }

    /// Whether the packet carries v5 properties and reason codes.
    public var hasProperties: Bool { self == .v5 }

    public var description: String {
        switch self {
        case .v3_1: return "3.1"
        case .v3_1_1: return "3.1.1"
        case .v5: return "5.0"
        }
    }
}
