import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore

/// Told when a topic filter gains its first subscriber in a trie, and when it loses its last.
public protocol FilterInterestObserver: AnyObject, Sendable {
    func filterAdded(_ filter: String)
    func filterRemoved(_ filter: String)
}

/// The broker's side of a cluster (`cluster:`, built by MartletCluster): where the messages
/// published on this node go for the other nodes, and who hears which filters this node's
/// subscribers need. Called on event-loop threads; it must not block them.
public protocol ClusterLink: FilterInterestObserver {
    /// A message published on this node (by a client, a will or the admin API), routed here
    /// already. `acknowledged`, when given, is called once, on any thread: true when the
    /// cluster has stored it with its replicas, false when it could not.
    func forward(_ message: Message, acknowledged: (@Sendable (Bool) -> Void)?)
    /// A connection on this node took `clientID`'s session at wall-clock time `at`
    /// (nanoseconds): every other node releases an older connection of that client id.
    func claimed(_ clientID: String, at: Int64)

    /// This node has members of the share group `key` (`$share/{name}/{filter}`) now, or no
    /// longer: the cluster gives each message of `filter` to one node that has members.
    func shareAdded(_ key: String, filter: String)
    func shareRemoved(_ key: String, filter: String)

    /// A persistent session's record changed. Stored asynchronously by compare-and-set on
    /// the record's revision (the latest of this node's wins); a record that a later claim
    /// (`record.claimedAt`) holds on another node is left as it is, and this node's
    /// connection is released (`MQTTBroker.releaseToCluster`).
    func sessionSaved(_ clientID: String, _ record: ClusterSessionRecord)
    /// The session of the connection that claimed it at `claimedAt` ended: its record goes,
    /// unless a later claim holds it.
    func sessionRemoved(_ clientID: String, claimedAt: Int64)
    /// The will of `clientID`'s connection on this node (nil: it has none any more).
    func willSaved(_ clientID: String, _ will: ClusterWill?)
    /// Reads `clientID`'s record, off the event loop (trying again for up to
    /// `session_load_timeout_ms` while JetStream does not answer); `done` is called on any
    /// thread.
    func loadSession(_ clientID: String, _ done: @escaping @Sendable (ClusterSessionLoad) -> Void)
    /// Reads the stored QoS 1/2 messages from wall-clock millisecond `since` to the last one
    /// stored now, off the event loop, keeping those whose topic `wanted` accepts; `done` gets
    /// them in order (nil when they could not be read).
    func replay(since: Int64, wanted: @escaping @Sendable (String) -> Bool, _ done: @escaping @Sendable ([Message]?) -> Void)
}

/// What reading a session's record from the cluster found.
public enum ClusterSessionLoad: Sendable {
    case found(ClusterSessionRecord)
    /// No record: the session starts empty.
    case none
    /// JetStream did not answer in time: the CONNECT is refused (Server unavailable), not
    /// given an empty session in place of the one it has.
    case unavailable
}

extension Message {
    /// Whether this node's own topics (`$SYS/…`): they stay on the node that made them.
    var isNodeLocal: Bool { topic.hasPrefix("$SYS/") }
}

/// Messages from the other nodes for one router, handed over in one task per burst; with
/// the share group the cluster picked this node for, if it came for one.
final class ClusterInbox: Sendable {
    private let state = NIOLockedValueBox<(messages: [(Message, String?)], scheduled: Bool)>(([], false))

    /// Adds `message`; true when the caller must schedule a `take` on the router's loop.
    func add(_ message: Message, group: String? = nil) -> Bool {
        state.withLockedValue { s in
            s.messages.append((message, group))
            if s.scheduled { return false }
            s.scheduled = true
            return true
        }
    }

    func take() -> [(Message, String?)] {
        state.withLockedValue { s in
            s.scheduled = false
            defer { s.messages = [] }
            return s.messages
        }
    }
}
