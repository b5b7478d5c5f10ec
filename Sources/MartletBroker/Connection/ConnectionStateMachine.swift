import MartletAuth
import MartletMQTT
import NIOCore

/// The MQTT rules of one client connection, with no I/O: every event (a packet decoded, a
/// timer tick, authentication finished, a router verdict, the socket's writability, the
/// channel closing) is a method that returns what to do, and `MQTTConnectionHandler` does it.
/// Every packet the broker sends a client in reply to what it sent (CONNACK, the QoS
/// acknowledgements, SUBACK, UNSUBACK, PINGRESP, DISCONNECT) leaves through an action of
/// this machine; the router only delivers messages (PUBLISH, and PUBREL resent on resume).
///
/// Time comes in with the events (`now`), so keepalive, connect timeout and write timeout are
/// tested by passing instants, not by waiting.
struct ConnectionStateMachine {
    /// A client past CONNECT.
    struct Connected: Sendable, Equatable {
        var clientID: String
        var version: ProtocolVersion
        /// The will, kept in a box of its own: most clients have none, and every connected
        /// client carries this struct (inline, a `Message?` is over 100 bytes).
        var will: Message? {
            get { willBox?.message }
            set { willBox = newValue.map(WillBox.init) }
        }
        private var willBox: WillBox?
        /// The will's v5 Will Delay Interval in seconds (0: published as soon as the connection is lost).
        var willDelay: UInt32 = 0
        /// 1.5 × the keepalive the client asked for or was given (MQTT-3.1.2-24).
        var keepAlive: TimeAmount?
        var sessionExpiryAtConnect: UInt32
        var assignedClientID: Bool
        var serverKeepAlive: UInt16?
        /// v5 Request Response Information was 1.
        var wantsResponseInformation = false
        /// The client's v5 Maximum Packet Size: what a farewell's Reason String must fit in.
        var maximumPacketSize = UInt32.max

        init(clientID: String, version: ProtocolVersion, will: Message?, willDelay: UInt32 = 0, keepAlive: TimeAmount?,
             sessionExpiryAtConnect: UInt32, assignedClientID: Bool, serverKeepAlive: UInt16?,
             wantsResponseInformation: Bool = false, maximumPacketSize: UInt32 = .max) {
            self.clientID = clientID
            self.version = version
            self.willDelay = willDelay
            self.keepAlive = keepAlive
            self.sessionExpiryAtConnect = sessionExpiryAtConnect
            self.assignedClientID = assignedClientID
            self.serverKeepAlive = serverKeepAlive
            self.wantsResponseInformation = wantsResponseInformation
            self.maximumPacketSize = maximumPacketSize
            self.will = will
        }
    }

    /// A will, immutable once made (replaced whole when it changes).
    final class WillBox: Sendable, Equatable {
        let message: Message
        init(_ message: Message) { self.message = message }
        static func == (a: WillBox, b: WillBox) -> Bool { a.message == b.message }
    }

    /// What CONNECT asked that matters only until the session is attached.
    struct Admission: Sendable, Equatable {
        var connected: Connected
        var username: String?
        var cleanStart: Bool
        /// CONNECT's Keep Alive in seconds.
        var keepAliveAsked: UInt16
        var receiveMaximum: Int
        var maximumPacketSize: Int
        var topicAliasMaximum: Int
    }

    enum State {
        case awaitingConnect
        /// CONNECT's credentials are being checked (off the loop when a key is derived);
        /// packets after it wait.
        /// (Boxed, like `authorizingWill`: the state a connection stays in stays small.)
        indirect case authenticating(ConnectPacket, username: String?)
        /// Credentials accepted; the will's topic is being checked against the ACL.
        indirect case authorizingWill(Admission)
        /// CONNECT accepted; the session is being attached (possibly moved from another loop).
        case attaching(Connected)
        case connected(Connected)
        case closed
    }

    /// The router must be told the connection is gone: the session goes offline or ends,
    /// and the will follows its rules.
    struct Lost: Sendable, Equatable {
        var clientID: String
        var will: Message?
        var willDelay: UInt32
        /// A v5 DISCONNECT's new Session Expiry Interval (MQTT 5 3.14.2.2.2).
        var expiryInterval: UInt32?
    }

    /// Closing the connection: the farewell packet first if there is one, then the socket.
    struct Closing: Sendable, Equatable {
        var reason: CloseReason
        /// A v5 DISCONNECT saying why, or the CONNACK that refuses a connection.
        var farewell: MQTTPacket?
        /// The version the farewell is encoded in.
        var version: ProtocolVersion = .v3_1_1
        /// Nil when no session was attached or being attached (or a takeover already told it).
        var lost: Lost?
    }

