import MartletMQTT
import NIOCore
import Synchronization

/// The client side of one MQTT connection, on its event loop: frames packets, matches
/// acknowledgements to waiting calls, answers the broker's QoS flows and sends PINGREQ.
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let version: ProtocolVersion
    private var framer: MQTTPacketFramer
    private var context: ChannelHandlerContext?
    private var connack: EventLoopPromise<ConnAckPacket>?
    /// Calls waiting for PUBACK / PUBCOMP / SUBACK / UNSUBACK, by packet id, with the packet
    /// they sent (to resend it after a reconnect).
    private var waiting: [UInt16: PendingRequest] = [:]
    /// With automatic reconnect: called on close with the requests still waiting, instead of
    /// failing them, so the next connection can resend them.
    var onClose: (@Sendable ([PendingRequest]) -> Void)?
    private var nextPacketID: UInt16 = 1
    /// QoS 2 messages received and not yet released (MQTT-4.3.3).
    private var inboundQoS2: Set<UInt16> = []
    /// Manual acknowledgement: QoS 2 messages delivered whose PUBREC waits for the application.
    private var unacknowledgedQoS2: Set<UInt16> = []
    private let manualAcknowledgement: Bool
    /// Tells this connection's messages from a later connection's (acknowledgements go only
    /// to the connection that received the message).
    let connectionNumber: Int
    private static let numbers = Atomic<Int>(0)
    private let deliver: @Sendable (ReceivedMessage) -> Void
    private let keepAlive: TimeAmount?
    private var pingTask: Scheduled<Void>?
    private var lastPingResponse = NIODeadline.now()
    private var closed = false
    /// The first error seen (a failed TLS handshake, say), reported to calls that come later.
    private var failure: (any Error)?

    init(version: ProtocolVersion, keepAlive: UInt16, manualAcknowledgement: Bool = false, deliver: @escaping @Sendable (ReceivedMessage) -> Void) {
        self.version = version
        self.manualAcknowledgement = manualAcknowledgement
        self.connectionNumber = Self.numbers.add(1, ordering: .relaxed).newValue
        self.framer = MQTTPacketFramer(decoder: MQTTPacketDecoder(version: version))
        self.keepAlive = keepAlive == 0 ? nil : .seconds(Int64(keepAlive))
        self.deliver = deliver
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// Breaks the handler ↔ context cycle once the channel is gone.
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func start(connect: ConnectPacket, promise: EventLoopPromise<ConnAckPacket>) {
        guard !closed else {
            // The connection already failed (e.g. the TLS handshake): say why at once.
            promise.fail(failure ?? MQTTClientError.connectionClosed)
            return
        }
        connack = promise
        sendAndFlush(.connect(connect))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try framer.process(unwrapInboundIn(data), allocator: context.channel.allocator) { packet in
                handle(packet)
                return !closed
            }
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
        context.flush()
    }

    private func handle(_ packet: MQTTPacket) {
        switch packet {
        case .connack(let ack):
            if ack.reasonCode == .success { startKeepalive() }
            connack?.succeed(ack)
            connack = nil
        case .publish(let p):
            switch p.delivery {
            case .atMostOnce:
                deliver(received(p))
            case .atLeastOnce(let id):
                deliver(received(p, id: id))
                if !manualAcknowledgement { send(.puback(PubAckPacket(packetIdentifier: id))) }
            case .exactlyOnce(let id):
                if inboundQoS2.insert(id).inserted {
                    deliver(received(p, id: id))
                    if manualAcknowledgement {
                        unacknowledgedQoS2.insert(id)
                        return
                    }
                } else if unacknowledgedQoS2.contains(id) {
                    return  // sent again before the application was done: PUBREC still waits
                }
                send(.pubrec(PubRecPacket(packetIdentifier: id)))
            }
        case .pubrel(let rel):
            inboundQoS2.remove(rel.packetIdentifier)
            send(.pubcomp(PubCompPacket(packetIdentifier: rel.packetIdentifier)))
        case .pubrec(let rec):
            if rec.reasonCode.isFailure {
                waiting.removeValue(forKey: rec.packetIdentifier)?.promise.succeed(packet)
            } else {
                waiting[rec.packetIdentifier]?.released = true
                send(.pubrel(PubRelPacket(packetIdentifier: rec.packetIdentifier)))
            }
        case .puback(let a): waiting.removeValue(forKey: a.packetIdentifier)?.promise.succeed(packet)
        case .pubcomp(let c): waiting.removeValue(forKey: c.packetIdentifier)?.promise.succeed(packet)
        case .suback(let s): waiting.removeValue(forKey: s.packetIdentifier)?.promise.succeed(packet)
        case .unsuback(let u): waiting.removeValue(forKey: u.packetIdentifier)?.promise.succeed(packet)
        case .pingresp: lastPingResponse = .now()
        case .disconnect:
            context?.close(promise: nil)
        default:
            context?.fireErrorCaught(MQTTClientError.protocolError("unexpected \(packet.type) from the broker"))
            context?.close(promise: nil)
        }
    }

    private func received(_ p: PublishPacket, id: UInt16? = nil) -> ReceivedMessage {
        ReceivedMessage(
            topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain, properties: p.properties,
            acknowledgement: manualAcknowledgement ? id.map { .init(packetIdentifier: $0, qos: p.qos, connection: connectionNumber) } : nil)
    }

    /// Manual acknowledgement: the application is done with a message this connection received.
    func acknowledge(_ ack: ReceivedMessage.Acknowledgement, flush: Bool = true) {
        guard ack.connection == connectionNumber else { return }
        if ack.qos == .exactlyOnce {
            guard unacknowledgedQoS2.remove(ack.packetIdentifier) != nil else { return }
            send(.pubrec(PubRecPacket(packetIdentifier: ack.packetIdentifier)))
        } else {
            send(.puback(PubAckPacket(packetIdentifier: ack.packetIdentifier)))
        }
        if flush { context?.flush() }
    }

    /// Sends a packet that carries a new packet id and completes when its acknowledgement arrives.
    var isOpen: Bool { !closed }

    func request(_ make: (UInt16) -> MQTTPacket, promise: EventLoopPromise<MQTTPacket>, flush: Bool = true) {
        guard !closed else {
            promise.fail(MQTTClientError.connectionClosed)
            return
        }
        var id = nextPacketID
        while waiting[id] != nil { id = id == .max ? 1 : id + 1 }
        nextPacketID = id == .max ? 1 : id + 1
        let packet = make(id)
        waiting[id] = PendingRequest(packetIdentifier: id, packet: packet, promise: promise)
        send(packet)
        if flush { context?.flush() }
    }

    private var flushScheduled = false

    /// One flush after whatever else this loop turn writes.
    func flushSoon() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            self.context?.flush()
        }
    }

    /// After a reconnect: sends again what the previous connection left unacknowledged, with
    /// the same packet ids. With the session kept, a PUBLISH goes with DUP and a QoS 2 flow
    /// that had its PUBREC continues with PUBREL (MQTT-4.4.0-1); without it, everything is
    /// sent again as new.
    func resend(_ requests: [PendingRequest], sessionPresent: Bool) {
        guard !closed else {
            // Lost again before the resend: carry them to the next connection.
            if let onClose { onClose(requests) } else { for r in requests { r.promise.fail(MQTTClientError.connectionClosed) } }
            return
        }
        for var request in requests.sorted(by: { $0.packetIdentifier < $1.packetIdentifier }) {
            if sessionPresent && request.released {
                send(.pubrel(PubRelPacket(packetIdentifier: request.packetIdentifier)))
            } else {
                if case .publish(var p) = request.packet, sessionPresent { p.dup = true; request.packet = .publish(p) }
                request.released = false
                send(request.packet)
            }
            waiting[request.packetIdentifier] = request
        }
        context?.flush()
    }

    func send(_ packet: MQTTPacket) {
        guard let context, !closed else { return }
        var buffer = context.channel.allocator.buffer(capacity: packet.encodedLength(version: version))
        do {
            try packet.write(to: &buffer, version: version)
        } catch {
            context.fireErrorCaught(error)
            return
        }
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    func sendAndFlush(_ packet: MQTTPacket) {
        send(packet)
        context?.flush()
    }

    /// PINGREQ every keepalive interval; no PINGRESP for two intervals means the broker is gone.
    private func startKeepalive() {
        lastPingResponse = .now()
        schedulePing()
    }

    private func schedulePing() {
        guard let keepAlive, let context, !closed else { return }
        pingTask = context.eventLoop.assumeIsolated().scheduleTask(in: keepAlive) { [weak self] in
            guard let self, !self.closed else { return }
            if NIODeadline.now() - self.lastPingResponse > keepAlive + keepAlive {
                self.context?.fireErrorCaught(MQTTClientError.timeout("PINGRESP"))
                self.context?.close(promise: nil)
                return
            }
            self.sendAndFlush(.pingreq)
            self.schedulePing()
        }
    }

    /// Told when the socket takes writes again.
    var onWritable: (@Sendable () -> Void)?

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { onWritable?() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        pingTask?.cancel()
        connack?.fail(MQTTClientError.connectionClosed)
        connack = nil
        let pending = Array(waiting.values)
        waiting = [:]
        if let onClose {
            onClose(pending)
        } else {
            for p in pending { p.promise.fail(MQTTClientError.connectionClosed) }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if failure == nil { failure = error }
        connack?.fail(error)
        connack = nil
        context.close(promise: nil)
    }
}

/// A packet sent and not yet acknowledged, with the call waiting for its acknowledgement.
struct PendingRequest: Sendable {
    var packetIdentifier: UInt16
    var packet: MQTTPacket
    var promise: EventLoopPromise<MQTTPacket>
    /// QoS 2: PUBREC arrived and PUBREL was sent.
    var released = false
}
