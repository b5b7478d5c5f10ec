import Logging
import MartletAuth
import MartletMQTT
import MartletTLS
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// One client connection's I/O: framing, reading on demand, writing and flushing, and
/// running what its `ConnectionStateMachine` decides. It keeps no protocol state of its own.
/// Session state (QoS flows, subscriptions, the outbox) lives in the loop's `Router`, which
/// this handler calls synchronously and which sees it only as a `RoutedConnection`.
final class MQTTConnectionHandler: ChannelDuplexHandler, RoutedConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let router: Router
    /// The broker's logger; this connection's address and client id are added when a line is
    /// logged (see `log`), so an idle connection holds no metadata of its own.
    private let baseLogger: Logger
    private var machine: ConnectionStateMachine
    private var framer: MQTTPacketFramer
    private var context: ChannelHandlerContext?
    private(set) var connectionID = 0
    /// Bytes were written and not flushed yet.
    private var needsFlush = false
    /// The router holds this connection in its list of connections to flush.
    private var inRouterFlushList = false
    /// Bytes in and out since the router last collected them.
    private var bytesIn = 0
    private var bytesOut = 0
    /// The client's address as a PROXY header gave it (`proxy_protocol` listeners).
    private var proxiedSource: SocketAddress?
    /// Wall-clock seconds when it was accepted (the admin API's "connected since").
    private let acceptedAt = Int(time(nil))
    /// Counts this connection out when it leaves the pipeline (nil: counted out elsewhere).
    private var countedOut: ConnectionGauge?

    init(router: Router, settings: ConnectionSettings, refusal: Refusal? = nil, logger: Logger, clientAddress: SocketAddress? = nil,
         countedOut: ConnectionGauge? = nil) {
        self.proxiedSource = clientAddress
        self.countedOut = countedOut
        self.router = router
        self.baseLogger = logger
        self.machine = ConnectionStateMachine(settings: settings, refusal: refusal, now: router.eventLoop.now)
        self.framer = MQTTPacketFramer(decoder: MQTTPacketDecoder(maximumPacketSize: settings.configuration.maximumPacketSize))
    }

    private func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata = [:]) {
        guard baseLogger.logLevel <= level else { return }
        var logger = baseLogger
        if let remote = proxiedSource ?? context?.channel.remoteAddress { logger[metadataKey: "remote"] = "\(remote)" }
        if let id = machine.clientID { logger[metadataKey: "client_id"] = "\(id)" }
        logger.log(level: level, message(), metadata: metadata())
    }

    private var now: NIODeadline { router.eventLoop.now }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // Added after the channel became active (a WebSocket upgrade): it starts now.
        if context.channel.isActive { activate(context) }
    }

    private var activated = false

    private func activate(_ context: ChannelHandlerContext) {
        guard !activated else { return }
        activated = true
        machine.channelActive(now: now)
        // Added after the TLS handshake (wss: after the upgrade): its certificate is there now.
        if context.channel.isActive { takeCertificateIdentity(context) }
        let handler = bound(context)
        connectionID = router.onLoop(handler) { $0.register($1) }
    }

    /// The context holds this handler and this handler held the context: without letting go
    /// here, both (and what they reference) outlived every closed connection.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        countedOut?.closed()
        countedOut = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if machine.holdingPackets {
            // Closed under us (a TLS close_notify, an error): what was held is routed now,
            // past the lagging subscriber's limits if need be (its drops are counted).
            machine.releaseHeldPackets()
            decode(ByteBuffer(), allocator: context.channel.allocator)
            router.onLoop { $0.flush() }
        }
        let lost = machine.channelInactive()
        let connectionID = self.connectionID
        router.onLoop((lost, connectionID)) { router, gone in
            router.unregister(gone.1)
            if let lost = gone.0 { router.connectionLost(lost, connectionID: gone.1) }
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if machine.isClosed { return }
        machine.bytesReceived(now: now)
        let bytes = unwrapInboundIn(data)
        bytesIn += bytes.readableBytes
        if machine.holdingPackets {
            framer.hold(bytes, allocator: context.channel.allocator)
            return
        }
        decode(bytes, allocator: context.channel.allocator)
    }

    private func decode(_ bytes: ByteBuffer, allocator: ByteBufferAllocator) {
        do {
            try framer.process(bytes, allocator: allocator) { packet in
                run(machine.packetReceived(packet))
                return !machine.isClosed && !machine.holdingPackets
            }
        } catch let error as MQTTCodecError {
            run(machine.decodeFailed(error))
        } catch {
            if let closing = machine.close(.protocolError(.malformedPacket, "\(error)")) { finish(closing) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        endOfBurst(context: context)
        context.fireChannelReadComplete()
    }

    /// After a read burst (or packets held by flow control were decoded): flush what the
    /// burst wrote and decide whether this publisher is read again.
    private func endOfBurst(context: ChannelHandlerContext) {
        router.onLoop { $0.flush() }
        flushIfDirty()
        let traffic = takeTraffic()
        if traffic.received + traffic.sent > 0 { router.onLoop(traffic) { $0.addTraffic(received: $1.received, sent: $1.sent) } }
        let router = self.router
        if machine.readBurstEnded(writable: context.channel.isWritable, shouldPause: { router.onLoop { $0.inboundShouldPause } }) {
            router.onLoop(bound(context)) { $0.paused($1) }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let change = machine.writabilityChanged(writable: context.channel.isWritable, now: now)
        if !context.channel.isWritable {
            // The write-stall deadline may come before the one it was watched for.
            router.onLoop(connectionID) { $0.timersChanged($1) }
        }
        if change.read { context.read() }
        if change.drainSession, let clientID = machine.clientID {
            // Not re-entrantly: this can fire in the middle of a router flush.
            let connectionID = self.connectionID
            let router = self.router
            context.eventLoop.execute {
                router.assumeIsolated { $0.becameWritable(clientID: clientID, connectionID: connectionID) }
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if machine.readWanted() { context.read() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let proxied = event as? ProxiedConnection {
            proxiedSource = proxied.header.source
            log(.debug, "PROXY header", metadata: [
                "proxy": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")",
                "authority": "\(proxied.header.authority ?? "")", "client_cn": "\(proxied.header.clientCommonName ?? "")",
                "client_cert_verified": "\(proxied.header.clientCertificateVerified)",
            ])
            // Behind a proxy that terminated TLS, its verified client certificate is the identity.
            if machine.listener.useIdentityAsUsername && machine.listener.tls == nil {
                machine.certificateVerified(identity: proxied.header.verifiedClientCommonName)
            }
            return
        }
        if case .inputClosed = event as? ChannelEvent {
            // EOF. Packets held by flow control are still routed, as the subscriber drains.
            if machine.inputEnded() { context.close(promise: nil) }
            return
        }
        if case .handshakeCompleted = event as? TLSEvent {
            router.onLoop { $0.count(\.tlsHandshakes) }
            takeCertificateIdentity(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// `use_identity_as_username` on a TLS listener: the verified client certificate's CN (or
    /// first SAN), once the handshake has given one.
    private func takeCertificateIdentity(_ context: ChannelHandlerContext) {
        guard machine.listener.useIdentityAsUsername, machine.listener.tls != nil,
              let tls = try? context.pipeline.syncOperations.handler(type: TLSHandler.self),
              let certificate = tls.peerCertificate else { return }
        machine.certificateVerified(identity: certificate.subjectCommonName ?? certificate.subjectAlternativeNames.first)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is TLSError { router.onLoop { $0.count(\.tlsHandshakeFailures) } }
        log(.debug, "connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func bound(_ context: ChannelHandlerContext) -> ConnectionRef {
        NIOLoopBound(self, eventLoop: context.eventLoop)
    }

    // MARK: Running the state machine's actions

    private func run(_ action: ConnectionStateMachine.Action) {
        switch action {
        case .none:
            break
        case .send(let packet):
            send(packet, version: machine.version)
        case .authenticate(let username, let password, let allowAnonymous, let identityIsUsername):
            let step = router.onLoop((username, password, allowAnonymous, identityIsUsername)) {
                $0.authenticate(username: $1.0, password: $1.1, allowAnonymous: $1.2, identityIsUsername: $1.3)
            }
            switch step {
            case .done(let outcome):
                run(machine.authenticated(outcome))
            case .verify(let authenticator):
                verifyOffLoop(username: username ?? "", password: password ?? [], authenticator)
            }
        case .authorizeWill(let topic, let username, let clientID):
            let allowed = router.onLoop((topic, username, clientID)) { $0.mayWrite($1.0, username: $1.1, clientID: $1.2) }
            run(machine.willAuthorized(allowed))
        case .attach(let request):
            guard let context else { return }
            router.onLoop((request, bound(context))) { $0.connect($1.0, handler: $1.1) }
        case .route(let publish, let clientID):
            let verdict = router.onLoop((publish, clientID, connectionID)) { $0.received($1.0, clientID: $1.1, connectionID: $1.2) }
            apply(machine.routed(verdict), clientID: clientID)
        case .forward(let packet, let clientID):
            let answer = router.onLoop((packet, clientID, connectionID)) { $0.received($1.0, clientID: $1.1, connectionID: $1.2) }
            apply(machine.answered(answer), clientID: clientID)
        case .close(let closing):
            finish(closing)
        }
    }

    private func apply(_ reply: ConnectionStateMachine.Reply, clientID: String) {
        if let closing = reply.close {
            finish(closing)
            return
        }
        if let packet = reply.packet { send(packet, version: machine.version) }
        if reply.holdPublisher, let context {
            // Stop right after this packet: the rest of the read waits in the framer.
            router.onLoop(bound(context)) { $0.paused($1) }
        }
        if reply.sendRetained {
            router.onLoop((clientID, connectionID)) { $0.sendRetained(clientID: $1.0, connectionID: $1.1) }
        }
    }

    /// Derives the password's key on NIO's thread pool (PBKDF2 takes milliseconds, which
    /// would stall every connection of this loop), then goes on with CONNECT here.
    private func verifyOffLoop(username: String, password: [UInt8], _ authenticator: Authenticator) {
        guard let context else { return }
        let pending = router.core.counters
        pending.authenticating.add(1, ordering: .relaxed)
        NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) {
            authenticator.verify(username: username, password: password)
        }.assumeIsolated().whenComplete { [self] result in
            pending.authenticating.subtract(1, ordering: .relaxed)
            // Closed meanwhile (connect timeout, peer gone): nothing to continue.
            guard machine.isAuthenticating else { return }
            switch result {
            case .success(let outcome):
                router.onLoop((outcome, username)) { $0.authenticated($1.0, username: $1.1) }
                run(machine.authenticated(outcome))
            case .failure(let error):
                run(machine.authenticationFailed("\(error)"))
            }
            router.onLoop { $0.flush() }
            flushIfDirty()
        }
    }

    /// Closes as the state machine decided: counted, logged, the farewell packet sent, the
    /// router told the session's connection is gone.
    private func finish(_ closing: ConnectionStateMachine.Closing) {
        guard let context else { return }
        switch closing.reason {
        case .protocolError(let code, let why):
            log(.info, "closing connection", metadata: ["reason": "\(code)", "detail": "\(why)"])
        case .refused(let why):
            log(.info, "connection refused", metadata: ["reason": "\(why)"])
        case .keepAliveTimeout:
            log(.info, "keepalive expired")
        case .writeTimeout:
            log(.info, "write timeout: the socket stayed unwritable")
        default:
            log(.debug, "closing connection", metadata: ["reason": "\(closing.reason)"])
        }
        if let counter = closing.reason.counter { router.onLoop(counter) { $0.count($1) } }
        if let farewell = closing.farewell { send(farewell, version: closing.version) }
        flushIfDirty()
        if let lost = closing.lost {
            router.onLoop((lost, connectionID)) { $0.connectionLost($1.0, connectionID: $1.1) }
        }
        context.close(promise: nil)
    }

    // MARK: Called by the router

    var isAwaitingSession: Bool { machine.isAwaitingSession }
    var nextTimerDeadline: NIODeadline? { machine.nextTimerDeadline }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    var details: ConnectionDetails {
        let listener = machine.listener
        let secure = listener.tls != nil
        return ConnectionDetails(
            remoteAddress: (proxiedSource ?? context?.channel.remoteAddress)?.adminDescription,
            listener: "\(listener.host):\(listener.port)",
            transport: listener.webSocket ? (secure ? "wss" : "ws") : (secure ? "tls" : "tcp"),
            connectedAt: acceptedAt, keepAlive: machine.keepAliveSeconds,
            tlsVersion: secure ? tls?.protocolVersion : nil, tlsCipher: secure ? tls?.cipherName : nil)
    }

    /// This connection's TLS handler, looked up when the admin API asks.
    private var tls: TLSHandler? {
        guard let context else { return nil }
        return try? context.pipeline.syncOperations.handler(type: TLSHandler.self)
    }

    func sessionRefused() {
        run(machine.sessionRefused())
    }

    func sessionUnavailable() {
        run(machine.sessionUnavailable())
    }

    func sessionAttached(sessionPresent: Bool) {
        log(.debug, "client connected", metadata: ["session_present": "\(sessionPresent)"])
        run(machine.sessionAttached(sessionPresent: sessionPresent))
        // Its keepalive may fall before the connect timeout it was watched for.
        router.onLoop(connectionID) { $0.timersChanged($1) }
    }

    func replayBufferedPackets() {
        for packet in machine.takeBufferedPackets() { run(machine.packetReceived(packet)) }
    }

    func takeOver() -> (will: Message, delay: UInt32)? {
        let (closing, will) = machine.takenOver()
        if let closing { finish(closing) }
        return will
    }

    func close(reason: CloseReason) {
        if let closing = machine.close(reason) { finish(closing) }
    }

    func checkTimers(now: NIODeadline) {
        if let closing = machine.timerTick(now: now) { finish(closing) }
    }

    /// Inbound flow control lifted the pause: held packets are decoded first.
    func resumeInbound() {
        guard let context else { return }
        var resumption = machine.resumed(now: now)
        if resumption.decodeHeld {
            decode(ByteBuffer(), allocator: context.channel.allocator)
            endOfBurst(context: context)
            resumption = machine.heldPacketsDecoded(now: now)
        }
        if resumption.close {
            context.close(promise: nil)
        } else if resumption.read {
            context.read()
        }
    }

    func takeTraffic() -> (received: Int, sent: Int) {
        defer {
            bytesIn = 0
            bytesOut = 0
        }
        return (bytesIn, bytesOut)
    }

    // MARK: Writing

    private func send(_ packet: MQTTPacket, version: ProtocolVersion) {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: packet.encodedLength(version: version))
        do {
            try packet.write(to: &buffer, version: version)
        } catch {
            log(.error, "cannot encode \(packet.type)", metadata: ["error": "\(error)"])
            return
        }
        write(buffer)
    }

    func write(_ buffer: ByteBuffer) {
        bytesOut += buffer.readableBytes
        context?.write(wrapOutboundOut(buffer), promise: nil)
        needsFlush = true
    }

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
}

/// A connection handler as accepted connections get it, for the routing microbenchmarks'
/// probe (MartletBenchSupport), which wires clients to a router without sockets.
package func makeConnectionHandler(router: Router, settings: ConnectionSettings, logger: Logger) -> any ChannelHandler {
    MQTTConnectionHandler(router: router, settings: settings, logger: logger)
}
