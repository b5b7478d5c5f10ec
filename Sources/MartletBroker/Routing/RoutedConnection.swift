import MartletMQTT
import NIOCore

/// What the router sees of a client connection: bytes to write and flush, the socket's
/// writability, and the few events of a session's life it tells the connection about.
/// `MQTTConnectionHandler` is the one implementation; the router never sees its type, so the
/// two do not depend on each other's internals.
protocol RoutedConnection: AnyObject {
    /// Tells this connection from a later one of the same client id.
    var connectionID: Int { get }
    var isWritable: Bool { get }
    /// The connection waits for its session (CONNECT accepted, CONNACK not sent yet).
    var isAwaitingSession: Bool { get }
    /// When its timers next need a look (`ConnectionStateMachine.nextTimerDeadline`).
    var nextTimerDeadline: NIODeadline? { get }

    /// Writes encoded bytes (a PUBLISH, or a PUBREL resent on resume); flushed later.
    func write(_ buffer: ByteBuffer)
    /// Returns true when the router should add this connection to its flush list.
    func markDirty() -> Bool
    func flushIfDirty()

    /// The session is attached: CONNACK goes out before anything the router sends next.
    func sessionAttached(sessionPresent: Bool)
    /// The client id's session belongs to another identity: the connection is refused.
    func sessionRefused()
    /// The cluster could not read the session's record: refused with Server unavailable.
    func sessionUnavailable()
    /// Packets the client sent before CONNACK are handled now.
    func replayBufferedPackets()
    /// Another connection took the client id over: this one closes; returns its will.
    func takeOver() -> (will: Message, delay: UInt32)?
    func close(reason: CloseReason)
    /// Inbound flow control lifted the pause on this publisher.
    func resumeInbound()
    /// The periodic sweep: keepalive, connect timeout, write timeout.
    func checkTimers(now: NIODeadline)
    /// Bytes in and out since the last call.
    func takeTraffic() -> (received: Int, sent: Int)
    /// Where it comes from and how, for the admin API.
    var details: ConnectionDetails { get }
}

/// What the admin API shows of a live connection.
struct ConnectionDetails: Sendable {
    var remoteAddress: String?
    /// The listener's address, `host:port`.
    var listener: String
    /// tcp, tls, ws or wss.
    var transport: String
    /// Wall-clock seconds since the epoch when the socket was accepted.
    var connectedAt: Int
    /// The keepalive in force, in seconds (nil: none).
    var keepAlive: Int?
    /// TLS: the protocol version and cipher suite negotiated.
    var tlsVersion: String?
    var tlsCipher: String?
}

/// A connection as the router holds it: usable only on the connection's event loop.
typealias ConnectionRef = NIOLoopBound<any RoutedConnection>
