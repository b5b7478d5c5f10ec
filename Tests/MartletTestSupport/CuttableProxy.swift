import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A loopback TCP proxy whose connections the test can cut, to lose a client's connection
/// at a chosen moment without touching the broker.
public final class CuttableProxy: Sendable {
    public let server: any Channel
    private let open = NIOLockedValueBox<[any Channel]>([])
    public var port: Int { server.localAddress!.port! }
    public var connectionCount: Int { accepted.withLockedValue { $0 } }
    private let accepted = NIOLockedValueBox(0)

    private final class Forward: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let peer = NIOLockedValueBox<(any Channel)?>(nil)
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            peer.withLockedValue { $0 }?.writeAndFlush(unwrapInboundIn(data), promise: nil)
        }
        func channelInactive(context: ChannelHandlerContext) {
            peer.withLockedValue { $0 }?.close(promise: nil)
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    public init(to targetPort: Int) async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let open = self.open
        let accepted = self.accepted
        server = try await ServerBootstrap(group: group)
            .childChannelOption(.autoRead, value: true)
            .childChannelInitializer { inbound in
                let toClient = Forward()
                let toBroker = Forward()
                accepted.withLockedValue { $0 += 1 }
                return inbound.pipeline.addHandler(toBroker).flatMap {
                    ClientBootstrap(group: inbound.eventLoop)
                        .channelInitializer { $0.pipeline.addHandler(toClient) }
                        .connect(host: "127.0.0.1", port: targetPort)
                        .map { outbound in
                            toBroker.peer.withLockedValue { $0 = outbound }
                            toClient.peer.withLockedValue { $0 = inbound }
                            open.withLockedValue { $0 += [inbound, outbound] }
                        }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// Closes every proxied connection (both sides), as a network failure would.
    public func cut() {
        for c in open.withLockedValue({ list in defer { list = [] }; return list }) { c.close(promise: nil) }
    }

    public func close() { cut(); server.close(promise: nil) }
}
