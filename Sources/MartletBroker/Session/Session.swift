import DequeModule
import MartletMQTT
import NIOCore

/// An application message on its way through the broker: what a PUBLISH (or a will) carried,
/// minus what belongs to one connection (packet id, DUP, topic alias).
public struct Message: Sendable, Hashable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: QoS
    public var retain: Bool
    /// v5 properties forwarded unchanged (payload format, content type, response topic,
    /// correlation data, user properties, message expiry).
    public var properties: Properties
    /// The client id of the publisher, for v5 no-local subscriptions.
    public var publisherID: String?
    /// When a v5 Message Expiry Interval runs out: set when the broker routes the message.
    /// A copy not yet sent by then is dropped (MQTT-3.3.2-5), and one sent goes out with
    /// the seconds left (MQTT-3.3.2-6).
    public var expiresAt: NIODeadline?
    /// The router that routed it and its number there, in routing order: how a session that
    /// moves between loops tells which messages its old loop forwarded (see `SessionMove`).
    var origin = -1
    var sequence: UInt64 = 0
    /// In a cluster: when (wall clock, milliseconds) it reached this node, for the cursor of
    /// the persistent sessions it is queued for (`ClusterSessionRecord.cursor`).
    var clusterWall: Int64 = 0

    public init(topic: String, payload: ByteBuffer, qos: QoS, retain: Bool, properties: Properties = [], publisherID: String? = nil,
                expiresAt: NIODeadline? = nil) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.publisherID = publisherID
        self.expiresAt = expiresAt
    }

    /// Whether its expiry has run out (the clock is read only for a message that has one).
    func isExpired(at now: @autoclosure () -> NIODeadline) -> Bool {
        guard let expiresAt else { return false }
        return expiresAt <= now()
    }
}

/// One message addressed to one session, at the QoS and RETAIN flag that subscriber gets.
struct Delivery: Sendable {
    var message: Message
    var qos: QoS
    var retain: Bool
    var subscriptionIdentifiers: [UInt32]
    /// The share group (`$share/{name}/{filter}`) it came through, if any: a member that goes
    /// offline hands it to another member.
    var group: String? = nil
    /// Its row in the session store and the stored message it refers to (0: not stored).
    var storeSeq: Int64 = 0
    var storeMessage: Int64 = 0

    /// What the delivery is charged against `max_queued_bytes`: payload, topic, and a fixed
    /// allowance for the rest of the packet and the queue entry.
    var cost: Int { message.payload.readableBytes + message.topic.utf8.count + 64 }
}

/// Messages a session lost, by reason.
struct DropCounts: Sendable {
    /// Allocated at the first drop: most sessions never lose a message.
    private var counts: [Int] = []
    subscript(reason: DropReason) -> Int {
        get { counts.isEmpty ? 0 : counts[DropReason.allCases.firstIndex(of: reason)!] }
        set {
            if counts.isEmpty { counts = [Int](repeating: 0, count: DropReason.allCases.count) }
            counts[DropReason.allCases.firstIndex(of: reason)!] = newValue
        }
    }
    var total: Int { counts.reduce(0, +) }
}

/// A QoS 1/2 message sent to the client and not yet fully acknowledged.
struct OutgoingFlight: Sendable {
    enum Stage: Sendable { case awaitingPubAck, awaitingPubRec, awaitingPubComp }
    var packetIdentifier: UInt16
    var delivery: Delivery
    var stage: Stage
}

/// A subscription as the session remembers it (to restore it on another event loop).
struct StoredSubscription: Sendable {
    var options: SubscriptionOptions
    var identifier: UInt32?
}

/// Retained messages still to send for new subscriptions (MQTT-3.3.1-6), read from the
/// retained store a few at a time as the socket drains and the inflight window allows, so a
/// subscription matching 100,000 of them loses none and holds only a walk's position.
/// Messages routed meanwhile wait behind them in the outbox (a retained value never follows
/// a newer one of its topic).
struct RetainedFeed: Sendable {
    struct Walk: Sendable {
        var cursor: RetainedStore.Cursor
        var grantedQoS: QoS
        var identifier: UInt32?
        /// Read from the store and not sent yet.
        var ready: Deque<Delivery> = []

