import Histogram
import MartletClient
import MartletMQTT
import MartletTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Totals of one bench run, shared by every connection (one lock, touched once per read
/// burst per connection, never per message).
final class BenchTotals: Sendable {
    struct State {
        var delivered = 0
        /// Bytes of the PUBLISH packets subscribers received.
        var deliveredBytes = 0
        var published = 0
        var errors = 0
        var connections = 0
        /// Idle connections' PINGREQs sent and PINGRESPs received.
        var pings = 0
        var pongs = 0
    }
    let state = NIOLockedValueBox(State())

    func add(delivered n: Int, bytes: Int = 0) {
        state.withLockedValue {
            $0.delivered += n
            $0.deliveredBytes += bytes
        }
    }
    func add(published n: Int) { state.withLockedValue { $0.published += n } }
    /// Copies published (times the subscribers each reaches) and not delivered yet.
    func undelivered(factor: Int) -> Int { state.withLockedValue { $0.published * factor - $0.delivered } }
    func add(connections n: Int) { state.withLockedValue { $0.connections += n } }
    func add(pings n: Int) { state.withLockedValue { $0.pings += n } }
    func add(pongs n: Int) { state.withLockedValue { $0.pongs += n } }
    func error() { state.withLockedValue { $0.errors += 1 } }
    var snapshot: State { state.withLockedValue { $0 } }
}

/// Microseconds on the monotonic clock every connection of this process shares: publishers
/// put it in the first 8 bytes of the payload, subscribers subtract it on arrival.
@inline(__always) func benchNow() -> UInt64 { UInt64(NIODeadline.now().uptimeNanoseconds / 1000) }

/// A lean MQTT peer for load generation: frames packets from the fixed header, counts
/// PUBLISHes and records their latency, answers QoS 1 with PUBACK, counts PUBACKs for the
/// publisher's window, and hands CONNACK/SUBACK to whoever waits for them.
final class BenchPeer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let totals: BenchTotals?
    let version: ProtocolVersion
    private var pending = ByteBuffer()
    /// This connection's delivery latencies for the whole run, merged once at the end: a
    /// merge or reset walks the histogram's whole array (~17,000 buckets), far too much to do
    /// per read.
    private(set) var latencies = BenchPeer.emptyHistogram
    static let emptyHistogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var controlWaiter: EventLoopPromise<MQTTPacket>?
    /// Publisher side: PUBACKs still expected, and who waits for the window to open.
    var outstanding = 0
    var windowWaiter: (limit: Int, promise: EventLoopPromise<Void>)?

    init(totals: BenchTotals?, version: ProtocolVersion) {
        self.totals = totals
        self.version = version
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if pending.readableBytes == 0 {
            pending = incoming
        } else {
            pending.writeBuffer(&incoming)
        }
        var publishes = 0
        var publishBytes = 0
        var acks = context.channel.allocator.buffer(capacity: 0)
        let now = benchNow()
        while let header = try? MQTTPacket.peekFixedHeader(pending), pending.readableBytes >= header.totalLength {
            let start = pending.readerIndex
            let type = header.typeAndFlags >> 4
            if type == PacketType.publish.rawValue {
                publishes += 1
                publishBytes += header.totalLength
                let qos = (header.typeAndFlags >> 1) & 3
                let topicLength = Int(pending.getInteger(at: start + header.headerLength, as: UInt16.self) ?? 0)
                var offset = start + header.headerLength + 2 + topicLength
                if qos > 0 {
                    let id = pending.getInteger(at: offset, as: UInt16.self) ?? 1
                    acks.writeBytes([0x40, 0x02])
                    acks.writeInteger(id)
                    offset += 2
                }
                if version == .v5 {
                    // Skip the properties: a variable byte integer length, then the bytes.
                    var length = 0
                    var shift = 0
                    while let byte = pending.getInteger(at: offset, as: UInt8.self) {
                        offset += 1
                        length |= Int(byte & 0x7F) << shift
                        shift += 7
                        if byte & 0x80 == 0 || shift > 21 { break }
                    }
                    offset += length
                }
                if offset + 8 <= start + header.totalLength, let sent = pending.getInteger(at: offset, as: UInt64.self), sent <= now {
                    _ = latencies.record(now - sent)
                }
            } else if type == PacketType.puback.rawValue || type == PacketType.pubcomp.rawValue {
                outstanding -= 1
            } else if type == PacketType.pingresp.rawValue {
                totals?.add(pongs: 1)
            } else if let packet = try? MQTTPacket.decode(from: &pending, version: version, maximumPacketSize: 1 << 24) {
                if let w = controlWaiter {
                    controlWaiter = nil
                    w.succeed(packet)
                }
                continue
            }
            pending.moveReaderIndex(to: start + header.totalLength)
        }
        if pending.readableBytes == 0 { pending = ByteBuffer() } else { pending.discardReadBytes() }
        if acks.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(acks), promise: nil) }
        if publishes > 0 { totals?.add(delivered: publishes, bytes: publishBytes) }
        if let w = windowWaiter, outstanding < w.limit {
            windowWaiter = nil
            w.promise.succeed()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        controlWaiter?.fail(ChannelError.eof)
        controlWaiter = nil
        windowWaiter?.promise.fail(ChannelError.eof)
        windowWaiter = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Operations

    struct Endpoint: Sendable {
        var host: String
        var port: Int
        var version: ProtocolVersion
        var tls: TLSContext?
        var serverName: String?
        var keepAlive: UInt16 = 60
        /// v5: the Topic Alias Maximum sent in CONNECT (the broker may then send aliases).
        var topicAliasMaximum: UInt16 = 0
        /// Subscribers keep their session after the connection (3.1.1 clean session 0, v5
        /// Session Expiry 3600 s): a broker with persistence stores what they are sent.
        var persistent = false
        /// MQTT over WebSocket to this path (nil: TCP).
        var webSocketPath: String?
    }

    /// TCP (+ TLS), CONNECT, CONNACK.
    static func open(_ endpoint: Endpoint, clientID: String, totals: BenchTotals?, group: any EventLoopGroup) async throws -> any Channel {
        let upgrade = NIOLockedValueBox<EventLoopFuture<Void>?>(nil)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    if let tls = endpoint.tls {
                        try ch.pipeline.syncOperations.addHandler(TLSHandler(context: tls, serverName: endpoint.serverName ?? endpoint.host, shutdownTimeout: .zero))
                    }
                    guard endpoint.webSocketPath != nil else {
                        try ch.pipeline.syncOperations.addHandler(BenchPeer(totals: totals, version: endpoint.version))
                        return
                    }
                    let upgraded = try MQTTWebSocket.configure(ch) { ch in
                        try ch.pipeline.syncOperations.addHandler(BenchPeer(totals: totals, version: endpoint.version))
                    }
                    upgrade.withLockedValue { $0 = upgraded }
                }
            }
            .connect(host: endpoint.host, port: endpoint.port).get()
        if let path = endpoint.webSocketPath, let upgraded = upgrade.withLockedValue({ $0 }) {
            MQTTWebSocket.requestUpgrade(channel, host: endpoint.host, port: endpoint.port, path: path)
            let timer = channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
            defer { timer.cancel() }
            do {
                try await upgraded.get()
            } catch {
                throw BenchError("WebSocket upgrade to \(path) refused or not answered")
            }
        }
        var properties = Properties()
        if endpoint.version == .v5 && endpoint.topicAliasMaximum > 0 { properties.topicAliasMaximum = endpoint.topicAliasMaximum }
        if endpoint.version == .v5 && endpoint.persistent { properties.sessionExpiryInterval = 3600 }
        let ack = try await request(channel, .connect(ConnectPacket(
            protocolVersion: endpoint.version, cleanStart: !endpoint.persistent || endpoint.version == .v5, keepAlive: endpoint.keepAlive, clientIdentifier: clientID,
            properties: properties)), version: endpoint.version)
        guard case .connack(let c) = ack, c.reasonCode == .success else {
            channel.close(promise: nil)
            throw BenchError("broker refused CONNECT: \(ack)")
        }
        return channel
    }

    /// Whether the channel's TLS handshake resumed a session (false without TLS).
    static func resumedTLS(_ channel: any Channel) async throws -> Bool {
        try await channel.eventLoop.submit {
            (try? channel.pipeline.syncOperations.handler(type: TLSHandler.self))?.sessionReused ?? false
        }.get()
    }

    static func subscribe(_ channel: any Channel, filter: String, qos: QoS, version: ProtocolVersion) async throws {
        let ack = try await request(channel, .subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init(filter, qos: qos)])), version: version)
        guard case .suback(let s) = ack, s.reasonCodes.allSatisfy({ !$0.isFailure }) else {
            throw BenchError("broker refused SUBSCRIBE: \(ack)")
        }
    }

    /// Sends a packet and waits for the next packet that is not a PUBLISH or PUBACK.
    static func request(_ channel: any Channel, _ packet: MQTTPacket, version: ProtocolVersion) async throws -> MQTTPacket {
        var encoded = channel.allocator.buffer(capacity: 64)
        try packet.write(to: &encoded, version: version)
        let buffer = encoded
        let future: EventLoopFuture<MQTTPacket> = try await channel.eventLoop.submit {
            // Closed already (the broker hung up during the handshake): channelInactive has run
            // and would never fail this wait.
            guard channel.isActive else { throw ChannelError.ioOnClosedChannel }
            let handler = try channel.pipeline.syncOperations.handler(type: BenchPeer.self)
            let promise = channel.eventLoop.makePromise(of: MQTTPacket.self)
            handler.controlWaiter = promise
            channel.writeAndFlush(buffer, promise: nil)
            // A broker that never answers must not hang the tool: the connection is closed,
            // which fails the wait.
            let timeout = channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
            promise.futureResult.whenComplete { _ in timeout.cancel() }
            return promise.futureResult
        }.get()
        return try await future.get()
    }

    /// Publishes `count` messages stamped with the send time, in one write. QoS 0 returns
    /// when the bytes are written (the tool never buffers without bound); QoS 1 first waits
    /// until the batch fits in `window` unacknowledged messages.
    static func publish(_ channel: any Channel, topic: String, payloadSize: Int, count: Int, qos: QoS,
                        version: ProtocolVersion, window: Int, nextID: inout UInt16) async throws {
        let size = max(8, payloadSize)
        var buffer = channel.allocator.buffer(capacity: count * (size + topic.utf8.count + 16))
        var payload = ByteBuffer(repeating: 0x61, count: size)
        payload.setInteger(benchNow(), at: 0)
        for _ in 0..<count {
            let id: UInt16? = qos == .atMostOnce ? nil : nextID
            if qos != .atMostOnce { nextID = nextID == .max ? 1 : nextID + 1 }
            try MQTTPacket.write(PublishPacket(topic: topic, payload: payload, qos: qos, packetIdentifier: id), to: &buffer, version: version)
        }
        if qos != .atMostOnce {
            while true {
                let reserved: EventLoopFuture<Bool> = channel.eventLoop.flatSubmit {
                    guard channel.isActive, let handler = try? channel.pipeline.syncOperations.handler(type: BenchPeer.self) else {
                        return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
                    }
                    if handler.outstanding + count <= window {
                        handler.outstanding += count
                        return channel.eventLoop.makeSucceededFuture(true)
                    }
                    let promise = channel.eventLoop.makePromise(of: Void.self)
                    handler.windowWaiter = (window - count + 1, promise)
                    return promise.futureResult.map { false }
                }
                if try await reserved.get() { break }
            }
        }
        try await channel.writeAndFlush(buffer)
    }

    /// The latencies `channel`'s subscriber recorded so far.
    static func latencies(_ channel: any Channel) async throws -> Histogram<UInt64> {
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: BenchPeer.self).latencies
        }.get()
    }

    /// Waits until every QoS 1 message of this publisher is acknowledged.
    static func drain(_ channel: any Channel) async throws {
        try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            guard let handler = try? channel.pipeline.syncOperations.handler(type: BenchPeer.self) else {
                return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
            }
            if handler.outstanding <= 0 { return channel.eventLoop.makeSucceededVoidFuture() }
            guard channel.isActive else { return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
            let promise = channel.eventLoop.makePromise(of: Void.self)
            handler.windowWaiter = (1, promise)
            let timeout = channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
            promise.futureResult.whenComplete { _ in timeout.cancel() }
            return promise.futureResult
        }.get()
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
