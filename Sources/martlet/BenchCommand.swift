import ArgumentParser
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// `martlet bench`: load scenarios against any MQTT broker.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure a broker with a load scenario.",
        subcommands: [Fanout.self]
    )

    /// 1 publisher → N subscribers on one topic: deliveries per second until every
    /// subscriber has every message.
    struct Fanout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One publisher, N subscribers on one topic.")

        @Option(name: .short, help: "Broker host.") var host = "127.0.0.1"
        @Option(name: .short, help: "Broker port.") var port = 1883
        @Option(help: "Subscribers.") var subscribers = 10
        @Option(help: "Messages to publish.") var messages = 100_000
        @Option(help: "Payload bytes.") var payload = 64
        @Option(name: .short, help: "QoS of publish and subscriptions (0 or 1).") var qos = 0
        @Option(name: .customShort("V"), help: "mqttv311 or mqttv5.") var protocolVersion = "mqttv311"
        @Option(help: "Give up after this many seconds.") var timeout = 60

        func validate() throws {
            guard subscribers >= 1, messages >= 1, payload >= 0 else { throw ValidationError("counts must be positive") }
            guard qos == 0 || qos == 1 else { throw ValidationError("-q must be 0 or 1") }
            guard ["mqttv311", "mqttv5"].contains(protocolVersion) else { throw ValidationError("-V must be mqttv311 or mqttv5") }
        }

        func run() async throws {
            let version: ProtocolVersion = protocolVersion == "mqttv5" ? .v5 : .v3_1_1
            let group = MultiThreadedEventLoopGroup.singleton
            let topic = "bench/fanout/\(UInt32.random(in: 0...UInt32.max))"
            let q = QoS(rawValue: UInt8(qos))!

            let counter = DeliveryCounter(expected: subscribers * messages)
            var subs: [any Channel] = []
            for i in 0..<subscribers {
                let ch = try await BenchConnection.open(group: group, host: host, port: port, version: version,
                                                        clientID: "bench-sub-\(i)-\(topic.hashValue & 0xFFFF)", counter: counter)
                try await BenchConnection.subscribe(ch, topic: topic, qos: q, version: version)
                subs.append(ch)
            }
            let pub = try await BenchConnection.open(group: group, host: host, port: port, version: version,
                                                     clientID: "bench-pub-\(topic.hashValue & 0xFFFF)", counter: nil)

            let body = ByteBuffer(repeating: 0x61, count: payload)
            let start = NIODeadline.now()
            try await BenchConnection.publish(pub, topic: topic, payload: body, count: messages, qos: q, version: version)
            let finished = await counter.wait(timeout: .seconds(Int64(timeout)))
            let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
            let delivered = counter.count
            for ch in subs + [pub] { try? await ch.close() }

            let rate = Double(delivered) / elapsed
            print("fanout 1→\(subscribers) \(payload) B QoS \(qos) \(protocolVersion): \(delivered)/\(subscribers * messages) delivered in \((elapsed * 1000).rounded() / 1000) s = \(Int(rate)) deliveries/s (\(Int(Double(messages) / elapsed)) msg/s in)")
            if !finished { throw ExitCode(2) }
        }
    }
}

/// Counts PUBLISH packets received across subscribers and wakes the waiter at the target.
final class DeliveryCounter: Sendable {
    let expected: Int
    private let state = NIOLockedValueBox<(count: Int, waiter: CheckedContinuation<Bool, Never>?)>((0, nil))

    init(expected: Int) { self.expected = expected }

    var count: Int { state.withLockedValue { $0.count } }

    func add(_ n: Int) {
        let waiter: CheckedContinuation<Bool, Never>? = state.withLockedValue { s in
            s.count += n
            if s.count >= expected, let w = s.waiter {
                s.waiter = nil
                return w
            }
            return nil
        }
        waiter?.resume(returning: true)
    }

    func wait(timeout: TimeAmount) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                    let done = self.state.withLockedValue { s -> Bool in
                        if s.count >= self.expected { return true }
                        s.waiter = c
                        return false
                    }
                    if done { c.resume(returning: true) }
                }
            }
            group.addTask {
                try? await Task.sleep(nanoseconds: UInt64(timeout.nanoseconds))
                let w = self.state.withLockedValue { s -> CheckedContinuation<Bool, Never>? in
                    defer { s.waiter = nil }
                    return s.waiter
                }
                w?.resume(returning: false)
                return false
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
    }
}