        var isFinished: Bool { cursor.isFinished && ready.isEmpty }
    }
    /// One stored property, a reference: `RetainedFeed?` costs a session 8 bytes.
    var walks: Deque<Walk>
}

/// What moves between event loops when a client reconnects elsewhere: everything a
/// session is, except its connection.
struct SessionState: Sendable {
    var retainedFeed: RetainedFeed?
    var subscriptions: [String: StoredSubscription]
    var inflight: OutgoingFlights
    var outbox: Outbox
    var inboundQoS2: InboundQoS2
    /// It had rows in the session store on its old loop.
    var stored = false
}

/// The broker's state for one client id. Owned by exactly one `Router` and touched only
/// on that router's event loop.
final class Session {
    let clientID: String
    var version: ProtocolVersion
    var connection: ConnectionRef?
    var connectionID: Int = 0

    /// Kept after the connection ends (3.1.1 clean session 0, v5 session expiry > 0).
    var expiryInterval: UInt32
    /// It has rows in the session store (a persistent session, with persistence on).
    var stored = false
    /// Acknowledgements of its PUBLISHes held until the store commits (`sync: durable`);
    /// while there are any, later ones wait behind them (MQTT-4.6.0-2: in order).
    var deferredAcks = 0

    var subscriptions: [String: StoredSubscription] = [:]
    /// Retained messages being sent for new subscriptions; nil when none are.
    var retainedFeed: RetainedFeed?
    var inflight = OutgoingFlights()
    /// Messages waiting for the socket to drain, for the inflight window, or for the client
    /// to come back; bounded by `max_queued_messages` and `max_queued_bytes`.
    var outbox = Outbox()
    /// QoS 2 packet ids received and answered with PUBREC, not yet released (MQTT-4.3.3).
    var inboundQoS2 = InboundQoS2()

    /// min(max_inflight, the client's v5 Receive Maximum).
    var inflightWindow: Int
    /// The client's v5 Maximum Packet Size: larger messages are not sent to it.
    var maximumPacketSize: Int = .max
    /// Topic aliases for what is sent on the current connection (v5, when the client allows them).
    var outAliases: OutgoingTopicAliases?

    /// The authenticated user name (nil: anonymous), for ACL checks.
    var username: String?
    /// When (wall clock, nanoseconds) its connection took it: in a cluster, a claim of the
    /// same client id on another node made later wins.
    var claimedAt: Int64 = 0
    /// In a cluster: the cursor last saved in its record, and whether something else in the
    /// record changed since (subscriptions, online).
    var clusterCursorSaved: Int64 = 0
    var clusterDirty = false
    /// Its client acknowledged a message since the record was last saved: the cursor moved.
    var clusterAcknowledged = false
    /// Resumed from another node's record: the stored messages from this wall-clock time are
    /// being read again for it; the cursor stays there until they are queued.
    var clusterReplayFrom: Int64?
    /// Its connection's will is in the cluster's will bucket.
    var clusterWillSaved = false
    /// ACL answers for topics this session received on, valid for one ACL generation.
    var readAllowed: [String: Bool] = [:]
    var readAllowedGeneration = -1

    /// A bridge's session (client id `$bridge/<name>`, which only the in-process bridge link
    /// may use): the configuration chose what it forwards, so the ACL does not apply to it.
    let isBridge: Bool
    /// A bridge's own queue bounds (nil: `max_queued_messages` / `max_queued_bytes`).
    var queueBounds: BrokerConfiguration.QueueBounds?

    /// What happens when the outbox is full (from the listener the client connected to).
    var policy: SlowConsumerPolicy = .dropNew
    /// With the `disconnect` policy: when the outbox first refused a message, until it has room again.
    var fullSince: NIODeadline?
    /// The outbox passed half its limits and publishers feeding it are held back, until it
    /// drains to a quarter (`pause_publishers_for_slow_subscribers`).
    var lagging = false
    /// Lagging without taking anything off the outbox for `subscriber_stall_timeout`, or
    /// lagging for ten times it: no longer holds publishers back, until it drains to a quarter.
    var stalled = false
    /// Messages moved from the outbox to the socket, ever; and the figure and time the
    /// stall check last saw it change.
    var drained = 0
    var drainedAtCheck = 0
    var progressAt = NIODeadline.uptimeNanoseconds(0)
    /// When it last started lagging.
    var laggingSince = NIODeadline.uptimeNanoseconds(0)
    /// Messages this session did not get, by reason.
    var drops = DropCounts()
    /// Drops not yet logged (the router logs them at most once per interval).
    var unloggedDrops = 0