    enum Action: Sendable, Equatable {
        case none
        /// Sent in the connection's protocol version.
        case send(MQTTPacket)
        /// The credentials go to the router (`Router.authenticate`); the outcome comes back
        /// through `authenticated` or `authenticationFailed`.
        case authenticate(username: String?, password: [UInt8]?, allowAnonymous: Bool, identityIsUsername: Bool)
        /// The router's ACL decides (`Router.mayWrite`); the answer comes back through `willAuthorized`.
        case authorizeWill(topic: String, username: String?, clientID: String)
        /// The router attaches the session and calls back `sessionAttached` or `sessionRefused`.
        case attach(Router.ConnectRequest)
        /// A PUBLISH for the router to route; its verdict comes back through `routed`.
        case route(PublishPacket, clientID: String)
        /// An acknowledgement, SUBSCRIBE or UNSUBSCRIBE for the session; the router's reply
        /// comes back through `answered`.
        case forward(MQTTPacket, clientID: String)
        case close(Closing)
    }

    /// What `routed` and `answered` say to do: reply first, then whatever follows.
    struct Reply: Sendable, Equatable {
        var packet: MQTTPacket?
        /// Stop decoding after this PUBLISH (the rest of the read waits in the framer) and
        /// stop reading: a lagging subscriber or a lagging loop holds this publisher.
        var holdPublisher = false
        /// SUBACK is out: the session's retained feed goes next (MQTT-3.3.1-6, -8).
        var sendRetained = false
        var close: Closing?
    }

    /// What the socket's writability says to do.
    struct WritabilityChange: Sendable, Equatable {
        /// Reads had stopped only for this socket's own writes: read again.
        var read = false
        /// The session may send what it queued.
        var drainSession = false
    }

    /// Set only by this machine's own methods (here and in `+Connect`).
    var state = State.awaitingConnect
    /// Shared by every connection of the listener (a reference: an idle connection carries
    /// no copy of the configuration).
    private let settings: ConnectionSettings
    var configuration: BrokerConfiguration { settings.configuration }
    var listener: BrokerConfiguration.Listener { settings.listener }

    /// The keepalive in force once connected, in seconds (nil: none, or not connected).
    var keepAliveSeconds: Int? {
        guard case .connected(let c) = state, let k = c.keepAlive else { return nil }
        return Int(k.nanoseconds * 2 / 3 / 1_000_000_000)
    }
    let refusal: Refusal?

    private var openedAt: NIODeadline
    private var lastPacketAt: NIODeadline
    /// Since when the socket has been unwritable.
    private var unwritableSince: NIODeadline?
    /// The TLS client certificate's name, for `use_identity_as_username`.
    var certificateIdentity: String?
    /// Packets that arrived after CONNECT while it was being accepted.
    var buffered: [MQTTPacket] = []
    static let maximumBufferedPackets = 1024
    /// Topic aliases this (v5) client set for what it publishes, made at the first one.
    private var topicAliases: [UInt16: String]?

    /// Reads withheld by inbound flow control (the router paused this publisher).
    private(set) var pausedInbound = false
    /// Reads withheld because this connection's own socket is not draining (a peer that does
    /// not read what it asks for is not read either).
    private(set) var pausedForOwnWrites = false
    /// NIO asked to read while paused; the read is issued on resume.
    private var readRequested = false
    /// A PUBLISH met a lagging subscriber: the packets after it wait, undecoded, in the
    /// framer until inbound flow control resumes this connection.
    private(set) var holdingPackets = false
    /// The peer closed its side while packets were held: the connection closes after them.
    private var inputClosed = false
    /// A PUBLISH arrived in this read burst (only publishers are paused by flow control).
    private var publishedInBurst = false

    init(settings: ConnectionSettings, refusal: Refusal? = nil, now: NIODeadline) {
        self.settings = settings
        self.refusal = refusal
        self.openedAt = now
        self.lastPacketAt = now
    }

    /// The version packets are encoded in (3.1.1 until CONNECT says otherwise).
    var version: ProtocolVersion {
        switch state {
        case .authorizingWill(let a): return a.connected.version
        case .attaching(let c), .connected(let c): return c.version
        case .authenticating(let connect, _): return connect.protocolVersion
        case .awaitingConnect, .closed: return .v3_1_1
        }
    }

    var clientID: String? {
        switch state {
        case .authorizingWill(let a): return a.connected.clientID
        case .attaching(let c), .connected(let c): return c.clientID
        default: return nil
        }
    }

