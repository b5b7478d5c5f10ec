import MartletMQTT
import NIOCore

/// Where sessions, their queued and in-flight messages, retained messages and pending wills
/// outlive the process. The broker writes changes as records in batches (one batch, one
/// transaction: all of it or none) from one writer thread, and reads everything back once
/// at start. `SQLiteSessionStore` is the one implementation; another backend (a distributed
/// one) takes its place by implementing this.
public protocol SessionStore: AnyObject {
    /// Everything stored, with what has expired by `now` (wall-clock milliseconds) left out.
    func load(now: Int64) throws -> StoredState
    /// Applies one batch of changes atomically and durably (as the store's sync mode says).
    func apply(_ records: [StoreRecord]) throws
    /// Bytes the store holds on disk (for `/metrics`).
    var sizeInBytes: Int { get }
    /// Lets the store reclaim space (a WAL checkpoint); called by the writer when idle.
    func maintain() throws
    func close()
}

/// A message as stored: everything a `Message` is but the routing bookkeeping, with its
/// expiry as a wall-clock time (milliseconds since 1970) so it keeps running across restarts.
public struct StoredMessage: Sendable, Equatable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: QoS
    public var retain: Bool
    public var properties: Properties
    public var expiresAt: Int64?

    public init(topic: String, payload: ByteBuffer, qos: QoS, retain: Bool, properties: Properties, expiresAt: Int64?) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.expiresAt = expiresAt
    }
}

/// Where a stored delivery is in its flow to the subscriber.
public enum StoredStage: Int64, Sendable {
    /// In the session's queue, not sent yet.
    case queued = 0
    /// Sent with a packet identifier: waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    case awaitingPubAck = 1
    case awaitingPubRec = 2
    /// PUBREC came, PUBREL sent: waiting for PUBCOMP.
    case awaitingPubComp = 3
}

/// One change to the stored state. A delivery's `seq` is unique in the whole store and grows
/// with time (`StoreWriter.nextSequence`), so a session's deliveries load in the order they
/// were queued.
public enum StoreRecord: Sendable {
    /// A session that outlives its connection was created or resumed: it is online.
    case session(StoredSessionHeader)
    /// Its connection went away: it expires at `expiresAt` (nil: never); a will waits until
    /// `willAt` (nil: none).
    case offline(clientID: String, expiryInterval: UInt32, expiresAt: Int64?, will: StoredMessage?, willAt: Int64?)
    /// The will waiting for its delay went out (or was cancelled).
    case willGone(clientID: String)
    /// The session ended: it, its subscriptions, deliveries and QoS 2 ids go.
    case sessionEnded(clientID: String)
    case subscribed(clientID: String, filter: String, options: UInt8, identifier: UInt32?)
    case unsubscribed(clientID: String, filter: String)
    /// A message some stored deliveries refer to, stored once however many sessions get it.
    case message(id: Int64, StoredMessage)
    /// A delivery of message `messageID` to `clientID`.
    case queued(StoredDelivery)
    /// The delivery was sent under `packetIdentifier`, or moved on in its QoS 2 flow.
    case stage(seq: Int64, packetIdentifier: UInt16, StoredStage)
    /// The delivery is done (acknowledged, dropped, expired, handed to another member).
    case removed(seq: Int64, messageID: Int64)
    /// An inbound QoS 2 packet id answered with PUBREC (`added`), or released by PUBREL.
    case inboundQoS2(clientID: String, packetIdentifier: UInt16, added: Bool)
    /// A retained message set (nil: deleted).
    case retained(topic: String, StoredMessage?)
}

/// What a stored session is, apart from its subscriptions, deliveries and QoS 2 ids.
public struct StoredSessionHeader: Sendable, Equatable {
    public var clientID: String
    public var version: ProtocolVersion
    public var expiryInterval: UInt32
    public var username: String?
    /// The will of its current connection, which a crash (the connection lost without
    /// DISCONNECT) publishes after `willDelay`.
    public var will: StoredMessage?
    public var willDelay: UInt32
}

public struct StoredDelivery: Sendable, Equatable {
    public var seq: Int64
    public var clientID: String
    public var messageID: Int64
    public var qos: QoS
    public var retain: Bool
    public var subscriptionIdentifiers: [UInt32]
    public var group: String?
    public var packetIdentifier: UInt16?
    public var stage: StoredStage
}

/// Everything a store holds, as loaded at start.
public struct StoredState: Sendable {
    public struct Session: Sendable {
        public var header: StoredSessionHeader
        /// Offline since before the stop; nil: it was online when the broker stopped.
        public var offline: Offline?
        public var subscriptions: [(filter: String, options: SubscriptionOptions, identifier: UInt32?)]
        /// In `seq` order.
        public var deliveries: [(StoredDelivery, StoredMessage)]
        public var inboundQoS2: [UInt16]

        public struct Offline: Sendable {
            public var expiresAt: Int64?
            public var will: StoredMessage?
            public var willAt: Int64?
        }
    }

    public var sessions: [Session] = []
    public var retained: [StoredMessage] = []
    /// Above every id and seq in the store: where new ones start.
    public var nextMessageID: Int64 = 1
    public var nextSequence: Int64 = 1
    /// Messages routed nowhere (retained ones sent to a new subscription) get ids counting down
    /// from -1: the first free one, as a positive count.
    public var nextNegativeMessageID: Int64 = 1
    /// Left out by `load` because they had expired.
    public var expiredSessions = 0
    public var expiredMessages = 0

    public init() {}
}
