import NIOCore

/// Events the handler sends down the pipeline.
public enum TLSEvent: Sendable, Equatable {
    /// The handshake finished; carries the ALPN protocol agreed, if any.
    case handshakeCompleted(applicationProtocol: String?)
}

/// TLS over OpenSSL for one channel, server or client side.
///
/// Ciphertext from the socket goes to OpenSSL through the connection's BIO; plaintext comes out
/// and goes up the pipeline. Writes made during the handshake wait and are flushed after
/// it. Closing sends close_notify and waits (bounded by `shutdownTimeout`; zero means not at
/// all) for the peer's. A peer that drops TCP
/// without close_notify is reported as `TLSError.uncleanShutdown`.
public final class TLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        case handshaking(timeout: Scheduled<Void>?)
        case active
        /// close_notify sent; waiting for the peer's, or the timeout, then the socket closes.
        case closing(timeout: Scheduled<Void>?, promise: EventLoopPromise<Void>?)
        case closed
    }

    private let tlsContext: TLSContext
    private let serverName: String?
    private let handshakeTimeout: TimeAmount
    private let shutdownTimeout: TimeAmount
    private var connection: TLSConnection?
    private var state = State.idle
    private var pendingWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var pendingFlush = false
    /// Plaintext went up since the last channelReadComplete.
    private var readSinceComplete = false

    /// The verified client (or server) certificate, once the handshake is done.
    public private(set) var peerCertificate: PeerCertificate?
    public private(set) var applicationProtocol: String?
    public private(set) var protocolVersion: String?
    public private(set) var sessionReused = false
    /// The negotiated cipher suite, read when asked (nothing stored per connection).
    public var cipherName: String? {
        guard case .active = state else { return nil }
        return connection?.cipherName
    }
    /// Bytes of ciphertext buffer the connection holds between reads and writes (what an
    /// idle connection keeps of earlier traffic: nothing).
    public var bufferedCapacity: Int { connection?.bufferedCapacity ?? 0 }

    public init(context: TLSContext, serverName: String? = nil, handshakeTimeout: TimeAmount = .seconds(10), shutdownTimeout: TimeAmount = .seconds(3)) {
        self.tlsContext = context
        self.serverName = serverName ?? context.configuration.serverName
        self.handshakeTimeout = handshakeTimeout
        self.shutdownTimeout = shutdownTimeout
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        do {
            connection = try TLSConnection(context: tlsContext, serverName: serverName)
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        if context.channel.isActive { startHandshake(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        startHandshake(context: context)
        context.fireChannelActive()
    }

    private func startHandshake(context: ChannelHandlerContext) {
        guard case .idle = state, connection != nil else { return }
        let timeout = context.eventLoop.assumeIsolated().scheduleTask(in: handshakeTimeout) { [weak self] in
            guard let self, case .handshaking = self.state else { return }
            self.fail(.handshakeTimeout, context: context)
        }
        state = .handshaking(timeout: timeout)
        advanceHandshake(context: context)
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let connection else { return }
        connection.receive(unwrapInboundIn(data))
        switch state {
        case .handshaking:
            advanceHandshake(context: context)
        case .active, .closing:
            readPlaintext(context: context)
        case .idle, .closed:
            break
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        // Only a burst that produced plaintext is a read burst for the handlers above.
        guard readSinceComplete else { return }
        readSinceComplete = false
        context.fireChannelReadComplete()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        let previous = state
        state = .closed
        switch previous {
        case .handshaking(let timeout):
            timeout?.cancel()
            context.fireErrorCaught(TLSError.handshakeFailed("connection closed during the handshake"))
        case .active:
            // TCP EOF without close_notify: OpenSSL's BIO never sees the socket, so we say it.
            context.fireErrorCaught(TLSError.uncleanShutdown)
        case .closing(let timeout, let promise):
            timeout?.cancel()
            promise?.succeed()
        case .idle, .closed:
            break
        }
        failPendingWrites(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    private func advanceHandshake(context: ChannelHandlerContext) {
        guard let connection, case .handshaking(let timeout) = state else { return }
        let result = connection.handshake()
        writeOutput(context: context, promise: nil, flush: true)
        switch result {
        case .incomplete:
            return
        case .failed(let error):
            fail(error, context: context)
        case .complete:
            timeout?.cancel()
            state = .active
            peerCertificate = connection.peerCertificate
            applicationProtocol = connection.negotiatedApplicationProtocol
            protocolVersion = connection.negotiatedVersion
            sessionReused = connection.sessionReused
            context.fireUserInboundEventTriggered(TLSEvent.handshakeCompleted(applicationProtocol: applicationProtocol))
            let writes = pendingWrites
            pendingWrites = []
            for (buffer, promise) in writes { encrypt(buffer, promise: promise, context: context) }
            if pendingFlush || !writes.isEmpty {
                pendingFlush = false
                context.flush()
            }
            // Application data may have arrived with the last handshake flight.
            readPlaintext(context: context)
        }
    }

    /// Decrypts everything available into one buffer (allocated once per read burst, not
    /// kept afterwards) and passes it up as a single read.
    private func readPlaintext(context: ChannelHandlerContext) {
        guard let connection else { return }
        var buffer = context.channel.allocator.buffer(capacity: 0)
        var failure: TLSError?
        reading: while true {
            switch connection.read(into: &buffer) {
            case .complete: continue
            case .incomplete: break reading
            case .failed(let error):
                failure = error
                break reading
            }
        }
        // Reading can make OpenSSL answer by itself with no application data in between: the
        // no_renegotiation alert to a TLS 1.2 renegotiation request, a TLS 1.3 KeyUpdate or
        // tickets. Sent now: the peer may be waiting for it and nothing else would flush it.
        writeOutput(context: context, promise: nil, flush: true)
        if buffer.readableBytes > 0 {
            // One read per socket read; the read burst ends with the socket's own
            // channelReadComplete (below), so the handlers above flush once per burst, as on
            // a plain connection, not once per socket read.
            context.fireChannelRead(wrapInboundOut(buffer))
            readSinceComplete = true
        }
        if let failure {
            if connection.receivedCloseNotify {
                peerClosed(context: context)
            } else {
                fail(failure, context: context)
            }
        }
    }

    /// The peer sent close_notify: answer with ours and close the socket.
    private func peerClosed(context: ChannelHandlerContext) {
        switch state {
        case .closing(let timeout, let promise):
            timeout?.cancel()
            state = .closed
            context.close(promise: promise)
        case .active:
            _ = connection?.shutdown()
            writeOutput(context: context, promise: nil, flush: true)
            state = .closed
            context.close(promise: nil)
        default:
            break
        }
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        switch state {
        case .idle, .handshaking:
            pendingWrites.append((buffer, promise))
        case .active:
            encrypt(buffer, promise: promise, context: context)
        case .closing, .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    public func flush(context: ChannelHandlerContext) {
        switch state {
        case .idle, .handshaking:
            pendingFlush = true
        default:
            context.flush()
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all else {
            context.close(mode: mode, promise: promise)
            return
        }
        switch state {
        case .active:
            guard let connection else { return }
            _ = connection.shutdown()
            writeOutput(context: context, promise: nil, flush: true)
            if shutdownTimeout <= .zero {
                // Do not wait for the peer's close_notify (what a server usually wants).
                state = .closed
                context.close(promise: promise)
                return
            }
            let timeout = context.eventLoop.assumeIsolated().scheduleTask(in: shutdownTimeout) { [weak self] in
                guard let self, case .closing(_, let promise) = self.state else { return }
                self.state = .closed
                context.close(promise: promise)
            }
            state = .closing(timeout: timeout, promise: promise)
        case .closing(let timeout, let existing):
            // A second close: chain it to the first.
            if let promise {
                if let existing { existing.futureResult.cascade(to: promise) } else { state = .closing(timeout: timeout, promise: promise) }
            }
        case .idle, .handshaking(_):
            if case .handshaking(let timeout) = state { timeout?.cancel() }
            state = .closed
            failPendingWrites(ChannelError.ioOnClosedChannel)
            context.close(promise: promise)
        case .closed:
            context.close(promise: promise)
        }
    }

    private func encrypt(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard let connection else { return }
        switch connection.write(buffer) {
        case .complete, .incomplete:
            writeOutput(context: context, promise: promise, flush: false)
        case .failed(let error):
            promise?.fail(error)
            fail(error, context: context)
        }
    }

    /// Moves ciphertext from OpenSSL to the socket.
    private func writeOutput(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?, flush: Bool) {
        if let output = connection?.takeOutput() {
            context.write(wrapOutboundOut(output), promise: promise)
            if flush { context.flush() }
        } else {
            promise?.succeed()
        }
    }

    private func fail(_ error: TLSError, context: ChannelHandlerContext) {
        if case .handshaking(let timeout) = state { timeout?.cancel() }
        state = .closed
        failPendingWrites(error)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    private func failPendingWrites(_ error: any Error) {
        let writes = pendingWrites
        pendingWrites = []
        for (_, promise) in writes { promise?.fail(error) }
    }
}

@available(*, unavailable)
extension TLSHandler: Sendable {}