/// A lean MQTT peer for load generation: frames packets from the fixed header, counts
/// PUBLISHes, answers QoS 1 with PUBACK, and signals CONNACK/SUBACK.
final class BenchConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let counter: DeliveryCounter?
    let version: ProtocolVersion
    var pending = ByteBuffer()
    var controlWaiter: EventLoopPromise<MQTTPacket>?

    init(counter: DeliveryCounter?, version: ProtocolVersion) {
        self.counter = counter
        self.version = version
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        pending.writeBuffer(&incoming)
        var publishes = 0
        var acks = context.channel.allocator.buffer(capacity: 0)
        while let header = try? MQTTPacket.peekFixedHeader(pending), pending.readableBytes >= header.totalLength {
            let type = header.typeAndFlags >> 4
            if type == PacketType.publish.rawValue {
                publishes += 1
                let qos = (header.typeAndFlags >> 1) & 3
                if qos == 1 {
                    // Packet id follows the topic.
                    let topicLength = Int(pending.getInteger(at: pending.readerIndex + header.headerLength, as: UInt16.self) ?? 0)
                    let id = pending.getInteger(at: pending.readerIndex + header.headerLength + 2 + topicLength, as: UInt16.self) ?? 1
                    acks.writeBytes([0x40, 0x02])
                    acks.writeInteger(id)
                }
                pending.moveReaderIndex(forwardBy: header.totalLength)
            } else {
                if let packet = try? MQTTPacket.decode(from: &pending, version: version, maximumPacketSize: 1 << 24) {
                    if let w = controlWaiter {
                        controlWaiter = nil
                        w.succeed(packet)
                    }
                } else {
                    pending.moveReaderIndex(forwardBy: header.totalLength)
                }
            }
        }
        pending.discardReadBytes()
        if acks.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(acks), promise: nil) }
        if publishes > 0 { counter?.add(publishes) }
    }

    static func open(group: any EventLoopGroup, host: String, port: Int, version: ProtocolVersion, clientID: String, counter: DeliveryCounter?) async throws -> any Channel {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(BenchConnection(counter: counter, version: version))
                }
            }
            .connect(host: host, port: port).get()
        let ack = try await request(channel, .connect(ConnectPacket(protocolVersion: version, cleanStart: true, keepAlive: 60, clientIdentifier: clientID)), version: version)
        guard case .connack(let c) = ack, c.reasonCode == .success else {
            throw ValidationError("broker refused CONNECT: \(ack)")
        }
        return channel
    }

    static func subscribe(_ channel: any Channel, topic: String, qos: QoS, version: ProtocolVersion) async throws {
        let ack = try await request(channel, .subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init(topic, qos: qos)])), version: version)
        guard case .suback(let s) = ack, s.reasonCodes.allSatisfy({ !$0.isFailure }) else {
            throw ValidationError("broker refused SUBSCRIBE: \(ack)")
        }
    }

    /// Sends a packet and waits for the next non-PUBLISH packet.
    static func request(_ channel: any Channel, _ packet: MQTTPacket, version: ProtocolVersion) async throws -> MQTTPacket {
        var buffer = channel.allocator.buffer(capacity: 64)
        try packet.write(to: &buffer, version: version)
        let future: EventLoopFuture<MQTTPacket> = try await channel.eventLoop.submit {
            let handler = try channel.pipeline.syncOperations.handler(type: BenchConnection.self)
            let promise = channel.eventLoop.makePromise(of: MQTTPacket.self)
            handler.controlWaiter = promise
            channel.writeAndFlush(buffer, promise: nil)
            return promise.futureResult
        }.get()
        return try await future.get()
    }

    /// Publishes `count` messages, writing in batches and waiting for writability so the
    /// load tool itself never buffers without bound.
    static func publish(_ channel: any Channel, topic: String, payload: ByteBuffer, count: Int, qos: QoS, version: ProtocolVersion) async throws {
        var sent = 0
        var nextID: UInt16 = 1
        while sent < count {
            let batch = min(256, count - sent)
            var buffer = channel.allocator.buffer(capacity: batch * (payload.readableBytes + topic.utf8.count + 8))
            for _ in 0..<batch {
                let p = PublishPacket(topic: topic, payload: payload, qos: qos, packetIdentifier: qos == .atMostOnce ? nil : nextID)
                try MQTTPacket.write(p, to: &buffer, version: version)
                nextID = nextID == .max ? 1 : nextID + 1
            }
            try await channel.writeAndFlush(buffer)
            sent += batch
        }
    }
}
