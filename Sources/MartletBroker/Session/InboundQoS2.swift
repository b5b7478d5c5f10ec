/// The QoS 2 PUBLISHes a client sent that the broker answered with PUBREC and that wait for
/// their PUBREL (MQTT-4.3.3): what makes exactly-once hold on the way in, and what the v5
/// Receive Maximum the broker advertised counts.
struct InboundQoS2: Sendable, Equatable, ExpressibleByArrayLiteral {
    private var waiting: Set<UInt16> = []

    init() {}

    /// Ids loaded from the session store.
    init(_ ids: [UInt16]) {
        waiting = Set(ids)
    }

    /// Packet ids already waiting for their PUBREL.
    init(arrayLiteral ids: UInt16...) {
        waiting = Set(ids)
    }

    enum Arrival: Equatable {
        /// New: route it, answer PUBREC.
        case deliver
        /// Resent before its PUBREL: answer PUBREC again, do not route it twice (MQTT-4.3.3-2).
        case duplicate
        /// One more than the Receive Maximum (MQTT 5 3.3.4): not routed; the connection
        /// closes with 0x93.
        case overReceiveMaximum
    }

    var count: Int { waiting.count }

    /// A QoS 2 PUBLISH with `packetIdentifier` arrived; `receiveMaximum` nil means no limit
    /// (MQTT 3.1.1 has none).
    mutating func arrived(_ packetIdentifier: UInt16, receiveMaximum: Int?) -> Arrival {
        if waiting.contains(packetIdentifier) { return .duplicate }
        if let receiveMaximum, waiting.count >= receiveMaximum { return .overReceiveMaximum }
        waiting.insert(packetIdentifier)
        return .deliver
    }

    /// PUBREL for `packetIdentifier`: whether it was waiting (PUBCOMP 0x00, else 0x92).
    mutating func released(_ packetIdentifier: UInt16) -> Bool {
        waiting.remove(packetIdentifier) != nil
    }
}