    var isAwaitingSession: Bool {
        if case .attaching = state { return true }
        return false
    }

    var isAuthenticating: Bool {
        if case .authenticating = state { return true }
        return false
    }

    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    // MARK: Channel events

    mutating func channelActive(now: NIODeadline) {
        openedAt = now
        lastPacketAt = now
    }

    /// The client certificate's identity: from our TLS handshake, or from the PROXY v2 header
    /// of a proxy that verified it.
    mutating func certificateVerified(identity: String?) {
        if listener.useIdentityAsUsername { self.certificateIdentity = identity }
    }

    /// Bytes arrived (the client is not silent).
    mutating func bytesReceived(now: NIODeadline) {
        lastPacketAt = now
    }

    /// The channel closed under the connection: whatever session it had goes offline, and
    /// the will is published (MQTT-3.1.2-8) unless it was closed on purpose before.
    mutating func channelInactive() -> Lost? {
        let previous = state
        state = .closed
        holdingPackets = false
        switch previous {
        case .connected(let c), .attaching(let c):
            return Lost(clientID: c.clientID, will: c.will, willDelay: c.willDelay)
        case .awaitingConnect, .authenticating, .authorizingWill, .closed:
            return nil
        }
    }

    // MARK: Packets

    /// A frame that does not decode closes the connection; a CONNECT of an unknown protocol
    /// level is answered in the 3.1.1 format, which every level can read (MQTT-3.1.2-2).
    mutating func decodeFailed(_ error: MQTTCodecError) -> Action {
        let awaitingConnect = if case .awaitingConnect = state { true } else { false }
        guard var closing = close(.protocolError(error.reasonCode, error.description)) else { return .none }
        if awaitingConnect, case .unsupportedProtocolVersion = error {
            closing.farewell = .connack(ConnAckPacket(reasonCode: ReasonCode(ConnectReturnCode.unacceptableProtocolVersion.rawValue)))
        }
        return .close(closing)
    }

    mutating func packetReceived(_ packet: MQTTPacket) -> Action {
        switch state {
        case .awaitingConnect:
            guard case .connect(let connect) = packet else {
                return closeAction(.protocolError(.protocolError, "first packet was \(packet.type), not CONNECT (MQTT-3.1.0-1)"))
            }
            return connectReceived(connect)
        case .authenticating, .authorizingWill, .attaching:
            if case .connect = packet {
                return closeAction(.protocolError(.protocolError, "second CONNECT (MQTT-3.1.0-2)"))
            }
            guard buffered.count < Self.maximumBufferedPackets else {
                return closeAction(.protocolError(.receiveMaximumExceeded, "too many packets before CONNACK"))
            }
            buffered.append(packet)
            return .none
        case .connected(let c):
            return connectedPacket(packet, c)
        case .closed:
            return .none
        }
    }

    private mutating func connectedPacket(_ packet: MQTTPacket, _ c: Connected) -> Action {
        switch packet {
        case .publish(let publish):
            return publishReceived(publish, c)
        case .puback, .pubrec, .pubrel, .pubcomp, .subscribe, .unsubscribe:
            return .forward(packet, clientID: c.clientID)
        case .pingreq:
            return .send(.pingresp)
        case .disconnect(let disconnect):
            return disconnectReceived(disconnect, c)
        case .connect:
            return closeAction(.protocolError(.protocolError, "second CONNECT (MQTT-3.1.0-2)"))
        case .auth:
            return closeAction(.protocolError(.protocolError, "AUTH without an authentication method"))
        case .connack, .suback, .unsuback, .pingresp:
            return closeAction(.protocolError(.protocolError, "\(packet.type) is sent by servers only"))
        }
    }

