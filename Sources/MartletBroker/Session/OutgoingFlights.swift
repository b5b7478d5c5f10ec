import DequeModule

/// The QoS 1 and 2 messages a session sent and the client has not finished acknowledging, in
/// the order they were sent (the order they are resent in, MQTT-4.4.0-1), with the packet
/// identifiers they hold: an identifier is not reused while its flow is open (MQTT-2.3.1-4).
struct OutgoingFlights: Sendable {
    private(set) var flights: Deque<OutgoingFlight> = []
    private var nextPacketIdentifier: UInt16 = 1

    var count: Int { flights.count }
    var isEmpty: Bool { flights.isEmpty }

    /// What a PUBREC did to the flow it names.
    enum PubRecOutcome: Equatable {
        /// The message was received: answer PUBREL, then wait for PUBCOMP.
        case release
        /// A PUBREC with a failure reason (v5) ends the flow (MQTT 5 4.3.3).
        case ended
        /// PUBREL was sent already (a resent PUBREC): answer PUBREL again.
        case releasedAlready
        /// No such flow: PUBREL with 0x92 Packet Identifier not found.
        case unknown
    }

    /// Opens a flow for `delivery` (QoS 1 or 2) under a free identifier, which it returns.
    mutating func send(_ delivery: Delivery) -> UInt16 {
        let id = freeIdentifier()
        flights.append(OutgoingFlight(
            packetIdentifier: id, delivery: delivery, stage: delivery.qos == .atLeastOnce ? .awaitingPubAck : .awaitingPubRec))
        return id
    }

    /// A flow loaded from the session store, under the identifier it was sent with.
    mutating func restore(_ flight: OutgoingFlight) {
        flights.append(flight)
    }

    /// PUBACK: closes the QoS 1 flow; nil when there is none under `id`.
    @discardableResult
    mutating func acknowledge(_ id: UInt16) -> OutgoingFlight? {
        remove(id, at: .awaitingPubAck)
    }

    /// What a PUBREC did, and the flow it named (as it was before).
    mutating func received(pubrec id: UInt16, failed: Bool) -> (PubRecOutcome, OutgoingFlight?) {
        if let i = flights.firstIndex(where: { $0.packetIdentifier == id && $0.stage == .awaitingPubRec }) {
            let flight = flights[i]
            if failed {
                flights.remove(at: i)
                return (.ended, flight)
            }
            flights[i].stage = .awaitingPubComp
            return (.release, flight)
        }
        return (flights.contains(where: { $0.packetIdentifier == id && $0.stage == .awaitingPubComp }) ? .releasedAlready : .unknown, nil)
    }

    /// PUBCOMP: closes the QoS 2 flow; nil when there is none under `id`.
    @discardableResult
    mutating func complete(_ id: UInt16) -> OutgoingFlight? {
        remove(id, at: .awaitingPubComp)
    }

    /// Removes the flows `take` accepts (asked in order); returns them.
    mutating func remove(where take: (OutgoingFlight) -> Bool) -> [OutgoingFlight] {
        var taken: [OutgoingFlight] = []
        flights.removeAll { flight in
            guard take(flight) else { return false }
            taken.append(flight)
            return true
        }
        return taken
    }

    /// Gives up the flow under `id` whatever its stage (the message could not be sent).
    @discardableResult
    mutating func abandon(_ id: UInt16) -> OutgoingFlight? {
        remove(id, at: nil)
    }

    private mutating func remove(_ id: UInt16, at stage: OutgoingFlight.Stage?) -> OutgoingFlight? {
        guard let i = flights.firstIndex(where: { $0.packetIdentifier == id && (stage == nil || $0.stage == stage) }) else { return nil }
        return flights.remove(at: i)
    }

    /// The next identifier not held by an open flow.
    private mutating func freeIdentifier() -> UInt16 {
        while true {
            let id = nextPacketIdentifier
            nextPacketIdentifier = nextPacketIdentifier == .max ? 1 : nextPacketIdentifier + 1
            if !flights.contains(where: { $0.packetIdentifier == id }) { return id }
        }
    }
}
