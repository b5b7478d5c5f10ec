import Foundation
import MartletMQTT
import NIOCore

/// A persistent session as the cluster keeps it (bucket `martlet_sessions`): what another
/// node needs to resume it when its client reconnects there, also after its node died.
///
/// Queued QoS 1/2 messages are not copied into it: JetStream holds every one of them once
/// (stream `MARTLET_MESSAGES`), and the record says from when (`cursor`) a resuming node
/// reads them again, matching them against the session's subscriptions.
public struct ClusterSessionRecord: Codable, Sendable, Equatable {
    public struct Subscription: Codable, Sendable, Equatable {
        public var filter: String
        /// The SUBSCRIBE options byte (QoS, No Local, Retain As Published, Retain Handling).
        public var options: UInt8
        public var identifier: UInt32?

        public init(filter: String, options: UInt8, identifier: UInt32?) {
            self.filter = filter
            self.options = options
            self.identifier = identifier
        }
    }

    /// The run of the node that holds it (`node_id` and a random part).
    public var owner: String
    /// When the owner's connection took the session (CONNECT, wall-clock nanoseconds): of two
    /// nodes writing the record, the one with the later claim keeps it.
    public var claimedAt: Int64
    public var version: UInt8
    public var username: String?
    public var expiryInterval: UInt32
    public var online: Bool
    /// Wall-clock milliseconds when it was written: for a session offline then, when its
    /// expiry began (a node that finds the owner dead removes it once expired).
    public var savedAt: Int64 = 0
    /// Wall-clock milliseconds: every QoS 1/2 message for this session that reached its node
    /// before then has been acknowledged by the client. A resuming node reads the stream
    /// again from a little before (`ClusterSessionRecord.replayMargin`).
    public var cursor: Int64
    public var subscriptions: [Subscription]

    /// How far before `cursor` a resuming node starts reading: the time a message takes from
    /// JetStream to a node, and clock differences between nodes and servers.
    public static let replayMargin: Int64 = 2_000

    public init(owner: String, claimedAt: Int64, version: UInt8, username: String?, expiryInterval: UInt32, online: Bool, cursor: Int64,
                subscriptions: [Subscription]) {
        self.owner = owner
        self.claimedAt = claimedAt
        self.version = version
        self.username = username
        self.expiryInterval = expiryInterval
        self.online = online
        self.cursor = cursor
        self.subscriptions = subscriptions
    }
}

/// A connection's will as the cluster keeps it (bucket `martlet_wills`, under its node's run):
/// if the node dies, another node publishes it once.
public struct ClusterWill: Codable, Sendable, Equatable {
    public var topic: String
    public var payload: Data
    public var qos: UInt8
    public var retain: Bool
    /// The v5 properties in MQTT encoding.
    public var properties: Data
    /// Will Delay Interval, seconds.
    public var delay: UInt32
    /// Whether its session outlives the connection: a node that resumes it before the delay
    /// passes cancels the will (MQTT-3.1.3-9).
    public var persistent: Bool

    public init(_ message: Message, delay: UInt32, persistent: Bool) {
        topic = message.topic
        payload = Data(message.payload.readableBytesView)
        qos = message.qos.rawValue
        retain = message.retain
        var buffer = ByteBuffer()
        if !message.properties.isEmpty { try? message.properties.write(to: &buffer) }
        properties = Data(buffer.readableBytesView)
        self.delay = delay
        self.persistent = persistent
    }

    /// The message to publish.
    public func message(clientID: String) -> Message {
        var props: Properties = []
        if !properties.isEmpty {
            var buffer = ByteBuffer(bytes: properties)
            props = (try? Properties.read(from: &buffer, context: .publish)) ?? []
        }
        return Message(topic: topic, payload: ByteBuffer(bytes: payload), qos: QoS(rawValue: qos) ?? .atMostOnce, retain: retain,
                       properties: props, publisherID: clientID)
    }
}
