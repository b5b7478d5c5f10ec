import Logging
import MartletBenchSupport
@testable import MartletBroker
import MartletMQTT
import NIOCore
import NIOEmbedded

/// One router on an `EmbeddedEventLoop`, with clients connected through the real connection
/// handler on `EmbeddedChannel`s: the whole broker path of one loop, no sockets, and a clock
/// that moves only when a test advances it. Not Sendable: it lives on the test's thread.
final class EmbeddedBroker {
    let loop = EmbeddedEventLoop()
    let core: BrokerCore
    let router: Router
    let settings: ConnectionSettings

    init(_ configure: (inout BrokerConfiguration) -> Void = { _ in }) {
        var configuration = BrokerConfiguration()
        configuration.eventLoops = 1
        configuration.reasonStrings = false  // tests compare whole packets
        configure(&configuration)
        core = BrokerCore(configuration: configuration, logger: Logger(label: "martlet.test", factory: { _ in SwiftLogNoOpLogHandler() }))
        settings = core.connectionSettings.withLockedValue { $0[0] }
        let router = Router(index: 0, eventLoop: loop, core: core, customExecutor: InlineExecutor())
        self.router = router
        router.assumeIsolated { $0.start(peers: [router]) }
    }

    /// Moves the clock; timers and sweeps due meanwhile run, in order.
    func advance(by amount: TimeAmount) {
        loop.advanceTime(by: amount)
    }

    /// A connected channel; `connect` (if any) is sent as its first read burst.
    func client(_ connect: ConnectPacket?) throws -> EmbeddedClient {
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(MQTTConnectionHandler(router: router, settings: settings, logger: core.logger))
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        let client = EmbeddedClient(channel: channel, version: connect?.protocolVersion ?? .v3_1_1)
        if let connect { try client.send(.connect(connect)) }
        return client
    }

    /// The broker's totals with what this loop counted since its last sweep.
    var counters: BrokerCounters.Snapshot {
        var totals = core.counters.snapshot
        totals.add(router.assumeIsolated { $0.local })
        return totals
    }
    var sessionCount: Int { router.assumeIsolated { $0.sessionCount } }
}

/// A client's end of an embedded connection: packets in, the broker's packets out.
final class EmbeddedClient {
    let channel: EmbeddedChannel
    let version: ProtocolVersion
    private var decoder: MQTTPacketDecoder

    init(channel: EmbeddedChannel, version: ProtocolVersion) {
        self.channel = channel
        self.version = version
        self.decoder = MQTTPacketDecoder(version: version)
    }

    /// One read burst carrying `packets`.
    func send(_ packets: MQTTPacket...) throws {
        var buffer = ByteBuffer()
        for packet in packets { try packet.write(to: &buffer, version: version) }
        try channel.writeInbound(buffer)
        channel.pipeline.fireChannelReadComplete()
    }

    /// Everything the broker wrote since the last call, decoded.
    func received() throws -> [MQTTPacket] {
        var bytes = ByteBuffer()
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&buffer) }
        var packets: [MQTTPacket] = []
        while let packet = try decoder.decode(buffer: &bytes) { packets.append(packet) }
        return packets
    }

    var isOpen: Bool { channel.isActive }

    /// The connection drops without DISCONNECT.
    func drop() throws {
        try channel.close().wait()
    }
}
