import MartletMQTT
import NIOCore

/// The client side of one MQTT connection, on its event loop: frames packets, matches
/// acknowledgements to waiting calls, answers the broker's QoS flows and sends PINGREQ.
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let version: ProtocolVersion
    private var framer: MQTTPacketFramer
    private var context: ChannelHandlerContext?
    private var connack: EventLoopPromise<ConnAckPacket>?
    /// Calls waiting for PUBACK / PUBCOMP / SUBACK / UNSUBACK, by packet id.
    private var waiting: [UInt16: EventLoopPromise<MQTTPacket>] = [:]
    private var nextPacketID: UInt16 = 1
    /// QoS 2 messages received and not yet released (MQTT-4.3.3).
    private var inboundQoS2: Set<UInt16> = []
    private let deliver: @Sendable (ReceivedMessage) -> Void
    private let keepAlive: TimeAmount?
    private var pingTask: Scheduled<Void>?
    private var lastPingResponse = NIODeadline.now()
    private var closed = false
    /// The first error seen (a failed TLS handshake, say), reported to calls that come later.
    private var failure: (any Error)?

    init(version: ProtocolVersion, keepAlive: UInt16, deliver: @escaping @Sendable (ReceivedMessage) -> Void) {
        self.version = version
        self.framer = MQTTPacketFramer(decoder: MQTTPacketDecoder(version: version))
        self.keepAlive = keepAlive == 0 ? nil : .seconds(Int64(keepAlive))
        self.deliver = deliver
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

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
            switch p.qos {
            case .atMostOnce:
                deliver(received(p))
            case .atLeastOnce:
                deliver(received(p))
                send(.puback(PubAckPacket(packetIdentifier: p.packetIdentifier!)))
            case .exactlyOnce:
                if inboundQoS2.insert(p.packetIdentifier!).inserted { deliver(received(p)) }
                send(.pubrec(PubRecPacket(packetIdentifier: p.packetIdentifier!)))
            }
        case .pubrel(let rel):
            inboundQoS2.remove(rel.packetIdentifier)
            send(.pubcomp(PubCompPacket(packetIdentifier: rel.packetIdentifier)))
        case .pubrec(let rec):
            if rec.reasonCode.isFailure {
                waiting.removeValue(forKey: rec.packetIdentifier)?.succeed(packet)
            } else {
                send(.pubrel(PubRelPacket(packetIdentifier: rec.packetIdentifier)))
            }
        case .puback(let a): waiting.removeValue(forKey: a.packetIdentifier)?.succeed(packet)
        case .pubcomp(let c): waiting.removeValue(forKey: c.packetIdentifier)?.succeed(packet)
        case .suback(let s): waiting.removeValue(forKey: s.packetIdentifier)?.succeed(packet)
        case .unsuback(let u): waiting.removeValue(forKey: u.packetIdentifier)?.succeed(packet)
        case .pingresp: lastPingResponse = .now()
        case .disconnect:
            context?.close(promise: nil)
        default:
            context?.fireErrorCaught(MQTTClientError.protocolError("unexpected \(packet.type) from the broker"))
            context?.close(promise: nil)
        }
    }

    private func received(_ p: PublishPacket) -> ReceivedMessage {
        ReceivedMessage(topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain, properties: p.properties)
    }

    /// Sends a packet that carries a new packet id and completes when its acknowledgement arrives.
    func request(_ make: (UInt16) -> MQTTPacket, promise: EventLoopPromise<MQTTPacket>) {
        guard !closed else {
            promise.fail(MQTTClientError.connectionClosed)
            return
        }
        var id = nextPacketID
        while waiting[id] != nil { id = id == .max ? 1 : id + 1 }
        nextPacketID = id == .max ? 1 : id + 1
        waiting[id] = promise
        send(make(id))
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

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        pingTask?.cancel()
        connack?.fail(MQTTClientError.connectionClosed)
        connack = nil
        let pending = waiting
        waiting = [:]
        for (_, p) in pending { p.fail(MQTTClientError.connectionClosed) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if failure == nil { failure = error }
        connack?.fail(error)
        connack = nil
        context.close(promise: nil)
    }
}
