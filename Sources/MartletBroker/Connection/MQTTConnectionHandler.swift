import Logging
import MartletAuth
import MartletMQTT
import MartletTLS
import NIOCore
import NIOPosix

/// One client connection: framing, the CONNECT handshake, keepalive, write-stall and
/// read pausing, and closing with the right reason. Everything that is session state (QoS
/// flows, subscriptions, the outbox) lives in the loop's `Router`, which this handler calls
/// synchronously.
final class MQTTConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Why a connection is refused at CONNECT before any session is touched.
    struct Refusal: Sendable {
        var v3: ConnectReturnCode
        var v5: ReasonCode
        var why: String
    }

    enum CloseReason: Sendable, Equatable {
        /// A malformed packet or a protocol violation: the will is published.
        case protocolError(ReasonCode, String)
        case keepAliveTimeout
        case connectTimeout
        case sessionTakenOver
        case serverShuttingDown
        /// The socket stayed unwritable for `write_timeout`.
        case writeTimeout
        /// The `disconnect` slow-consumer policy.
        case slowConsumer

        var reasonCode: ReasonCode? {
            switch self {
            case .protocolError(let code, _): return code
            case .keepAliveTimeout: return .keepAliveTimeout
            case .connectTimeout, .writeTimeout: return nil
            case .sessionTakenOver: return .sessionTakenOver
            case .serverShuttingDown: return .serverShuttingDown
            case .slowConsumer: return .quotaExceeded
            }
        }
    }

    private enum State {
        case awaitingConnect
        /// CONNECT's password is being verified off the event loop; packets after it wait.
        case authenticating
        /// CONNECT accepted; the session is being attached (possibly moved from another loop).
        case attaching(Connected)
        case connected(Connected)
        case closed
    }

    private struct Connected {
        var clientID: String
        var version: ProtocolVersion
        var will: Message?
        /// The will's v5 Will Delay Interval in seconds (0: published as soon as the connection is lost).
        var willDelay: UInt32 = 0
        var keepAlive: TimeAmount?
        var sessionExpiryAtConnect: UInt32
        var assignedClientID: Bool
        var serverKeepAlive: UInt16?
        /// v5 Request Response Information was 1.
        var wantsResponseInformation = false
    }

    private let router: Router
    /// Limits and the listener's settings, shared by every connection accepted under them.
    private let settings: ConnectionSettings
    private var configuration: BrokerConfiguration { settings.configuration }
    private var listener: BrokerConfiguration.Listener { settings.listener }
    private let refusal: Refusal?
    /// The broker's logger; this connection's address and client id are added when a line is
    /// logged (see `log`), so an idle connection holds no metadata of its own.
    private let baseLogger: Logger
    private var clientIDForLogs: String?
    private var framer: MQTTPacketFramer
    private var state = State.awaitingConnect
    private var context: ChannelHandlerContext?
    private(set) var connectionID = 0
    private var openedAt = NIODeadline.now()
    private var lastPacketAt = NIODeadline.now()
    /// Bytes were written and not flushed yet.
    private var needsFlush = false
    /// The router holds this connection in its list of connections to flush.
    private var inRouterFlushList = false
    /// Packets that arrived after CONNECT while the session was being attached.
    private var buffered: [MQTTPacket] = []
    private static let maximumBufferedPackets = 1024

    /// Reads withheld: by inbound flow control, or because this connection's own socket is
    /// not draining (a peer that does not read what it asks for is not read either).
    private var pausedInbound = false
    private var pausedForOwnWrites = false
    /// NIO asked to read while paused; the read is issued on resume.
    private var readRequested = false
    /// Routing a PUBLISH met a lagging subscriber: the packets after it wait, undecoded, in
    /// the framer until inbound flow control resumes this connection.
    private var holdingPackets = false
    /// The peer closed its side while packets were held: the connection closes after them.
    private var inputClosed = false
    /// A PUBLISH arrived in this read burst (only publishers are paused by flow control).
    private var publishedInBurst = false
    /// Since when the socket has been unwritable.
    private var unwritableSince: NIODeadline?
    /// Topic aliases this (v5) client set for what it publishes, made at the first one.
    private var topicAliases: [UInt16: String]?
    /// Bytes in and out since the router last collected them.
    private var bytesIn = 0
    private var bytesOut = 0

    init(router: Router, settings: ConnectionSettings, refusal: Refusal? = nil, logger: Logger) {
        self.router = router
        self.settings = settings
        self.refusal = refusal
        self.baseLogger = logger
        self.framer = MQTTPacketFramer(decoder: MQTTPacketDecoder(maximumPacketSize: settings.configuration.maximumPacketSize))
    }

    private var version: ProtocolVersion {
        switch state {
        case .attaching(let c), .connected(let c): return c.version
        default: return .v3_1_1
        }
    }

    private func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata = [:]) {
        guard baseLogger.logLevel <= level else { return }
        var logger = baseLogger
        if let remote = context?.channel.remoteAddress { logger[metadataKey: "remote"] = "\(remote)" }
        if let id = clientIDForLogs { logger[metadataKey: "client_id"] = "\(id)" }
        logger.log(level: level, message(), metadata: metadata())
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// The context holds this handler and this handler held the context: without letting go
    /// here, both (and what they reference) outlived every closed connection.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        openedAt = .now()
        lastPacketAt = openedAt
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        connectionID = router.assumeIsolated { $0.register(bound) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if holdingPackets {
            // Closed under us (a TLS close_notify, an error): what was held is routed now,
            // past the lagging subscriber's limits if need be (its drops are counted).
            decodeHeldPackets(context: context)
            router.assumeIsolated { $0.flush() }
        }
        let previous = state
        let connectionID = self.connectionID
        state = .closed
        router.assumeIsolated { router in
            router.unregister(connectionID)
            switch previous {
            case .connected(let c), .attaching(let c):
                // The socket closed without DISCONNECT: the will is published (MQTT-3.1.2-8).
                router.connectionLost(clientID: c.clientID, connectionID: connectionID, will: c.will, willDelay: c.willDelay)
            case .awaitingConnect, .authenticating, .closed:
                break
            }
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .closed = state { return }
        lastPacketAt = .now()
        let bytes = unwrapInboundIn(data)
        bytesIn += bytes.readableBytes
        if holdingPackets {
            framer.hold(bytes, allocator: context.channel.allocator)
            return
        }
        decode(bytes, allocator: context.channel.allocator)
    }

    /// Decodes what flow control held in the framer (it may stop again, holding the rest).
    private func decodeHeldPackets(context: ChannelHandlerContext) {
        holdingPackets = false
        decode(ByteBuffer(), allocator: context.channel.allocator)
    }

    private func decode(_ bytes: ByteBuffer, allocator: ByteBufferAllocator) {
        do {
            try framer.process(bytes, allocator: allocator) { packet in
                handle(packet)
                if case .closed = state { return false }
                return !holdingPackets
            }
        } catch let error as MQTTCodecError {
            handleDecodeError(error)
        } catch {
            close(reason: .protocolError(.malformedPacket, "\(error)"))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        endOfBurst(context: context)
        context.fireChannelReadComplete()
    }

    /// After a read burst (or packets held by flow control were decoded): flush what the
    /// burst wrote and decide whether this publisher is read again.
    private func endOfBurst(context: ChannelHandlerContext) {
        router.assumeIsolated { $0.flush() }
        flushIfDirty()
        if publishedInBurst {
            publishedInBurst = false
            if !pausedInbound, case .connected = state, router.assumeIsolated({ $0.inboundShouldPause }) {
                pausedInbound = true
                let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                router.assumeIsolated { $0.paused(bound) }
            }
        }
        if !context.channel.isWritable { pausedForOwnWrites = true }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            unwritableSince = nil
            if pausedForOwnWrites {
                pausedForOwnWrites = false
                resumeReadingIfAllowed(context: context)
            }
            if case .connected(let c) = state {
                // Not re-entrantly: this can fire in the middle of a router flush.
                let connectionID = self.connectionID
                let router = self.router
                context.eventLoop.execute {
                    router.assumeIsolated { $0.becameWritable(clientID: c.clientID, connectionID: connectionID) }
                }
            }
        } else if unwritableSince == nil {
            unwritableSince = .now()
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Reading on demand

    func read(context: ChannelHandlerContext) {
        if pausedInbound || pausedForOwnWrites {
            readRequested = true
        } else {
            context.read()
        }
    }

    private func resumeReadingIfAllowed(context: ChannelHandlerContext) {
        guard !pausedInbound, !pausedForOwnWrites, readRequested else { return }
        readRequested = false
        // Time spent paused is not the client's silence.
        lastPacketAt = .now()
        context.read()
    }

    /// Inbound flow control lifted the pause: held packets are decoded first.
    func resumeInbound() {
        guard pausedInbound else { return }
        pausedInbound = false
        guard let context else { return }
        if holdingPackets {
            lastPacketAt = .now()
            decodeHeldPackets(context: context)
            endOfBurst(context: context)
            if inputClosed && !holdingPackets {
                context.close(promise: nil)
                return
            }
        }
        resumeReadingIfAllowed(context: context)
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func takeTraffic() -> (received: Int, sent: Int) {
        defer {
            bytesIn = 0
            bytesOut = 0
        }
        return (bytesIn, bytesOut)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed = event as? ChannelEvent {
            // EOF. Packets held by flow control are still routed, as the subscriber drains.
            if holdingPackets { inputClosed = true } else { context.close(promise: nil) }
            return
        }
        if case .handshakeCompleted = event as? TLSEvent {
            router.assumeIsolated { $0.count(\.tlsHandshakes) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is TLSError { router.assumeIsolated { $0.count(\.tlsHandshakeFailures) } }
        log(.debug, "connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: Packets

    private func handleDecodeError(_ error: MQTTCodecError) {
        if case .awaitingConnect = state {
            if case .unsupportedProtocolVersion = error {
                // Answer in the 3.1.1 format, which every level can read (MQTT-3.1.2-2).
                sendRaw(.connack(ConnAckPacket(reasonCode: ReasonCode(ConnectReturnCode.unacceptableProtocolVersion.rawValue))), version: .v3_1_1)
            }
            log(.debug, "bad CONNECT", metadata: ["error": "\(error)"])
            close(reason: .protocolError(error.reasonCode, error.description))
            return
        }
        close(reason: .protocolError(error.reasonCode, error.description))
    }

    private func handle(_ packet: MQTTPacket) {
        switch state {
        case .awaitingConnect:
            guard case .connect(let connect) = packet else {
                // The first packet must be CONNECT (MQTT-3.1.0-1).
                close(reason: .protocolError(.protocolError, "first packet was \(packet.type), not CONNECT"))
                return
            }
            handleConnect(connect)
        case .authenticating, .attaching:
            if case .connect = packet {
                close(reason: .protocolError(.protocolError, "second CONNECT"))
                return
            }
            guard buffered.count < Self.maximumBufferedPackets else {
                close(reason: .protocolError(.receiveMaximumExceeded, "too many packets before CONNACK"))
                return
            }
            buffered.append(packet)
        case .connected(let c):
            handleConnected(packet, c)
        case .closed:
            break
        }
    }

    private func handleConnected(_ packet: MQTTPacket, _ c: Connected) {
        let connectionID = self.connectionID
        switch packet {
        case .publish(var publish):
            if c.version == .v5, !publish.properties.isEmpty, !publish.properties.subscriptionIdentifiers.isEmpty {
                // Only a server sends Subscription Identifiers in a PUBLISH (MQTT-3.3.4-6).
                close(reason: .protocolError(.protocolError, "PUBLISH from a client with a subscription identifier"))
                return
            }
            if !publish.properties.isEmpty, let alias = publish.properties.topicAlias {
                // Above the Topic Alias Maximum we advertised (the decoder refuses 0): MQTT 5 3.3.2.3.4.
                guard Int(alias) <= configuration.maximumTopicAlias else {
                    close(reason: .protocolError(.topicAliasInvalid, "topic alias \(alias) above the maximum \(configuration.maximumTopicAlias)"))
                    return
                }
                if publish.topic.isEmpty {
                    guard let topic = topicAliases?[alias] else {
                        close(reason: .protocolError(.protocolError, "topic alias \(alias) was never set on this connection"))
                        return
                    }
                    publish.topic = topic
                } else {
                    topicAliases = topicAliases ?? [:]
                    topicAliases![alias] = publish.topic
                }
            }
            if publish.qos > configuration.maximumQoS {
                // Above the Maximum QoS we advertised (MQTT-3.2.2-11).
                close(reason: .protocolError(.qosNotSupported, "PUBLISH at QoS \(publish.qos.rawValue) above max_qos"))
                return
            }
            if publish.retain && !configuration.retainAvailable {
                // Retain Available is 0: refused with 0x9A (MQTT 5 3.3.1.3).
                close(reason: .protocolError(.retainNotSupported, "retained PUBLISH while retain_available is false"))
                return
            }
            guard Topic.isWithin(publish.topic, maximumLength: configuration.maximumTopicLength, maximumLevels: configuration.maximumTopicLevels) else {
                close(reason: .protocolError(.topicNameInvalid, "topic longer than max_topic_length or deeper than max_topic_levels"))
                return
            }
            publishedInBurst = true
            let resolved = MQTTPacket.publish(publish)
            let (mustWait, overReceiveMaximum) = router.assumeIsolated { router in
                router.received(resolved, clientID: c.clientID, connectionID: connectionID)
                return (router.publisherMustWait, router.receiveMaximumExceeded)
            }
            if overReceiveMaximum {
                close(reason: .protocolError(.receiveMaximumExceeded, "more QoS 2 PUBLISHes in flight than the Receive Maximum"))
                return
            }
            if mustWait && !pausedInbound, let context {
                // Stop right after this packet: the rest of the read waits in the framer.
                holdingPackets = true
                pausedInbound = true
                let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                router.assumeIsolated { $0.paused(bound) }
            }
        case .puback, .pubrec, .pubrel, .pubcomp, .subscribe, .unsubscribe:
            router.assumeIsolated { $0.received(packet, clientID: c.clientID, connectionID: connectionID) }
        case .pingreq:
            send(.pingresp)
        case .disconnect(let disconnect):
            handleDisconnect(disconnect, c)
        case .connect:
            // A second CONNECT is a protocol violation (MQTT-3.1.0-2).
            close(reason: .protocolError(.protocolError, "second CONNECT"))
        case .auth:
            close(reason: .protocolError(.protocolError, "AUTH without an authentication method"))
        case .connack, .suback, .unsuback, .pingresp:
            close(reason: .protocolError(.protocolError, "\(packet.type) is sent by servers only"))
        }
    }

    private func handleDisconnect(_ disconnect: DisconnectPacket, _ c: Connected) {
        let connectionID = self.connectionID
        var will = c.will
        if c.version == .v5 {
            if let expiry = disconnect.properties.sessionExpiryInterval {
                // A session that ended at disconnect cannot be extended by DISCONNECT (MQTT-3.14.2-2).
                if c.sessionExpiryAtConnect == 0 && expiry != 0 {
                    close(reason: .protocolError(.protocolError, "session expiry set on DISCONNECT after 0 on CONNECT"))
                    return
                }
                router.assumeIsolated { $0.updateExpiry(clientID: c.clientID, connectionID: connectionID, expiryInterval: expiry) }
            }
            if disconnect.reasonCode != .disconnectWithWillMessage { will = nil }
        } else {
            will = nil  // DISCONNECT discards the will (MQTT-3.14.4-3)
        }
        state = .closed
        router.assumeIsolated {
            $0.connectionLost(clientID: c.clientID, connectionID: connectionID, will: will, willDelay: c.willDelay)
        }
        context?.close(promise: nil)
    }

    private func handleConnect(_ connect: ConnectPacket) {
        let v = connect.protocolVersion
        if let refusal {
            log(.info, "connection refused", metadata: ["reason": "\(refusal.why)"])
            refuse(v, v3: refusal.v3, v5: refusal.v5)
            return
        }
        if v == .v5, connect.properties.authenticationMethod == nil, connect.properties.authenticationData != nil {
            // Authentication Data only goes with an Authentication Method (MQTT 5 3.1.2.11.10).
            log(.info, "bad CONNECT: authentication data without an authentication method")
            refuse(v, v3: .serverUnavailable, v5: .protocolError)
            return
        }
        if v == .v5, let method = connect.properties.authenticationMethod {
            // No enhanced authentication: refused and closed (MQTT-4.12.0-1).
            log(.info, "connection refused: unsupported authentication method", metadata: ["method": "\(method)"])
            refuse(v, v3: .notAuthorized, v5: .badAuthenticationMethod)
            return
        }
        if let will = connect.will, will.qos > configuration.maximumQoS {
            // A will above Maximum QoS (MQTT-3.2.2-12).
            refuse(v, v3: .serverUnavailable, v5: .qosNotSupported)
            return
        }
        if let will = connect.will, will.retain, !configuration.retainAvailable {
            // A retained will where Retain Available is 0 (MQTT-3.2.2-13).
            refuse(v, v3: .serverUnavailable, v5: .retainNotSupported)
            return
        }
        if let will = connect.will,
           !Topic.isWithin(will.topic, maximumLength: configuration.maximumTopicLength, maximumLevels: configuration.maximumTopicLevels) {
            if v == .v5 {
                refuse(v, v3: .serverUnavailable, v5: .topicNameInvalid)
            } else {
                close(reason: .protocolError(.topicNameInvalid, "will topic beyond max_topic_length or max_topic_levels"))
            }
            return
        }
        // Authentication: the certificate's identity, or user name and password.
        var username = connect.username
        if listener.useIdentityAsUsername {
            let certificate = try? context?.pipeline.syncOperations.handler(type: TLSHandler.self).peerCertificate
            username = certificate.flatMap { $0.subjectCommonName ?? $0.subjectAlternativeNames.first }
        }
        let password = connect.password.map { Array($0.readableBytesView) }
        let allowAnonymous = listener.allowAnonymous
        let identityIsUsername = listener.useIdentityAsUsername && username != nil
        let offered = username
        let step = router.assumeIsolated { $0.authenticate(
            username: offered, password: password, allowAnonymous: allowAnonymous, identityIsUsername: identityIsUsername) }
        switch step {
        case .done(let outcome):
            connectAuthenticated(connect, username: username, outcome: outcome)
        case .verify(let authenticator):
            verifyOffLoop(connect, username: username ?? "", password: password ?? [], authenticator)
        }
    }

    /// Derives the password's key on NIO's thread pool (PBKDF2 takes milliseconds, which
    /// would stall every connection of this loop), then goes on with CONNECT here.
    private func verifyOffLoop(_ connect: ConnectPacket, username: String, password: [UInt8], _ authenticator: Authenticator) {
        guard let context else { return }
        state = .authenticating
        NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) {
            authenticator.verify(username: username, password: password)
        }.assumeIsolated().whenComplete { [self] result in
            // Closed meanwhile (connect timeout, peer gone): nothing to continue.
            guard case .authenticating = state else { return }
            state = .awaitingConnect
            switch result {
            case .success(let outcome):
                router.assumeIsolated { $0.authenticated(outcome, username: username) }
                connectAuthenticated(connect, username: username, outcome: outcome)
            case .failure(let error):
                log(.error, "cannot verify the password", metadata: ["error": "\(error)"])
                refuse(connect.protocolVersion, v3: .serverUnavailable, v5: .serverUnavailable)
            }
            router.assumeIsolated { $0.flush() }
            flushIfDirty()
        }
    }

    /// CONNECT once its credentials are checked: the client id, the will's ACL, keepalive,
    /// then the session is attached.
    private func connectAuthenticated(_ connect: ConnectPacket, username: String?, outcome: Authenticator.Outcome) {
        let v = connect.protocolVersion
        switch outcome {
        case .accepted:
            break
        case .notAuthorized:
            log(.info, "connection refused: not authorized", metadata: ["user": "\(username ?? "(anonymous)")"])
            refuse(v, v3: .notAuthorized, v5: .notAuthorized)
            return
        case .badCredentials:
            log(.info, "connection refused: bad user name or password", metadata: ["user": "\(username ?? "")"])
            refuse(v, v3: .badUserNameOrPassword, v5: .badUserNameOrPassword)
            return
        }
        var clientID = connect.clientIdentifier
        var assigned = false
        if clientID.isEmpty {
            // 3.1.1 assigns an id only to clean sessions (MQTT-3.1.3-7/8); v5 always may.
            guard connect.cleanStart || v == .v5 else {
                refuse(v, v3: .identifierRejected, v5: .clientIdentifierNotValid)
                return
            }
            clientID = "martlet-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
            assigned = true
        }
        guard clientID.utf8.count <= configuration.maximumClientIdentifierLength else {
            refuse(v, v3: .identifierRejected, v5: .clientIdentifierNotValid)
            return
        }
        let user = username
        let id = clientID
        if let will = connect.will, !router.assumeIsolated({ $0.mayWrite(will.topic, username: user, clientID: id) }) {
            log(.info, "connection refused: the ACL does not allow the will topic", metadata: ["topic": "\(will.topic)"])
            refuse(v, v3: .notAuthorized, v5: .notAuthorized)
            return
        }
        var keepAlive = connect.keepAlive
        var serverKeepAlive: UInt16?
        if configuration.maximumKeepalive > 0 && (keepAlive == 0 || keepAlive > configuration.maximumKeepalive) {
            if v == .v5 {
                keepAlive = configuration.maximumKeepalive
                serverKeepAlive = keepAlive
            } else {
                refuse(v, v3: .identifierRejected, v5: .unspecifiedError)
                return
            }
        }
        let expiry: UInt32
        if v == .v5 {
            expiry = connect.properties.sessionExpiryInterval ?? 0
        } else {
            expiry = connect.cleanStart ? 0 : Session.neverExpires
        }
        let will = connect.will.map { w -> Message in
            var properties = w.properties
            properties.set(.willDelayInterval, nil)
            return Message(topic: w.topic, payload: w.payload, qos: w.qos, retain: w.retain, properties: properties, publisherID: clientID)
        }
        let connected = Connected(
            clientID: clientID, version: v, will: will, willDelay: v == .v5 ? connect.will?.properties.willDelayInterval ?? 0 : 0,
            keepAlive: keepAlive == 0 ? nil : .milliseconds(Int64(keepAlive) * 1500),
            sessionExpiryAtConnect: expiry, assignedClientID: assigned, serverKeepAlive: serverKeepAlive,
            wantsResponseInformation: v == .v5 && connect.properties.requestResponseInformation == 1)
        state = .attaching(connected)
        clientIDForLogs = clientID
        let request = Router.ConnectRequest(
            clientID: clientID, version: v, cleanStart: connect.cleanStart, expiryInterval: expiry,
            receiveMaximum: Int(connect.properties.receiveMaximum ?? UInt16.max),
            maximumPacketSize: connect.properties.maximumPacketSize.map { Int($0) } ?? .max,
            policy: listener.slowConsumerPolicy, username: username)
        let bound = NIOLoopBound(self, eventLoop: context!.eventLoop)
        router.assumeIsolated { $0.connect(request, handler: bound) }
    }

    private func refuse(_ version: ProtocolVersion, v3: ConnectReturnCode, v5: ReasonCode) {
        let code = version == .v5 ? v5 : ReasonCode(v3.rawValue)
        sendRaw(.connack(ConnAckPacket(sessionPresent: false, reasonCode: code)), version: version)
        state = .closed
        flushIfDirty()
        context?.close(promise: nil)
    }

    // MARK: Called by the router

    var isAwaitingSession: Bool {
        if case .attaching = state { return true }
        return false
    }

    /// The client id's session belongs to another identity (`session_other_identity: refuse`):
    /// CONNACK 0x05 / v5 0x87 and closed; the will is not published.
    func refuseSession() {
        guard case .attaching(let c) = state else { return }
        log(.info, "connection refused: the client id's session belongs to another identity")
        refuse(c.version, v3: .notAuthorized, v5: .notAuthorized)
    }

    /// The session is attached: CONNACK goes out before anything the router sends next.
    func sessionAttached(sessionPresent: Bool) {
        guard case .attaching(let c) = state else { return }
        var properties = Properties()
        if c.version == .v5 {
            if c.assignedClientID { properties.assignedClientIdentifier = c.clientID }
            if let k = c.serverKeepAlive { properties.serverKeepAlive = k }
            properties.maximumPacketSize = UInt32(clamping: configuration.maximumPacketSize)
            if configuration.receiveMaximum < 65_535 { properties.receiveMaximum = UInt16(configuration.receiveMaximum) }
            if configuration.maximumTopicAlias > 0 { properties.topicAliasMaximum = UInt16(configuration.maximumTopicAlias) }
            if configuration.maximumQoS < .exactlyOnce { properties.maximumQoS = configuration.maximumQoS.rawValue }
            if !configuration.retainAvailable { properties.retainAvailable = 0 }
            if c.wantsResponseInformation && !configuration.responseInformationPrefix.isEmpty {
                properties.responseInformation = configuration.responseInformationPrefix + c.clientID
            }
            properties.sharedSubscriptionAvailable = 0
        }
        state = .connected(c)
        // MQTT 3.1 has no Session Present: the byte is reserved and stays 0.
        send(.connack(ConnAckPacket(sessionPresent: sessionPresent && c.version != .v3_1, reasonCode: .success, properties: properties)))
    }

    /// Packets the client sent before CONNACK are handled once the session is attached.
    func replayBufferedPackets() {
        let packets = buffered
        buffered = []
        for packet in packets { handle(packet) }
    }

    /// Another connection took over this client id. Returns the will and its delay.
    func takeOver() -> (will: Message, delay: UInt32)? {
        let will: (Message, UInt32)?
        switch state {
        case .connected(let c), .attaching(let c): will = c.will.map { ($0, c.willDelay) }
        default: will = nil
        }
        close(reason: .sessionTakenOver, notifyRouter: false)
        return will
    }

    /// Keepalive (1.5 × the client's value, MQTT-3.1.2-24), connect timeout and write stall.
    func checkTimers(now: NIODeadline) {
        if let since = unwritableSince, now - since > configuration.writeTimeout {
            log(.info, "write timeout: the socket stayed unwritable", metadata: ["seconds": "\((now - since).nanoseconds / 1_000_000_000)"])
            close(reason: .writeTimeout)
            return
        }
        switch state {
        case .awaitingConnect, .authenticating:
            if now - openedAt > configuration.connectTimeout { close(reason: .connectTimeout) }
        case .connected(let c):
            // A connection the broker is not reading cannot be blamed for silence.
            if let k = c.keepAlive, !pausedInbound, !pausedForOwnWrites, now - lastPacketAt > k {
                log(.info, "keepalive expired")
                close(reason: .keepAliveTimeout)
            }
        case .attaching, .closed:
            break
        }
    }

    // MARK: Writing

    func send(_ packet: MQTTPacket) {
        sendRaw(packet, version: version)
    }

    private func sendRaw(_ packet: MQTTPacket, version: ProtocolVersion) {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: packet.encodedLength(version: version))
        do {
            try packet.write(to: &buffer, version: version)
        } catch {
            log(.error, "cannot encode \(packet.type)", metadata: ["error": "\(error)"])
            return
        }
        bytesOut += buffer.readableBytes
        context.write(wrapOutboundOut(buffer), promise: nil)
        needsFlush = true
    }

    func write(_ buffer: ByteBuffer) {
        bytesOut += buffer.readableBytes
        context?.write(wrapOutboundOut(buffer), promise: nil)
        needsFlush = true
    }

    /// Returns true when the router should add this connection to its flush list.
    func markDirty() -> Bool {
        needsFlush = true
        if inRouterFlushList { return false }
        inRouterFlushList = true
        return true
    }

    func flushIfDirty() {
        inRouterFlushList = false
        guard needsFlush else { return }
        needsFlush = false
        context?.flush()
    }

    // MARK: Closing

    func close(reason: CloseReason) {
        close(reason: reason, notifyRouter: true)
    }

    private func close(reason: CloseReason, notifyRouter: Bool) {
        let previous = state
        guard let context else { return }
        if case .closed = previous { return }
        state = .closed
        switch reason {
        case .protocolError(let code, let why):
            log(.info, "closing connection", metadata: ["reason": "\(code)", "detail": "\(why)"])
        default:
            log(.debug, "closing connection", metadata: ["reason": "\(reason)"])
        }
        let counter: WritableKeyPath<BrokerCounters.Snapshot, Int>? = switch reason {
        case .protocolError: \.protocolErrors
        case .keepAliveTimeout: \.keepaliveExpiries
        case .connectTimeout: \.connectTimeouts
        case .writeTimeout: \.writeTimeouts
        case .sessionTakenOver, .serverShuttingDown, .slowConsumer: nil
        }
        if let counter { router.assumeIsolated { $0.count(counter) } }
        if case .connected(let c) = previous, c.version == .v5, let code = reason.reasonCode {
            // The server tells a v5 client why before closing (MQTT 5 4.13).
            sendRaw(.disconnect(DisconnectPacket(reasonCode: code)), version: .v5)
        }
        flushIfDirty()
        if notifyRouter {
            let connectionID = self.connectionID
            switch previous {
            case .connected(let c), .attaching(let c):
                router.assumeIsolated { $0.connectionLost(clientID: c.clientID, connectionID: connectionID, will: c.will, willDelay: c.willDelay) }
            default:
                break
            }
        }
        context.close(promise: nil)
    }
}

/// A connection handler as accepted connections get it, for the routing microbenchmarks'
/// probe (MartletBenchSupport), which wires clients to a router without sockets.
package func makeConnectionHandler(router: Router, settings: ConnectionSettings, logger: Logger) -> any ChannelHandler {
    MQTTConnectionHandler(router: router, settings: settings, logger: logger)
}
