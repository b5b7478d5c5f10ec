import MartletMQTT
import MartletTLS
import NIOCore

/// How `MQTTClient` connects: where, as whom, and with which session.
public struct MQTTClientConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var clientID: String
    public var version: ProtocolVersion = .v3_1_1
    /// 3.1.1 clean session / v5 clean start.
    public var cleanStart = true
    /// Seconds between PINGREQs when idle; 0 turns keepalive off.
    public var keepAlive: UInt16 = 60
    public var username: String?
    public var password: String?
    public var will: Will?
    /// v5 session expiry interval in seconds (0 = the session ends at disconnect).
    public var sessionExpiryInterval: UInt32?
    /// TLS settings; nil for plain TCP. Verification and host-name checks are on by default.
    public var tls: TLSConfiguration?
    /// MQTT over WebSocket to this path (e.g. "/mqtt"), over `tls` when set (wss); nil: TCP.
    public var webSocketPath: String?
    /// Time allowed for TCP, TLS and CONNACK together.
    public var connectTimeout: TimeAmount = .seconds(10)
    /// Incoming messages held for a consumer that reads slowly; past it the oldest are dropped
    /// (and counted in `MQTTClient.droppedMessages`). The broker's flow control still applies.
    public var messageBufferSize = 10_000
    /// Reconnect automatically after a lost connection; nil (the default) ends the client
    /// with the connection instead.
    public var reconnect: ReconnectPolicy?
    /// Received QoS 1/2 messages are acknowledged (PUBACK / PUBREC) only when the application
    /// calls `MQTTClient.acknowledge(_:)` — once it has done with them — instead of on receipt.
    public var manualAcknowledgement = false
    /// Speak MQTT over this already-connected socket (one end of a socket pair) instead of
    /// connecting to `host`:`port`; the client owns and closes it. A socket serves one
    /// connection, so `reconnect` must stay nil.
    public var connectedSocket: CInt?
    /// Called with every received message on the connection's event loop, instead of
    /// `messages` (which then stays empty): for consumers that forward without a task hop.
    public var onMessage: (@Sendable (ReceivedMessage) -> Void)?
    /// Called on the connection's event loop when its socket starts taking writes again after
    /// NIO's high water mark (see `MQTTClient.isWritable`).
    public var onWritable: (@Sendable () -> Void)?
    /// With `reconnect`: told when the connection is lost and when a reconnect succeeds (once
    /// what the lost connection left unacknowledged has been resent).
    public var onConnectionChange: (@Sendable (ConnectionChange) -> Void)?

    public init(host: String = "127.0.0.1", port: Int = 1883, clientID: String) {
        self.host = host
        self.port = port
        self.clientID = clientID
    }
}

/// What `MQTTClientConfiguration.onConnectionChange` is told.
public enum ConnectionChange: Sendable, Hashable {
    /// The connection closed; reconnecting starts.
    case lost
    /// Connected again (the broker kept the session or not).
    case restored(sessionPresent: Bool)
}

/// Why a client operation failed.
public enum MQTTClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The broker answered CONNECT with a refusal.
    case connectionRefused(ReasonCode)
    /// No CONNACK (or no acknowledgement) in time.
    case timeout(String)
    /// The connection closed before the operation completed.
    case connectionClosed
    /// The broker sent something this client cannot accept.
    case protocolError(String)
    /// The broker refused a SUBSCRIBE filter or a PUBLISH (v5 reason code).
    case refused(ReasonCode)

    public var description: String {
        switch self {
        case .connectionRefused(let code): return "connection refused: \(code)"
        case .timeout(let what): return "timed out waiting for \(what)"
        case .connectionClosed: return "connection closed"
        case .protocolError(let why): return "protocol error: \(why)"
        case .refused(let code): return "refused: \(code)"
        }
    }
}

/// A message received on a subscription.
public struct ReceivedMessage: Sendable, Hashable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: QoS
    public var retain: Bool
    public var properties: Properties
    /// With `manualAcknowledgement`: what `MQTTClient.acknowledge(_:)` needs (QoS 1/2 only).
    public var acknowledgement: Acknowledgement?

    public init(topic: String, payload: ByteBuffer, qos: QoS, retain: Bool, properties: Properties, acknowledgement: Acknowledgement? = nil) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.acknowledgement = acknowledgement
    }

    /// A received message's packet id on the connection that brought it.
    public struct Acknowledgement: Sendable, Hashable {
        let packetIdentifier: UInt16
        let qos: QoS
        let connection: Int
    }
}