    private mutating func publishReceived(_ publish: PublishPacket, _ c: Connected) -> Action {
        var publish = publish
        if !publish.properties.isEmpty {
            if c.version == .v5, !publish.properties.subscriptionIdentifiers.isEmpty {
                return closeAction(.protocolError(.protocolError, "PUBLISH from a client with a subscription identifier (MQTT-3.3.4-6)"))
            }
            if let alias = publish.properties.topicAlias {
                // Above the Topic Alias Maximum we advertised (the decoder refuses 0): MQTT 5 3.3.2.3.4.
                guard Int(alias) <= configuration.maximumTopicAlias else {
                    return closeAction(.protocolError(.topicAliasInvalid, "topic alias \(alias) above the maximum \(configuration.maximumTopicAlias)"))
                }
                if publish.topic.isEmpty {
                    guard let topic = topicAliases?[alias] else {
                        return closeAction(.protocolError(.protocolError, "topic alias \(alias) was never set on this connection"))
                    }
                    publish.topic = topic
                } else {
                    topicAliases = topicAliases ?? [:]
                    topicAliases![alias] = publish.topic
                }
            }
        }
        if publish.qos > configuration.maximumQoS {
            return closeAction(.protocolError(.qosNotSupported, "PUBLISH at QoS \(publish.qos.rawValue) above max_qos (MQTT-3.2.2-11)"))
        }
        if publish.retain && !configuration.retainAvailable {
            return closeAction(.protocolError(.retainNotSupported, "retained PUBLISH while retain_available is false (MQTT 5 3.3.1.3)"))
        }
        guard Topic.isWithin(publish.topic, maximumLength: configuration.maximumTopicLength, maximumLevels: configuration.maximumTopicLevels) else {
            return closeAction(.protocolError(.topicNameInvalid, "topic longer than max_topic_length or deeper than max_topic_levels"))
        }
        publishedInBurst = true
        return .route(publish, clientID: c.clientID)
    }

    private mutating func disconnectReceived(_ disconnect: DisconnectPacket, _ c: Connected) -> Action {
        var will = c.will
        var expiry: UInt32?
        if c.version == .v5 {
            if let interval = disconnect.properties.sessionExpiryInterval {
                if c.sessionExpiryAtConnect == 0 && interval != 0 {
                    return closeAction(.protocolError(.protocolError, "session expiry set on DISCONNECT after 0 on CONNECT (MQTT-3.14.2-2)"))
                }
                expiry = interval
            }
            if disconnect.reasonCode != .disconnectWithWillMessage { will = nil }
        } else {
            will = nil  // DISCONNECT discards the will (MQTT-3.14.4-3)
        }
        state = .closed
        return .close(Closing(reason: .clientDisconnected,
                              lost: Lost(clientID: c.clientID, will: will, willDelay: c.willDelay, expiryInterval: expiry)))
    }

    // MARK: Router verdicts

    /// The router routed a PUBLISH of this connection.
    mutating func routed(_ verdict: Router.PublishVerdict) -> Reply {
        guard case .connected = state else { return Reply() }
        if verdict.receiveMaximumExceeded {
            // One QoS 2 PUBLISH more than the Receive Maximum we advertised (MQTT 5 3.3.4).
            return Reply(close: close(.protocolError(.receiveMaximumExceeded, "more QoS 2 PUBLISHes in flight than the Receive Maximum")))
        }
        var reply = Reply(packet: verdict.reply)
        if verdict.publisherMustWait && !pausedInbound {
            holdingPackets = true
            pausedInbound = true
            reply.holdPublisher = true
        }
        return reply
    }

    /// The router handled an acknowledgement, SUBSCRIBE or UNSUBSCRIBE of this connection.
    mutating func answered(_ answer: Router.Answer) -> Reply {
        guard case .connected = state else { return Reply() }
        if let why = answer.protocolError { return Reply(close: close(.protocolError(.protocolError, why))) }
        return Reply(packet: answer.reply, sendRetained: answer.sendRetained)
    }

    // MARK: Flow control

    /// The end of a read burst: a publisher is paused when the router's marks say so
    /// (`shouldPause` is asked only after a PUBLISH). Returns whether it was paused now.
    mutating func readBurstEnded(writable: Bool, shouldPause: () -> Bool) -> Bool {
        var pausedNow = false
        if publishedInBurst {
            publishedInBurst = false
            if !pausedInbound, case .connected = state, shouldPause() {
                pausedInbound = true
                pausedNow = true
            }
        }
        if !writable { pausedForOwnWrites = true }
        return pausedNow
    }

    /// NIO wants to read: true when it may now, false when the read waits for a resume.
    mutating func readWanted() -> Bool {
        if pausedInbound || pausedForOwnWrites {
            readRequested = true
            return false
        }
        return true
    }

    /// Whether a read withheld by a pause is issued now. Time spent paused is not the
    /// client's silence.
    private mutating func readAfterPause(now: NIODeadline) -> Bool {
        guard !pausedInbound, !pausedForOwnWrites, readRequested else { return false }
        readRequested = false
        lastPacketAt = now
        return true
    }

    mutating func writabilityChanged(writable: Bool, now: NIODeadline) -> WritabilityChange {
        var change = WritabilityChange()
        if writable {
            unwritableSince = nil
            if pausedForOwnWrites {
                pausedForOwnWrites = false
                change.read = readAfterPause(now: now)
            }
            if case .connected = state { change.drainSession = true }
        } else if unwritableSince == nil {
            unwritableSince = now
        }
        return change
    }

