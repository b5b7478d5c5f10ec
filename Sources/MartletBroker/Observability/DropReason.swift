/// Why a message did not reach a subscriber. Each reason is counted per client and
/// broker-wide, and logged (rate-limited) with the client id.
public enum DropReason: String, Sendable, CaseIterable {
    /// The session's outbox was full (`max_queued_messages` / `max_queued_bytes`): the new message was dropped.
    case queueFull = "queue_full"
    /// The `drop-old` policy, or a QoS 1/2 message needing room, evicted a queued message.
    case evicted = "evicted"
    /// All outboxes together passed `max_queued_bytes_total`.
    case totalLimit = "total_limit"
    /// Larger than the subscriber's v5 Maximum Packet Size.
    case tooLarge = "too_large"
    /// Still queued when a non-persistent session ended (its client disconnected or was closed).
    case sessionEnded = "session_ended"
    /// Its v5 Message Expiry Interval ran out before it was sent (MQTT-3.3.2-5).
    case expired = "expired"
    /// The ACL, as it stands when the message is about to be sent, does not let the session's
    /// identity read its topic (a queued or resumed message after a reload, say).
    case notAuthorized = "not_authorized"
}
