import Foundation
import MartletTestSupport
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What a `CountingSubscriber` saw, readable from the test.
final class SubscriberCounts: Sendable {
    private let state = NIOLockedValueBox((publishes: 0, other: [MQTTPacket](), closed: false))
    var publishes: Int { state.withLockedValue { $0.publishes } }
    var isClosed: Bool { state.withLockedValue { $0.closed } }
    var otherPackets: [MQTTPacket] { state.withLockedValue { $0.other } }
    func saw(_ packet: MQTTPacket) {
        state.withLockedValue { s in
            if case .publish = packet { s.publishes += 1 } else { s.other.append(packet) }
        }
    }
    func sawClose() { state.withLockedValue { $0.closed = true } }
}

/// A subscriber for load tests: counts the PUBLISH packets it receives without keeping
/// them, optionally reading slowly (one read per tick), and notes other packets and the close.
final class CountingSubscriber: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var framer = MQTTPacketFramer(decoder: MQTTPacketDecoder(version: .v5, maximumPacketSize: 1 << 24))
    let counts = SubscriberCounts()
    /// nil: read as fast as possible; otherwise one read every tick.
    let readTick: TimeAmount?

    init(readTick: TimeAmount?) {
        self.readTick = readTick
    }

    func channelActive(context: ChannelHandlerContext) {
        if let readTick {
            let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.scheduleRepeatedTask(initialDelay: readTick, delay: readTick) { task in
                if ctx.value.channel.isActive { ctx.value.read() } else { task.cancel() }
            }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        let counts = self.counts
        try? framer.process(bytes, allocator: context.channel.allocator) { packet in
            counts.saw(packet)
            return true
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        counts.sawClose()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Connects with `clientID` (v5) and subscribes to `topic` at QoS 0. With `readBytes`, each
    /// read takes at most that many bytes and the socket's receive buffer is that small too, so
    /// the kernel cannot absorb a flood the reader is too slow for.
    static func connect(
        port: Int, clientID: String, topic: String, readTick: TimeAmount? = nil, readBytes: Int? = nil
    ) async throws -> (any Channel, SubscriberCounts) {
        let counts = NIOLockedValueBox<SubscriberCounts?>(nil)
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: readTick == nil)
        if let readBytes {
            bootstrap = bootstrap
                .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(readBytes))
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: readBytes))
        }
        let channel = try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = CountingSubscriber(readTick: readTick)
                    counts.withLockedValue { $0 = handler.counts }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        var buffer = ByteBuffer()
        try MQTTPacket.connect(ConnectPacket(protocolVersion: .v5, keepAlive: 0, clientIdentifier: clientID)).write(to: &buffer, version: .v5)
        try MQTTPacket.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init(topic, qos: .atMostOnce)])).write(to: &buffer, version: .v5)
        try await channel.writeAndFlush(buffer).get()
        if readTick != nil { channel.read() }
        let handler = counts.withLockedValue { $0! }
        try await waitFor(.seconds(10), "CONNACK and SUBACK for \(clientID)") { handler.otherPackets.count >= 2 ? true : nil }
        return (channel, handler)
    }
}

/// Sends `count` QoS 0 PUBLISH packets of `payloadSize` bytes as fast as TCP takes them,
/// keeping at most a window of writes outstanding so the sender's own memory stays small.
func flood(port: Int, topic: String, count: Int, payloadSize: Int) async throws {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port).get()
    defer { channel.close(promise: nil) }
    var connect = ByteBuffer()
    try MQTTPacket.connect(ConnectPacket(keepAlive: 0, clientIdentifier: "flooder")).write(to: &connect, version: .v3_1_1)
    try await channel.writeAndFlush(connect).get()
    var packet = ByteBuffer()
    let payload = ByteBuffer(repeating: 0x5A, count: payloadSize)
    try MQTTPacket.publish(PublishPacket(topic: topic, payload: payload, qos: .atMostOnce)).write(to: &packet, version: .v3_1_1)
    var sent = 0
    while sent < count {
        let batch = min(16, count - sent)
        for _ in 0..<(batch - 1) { channel.write(packet, promise: nil) }
        try await channel.writeAndFlush(packet).get()
        sent += batch
    }
}

/// This process's resident set size, in bytes (Linux /proc).
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kib = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return kib * 1024
    }
    return 0
}

/// Samples RSS every 20 ms while `body` runs and returns the peak growth over the start.
func peakResidentGrowth(during body: () async throws -> Void) async throws -> Int {
    let start = residentBytes()
    let peak = NIOLockedValueBox(start)
    let sampler = Task {
        while !Task.isCancelled {
            let now = residentBytes()
            peak.withLockedValue { $0 = max($0, now) }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
    defer { sampler.cancel() }
    try await body()
    let end = residentBytes()
    return max(peak.withLockedValue { $0 }, end) - start
}