    /// What resuming a paused publisher does.
    struct Resumption: Sendable, Equatable {
        /// Decode the packets held in the framer, end the burst, then call `heldPacketsDecoded`.
        var decodeHeld = false
        var read = false
        /// The peer half-closed while packets were held, and none are held now.
        var close = false
    }

    /// Inbound flow control lifted the pause.
    mutating func resumed(now: NIODeadline) -> Resumption {
        guard pausedInbound else { return Resumption() }
        pausedInbound = false
        if holdingPackets {
            lastPacketAt = now
            holdingPackets = false
            return Resumption(decodeHeld: true)
        }
        return Resumption(read: readAfterPause(now: now))
    }

    /// Held packets were decoded after a resume (decoding may have held some again).
    mutating func heldPacketsDecoded(now: NIODeadline) -> Resumption {
        if inputClosed && !holdingPackets { return Resumption(close: true) }
        return Resumption(read: readAfterPause(now: now))
    }

    /// Whether a half-closed connection closes now: not while packets are held (they are
    /// still routed, as the subscriber drains).
    mutating func inputEnded() -> Bool {
        if holdingPackets {
            inputClosed = true
            return false
        }
        return true
    }

    /// Packets held by flow control are decoded now (resumed, or the channel closing).
    mutating func releaseHeldPackets() {
        holdingPackets = false
    }

    // MARK: Time

    /// The earliest time `timerTick` could close this connection if nothing happens before
    /// (write stall, connect timeout, keepalive); nil when none applies. While reads are
    /// paused the keepalive deadline may be past: the connection is checked each sweep then.
    var nextTimerDeadline: NIODeadline? {
        var next: NIODeadline?
        func consider(_ deadline: NIODeadline) { next = next.map { min($0, deadline) } ?? deadline }
        if let since = unwritableSince { consider(since + configuration.writeTimeout) }
        switch state {
        case .awaitingConnect, .authenticating, .authorizingWill:
            consider(openedAt + configuration.connectTimeout)
        case .connected(let c):
            if let k = c.keepAlive { consider(lastPacketAt + k) }
        case .attaching, .closed:
            break
        }
        return next
    }

    /// Keepalive (1.5 × the client's value, MQTT-3.1.2-24), connect timeout and write stall.
    mutating func timerTick(now: NIODeadline) -> Closing? {
        if let since = unwritableSince, now - since > configuration.writeTimeout {
            return close(.writeTimeout)
        }
        switch state {
        case .awaitingConnect, .authenticating, .authorizingWill:
            if now - openedAt > configuration.connectTimeout { return close(.connectTimeout) }
        case .connected(let c):
            // A connection the broker is not reading cannot be blamed for silence.
            if let k = c.keepAlive, !pausedInbound, !pausedForOwnWrites, now - lastPacketAt > k {
                return close(.keepAliveTimeout)
            }
        case .attaching, .closed:
            break
        }
        return nil
    }

    // MARK: Closing

    /// The broker closes the connection: a v5 client past CONNACK is told why, and the
    /// router hears the connection is gone (the will is published). Nil when already closed.
    mutating func close(_ reason: CloseReason) -> Closing? {
        let previous = state
        if case .closed = previous { return nil }
        state = .closed
        var closing = Closing(reason: reason)
        if case .connected(let c) = previous, c.version == .v5, let code = reason.reasonCode {
            var disconnect = DisconnectPacket(reasonCode: code)
            explain(&disconnect.properties, reason.explanation, within: c.maximumPacketSize) {
                MQTTPacket.disconnect(DisconnectPacket(reasonCode: code, properties: $0)).encodedLength(version: .v5)
            }
            closing.farewell = .disconnect(disconnect)
            closing.version = .v5
        }
        switch previous {
        case .connected(let c), .attaching(let c):
            closing.lost = Lost(clientID: c.clientID, will: c.will, willDelay: c.willDelay)
        default:
            break
        }
        return closing
    }

    /// Adds a Reason String to a farewell's `properties` when `reason_strings` is on and the
    /// packet (`length` with them) stays within the client's Maximum Packet Size
    /// (MQTT-3.2.2-19, MQTT-3.14.2-3).
    func explain(_ properties: inout Properties, _ why: String, within limit: UInt32, length: (Properties) -> Int) {
        guard configuration.reasonStrings else { return }
        var with = properties
        with.reasonString = why
        if length(with) <= Int(limit) { properties = with }
    }

    mutating func closeAction(_ reason: CloseReason) -> Action {
        let closing: Closing? = close(reason)
        return closing.map { .close($0) } ?? .none
    }
}