    /// Set while the session moves to another loop's router (takeover from a connection there).
    var move: SessionMove?
    /// Its subscriptions that are share groups, and whether the groups were last told it is
    /// busy (lagging or in-flight window full).
    var sharedGroups = 0
    var sharedBusy = false

    /// Scratch for merging overlapping subscriptions during one route, without a dictionary.
    var matchStamp: UInt64 = 0
    var matchIndex: Int = 0

    init(clientID: String, version: ProtocolVersion, expiryInterval: UInt32, inflightWindow: Int) {
        self.clientID = clientID
        self.isBridge = Self.isBridge(clientID)
        self.version = version
        self.expiryInterval = expiryInterval
        self.inflightWindow = inflightWindow
    }

    static let neverExpires = UInt32.max

    static func isBridge(_ clientID: String) -> Bool { clientID.utf8.starts(with: "$bridge/".utf8) }

    var isPersistent: Bool { expiryInterval > 0 }
    /// Something waits to be sent before a new message may go straight out: queued messages,
    /// or retained ones still being read for a new subscription.
    var hasBacklog: Bool { !outbox.isEmpty || retainedFeed != nil }
    var isOnline: Bool { connection != nil }

    var state: SessionState {
        SessionState(
            retainedFeed: retainedFeed, subscriptions: subscriptions, inflight: inflight, outbox: outbox, inboundQoS2: inboundQoS2,
            stored: stored)
    }

    func restore(_ state: SessionState) {
        retainedFeed = state.retainedFeed
        subscriptions = state.subscriptions
        sharedGroups = subscriptions.keys.reduce(0) { $0 + (SharedSubscription($1) == nil ? 0 : 1) }
        inflight = state.inflight
        outbox = state.outbox
        inboundQoS2 = state.inboundQoS2
    }
}

/// A session moving from the router of loop A (its old connection's) to that of loop B (the
/// new connection's), without losing or doubling a message routed meanwhile.
///
/// Every router numbers the messages it routes. Between B attaching the session (its
/// subscriptions now in B's trie) and A letting go, both tries match it, so each message is
/// delivered by exactly one side, decided per origin router C by a marker:
/// - B asks every router C for a marker once its trie holds the session. C hands over what it
///   routed so far (to A among others), then tells A its current number `cutover[C]`.
/// - A forwards to B every copy it matches for the session from C until C's marker arrives:
///   exactly C's messages numbered up to `cutover[C]` (C's batches to A arrive in order).
/// - Every message C routes after its marker was routed after B's trie counted the session,
///   so it reaches B; B holds its trie matches until A, with all markers in, leaves the trie
///   and sends B the cutovers. B then delivers the held ones numbered above `cutover[C]`.
/// Forwarded copies reach B before the cutovers, so a publisher's order is kept.
final class SessionMove {
    /// On A: the router the session moves to.
    let target: Int
    /// On A: per origin router, whether its marker is still to come (its copies are forwarded).
    var forwarding: [Bool]
    var cutover: [UInt64]
    var markersMissing: Int
    /// On B: trie matches held until the cutovers arrive.
    var held: [Delivery] = []

    var isArriving: Bool { target < 0 }

    /// A's side: moving to `target`, with `routers` markers to collect.
    init(leavingFor target: Int, routers: Int) {
        self.target = target
        self.forwarding = Array(repeating: true, count: routers)
        self.cutover = Array(repeating: 0, count: routers)
        self.markersMissing = routers
    }

    /// B's side.
    init(arriving: Void) {
        self.target = -1
        self.forwarding = []
        self.cutover = []
        self.markersMissing = 0
    }
}
