import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// The in-process link a bridge uses to reach this broker: an MQTT connection over a Unix
/// socket pair, served by the same connection handler as a TCP client (one code path for
/// every rule), with no listening port, no password, no ACL and its own queue bounds.
extension MQTTBroker {
    /// Opens a socket pair, serves one end as an MQTT connection on one of the broker's event
    /// loops and returns the other end (non-blocking), for the bridge's client to speak
    /// MQTT over, with the event loop serving the broker's end (a bridge that runs its clients
    /// there stays on one thread). The client id the bridge connects with must start with
    /// `$bridge/` (which no other connection may use); its session's outbox is bounded by
    /// `queue` and follows `policy` when full.
    public func openBridgeLink(queue: BrokerConfiguration.QueueBounds, policy: SlowConsumerPolicy) async throws -> (socket: CInt, eventLoop: any EventLoop) {
        var fds: [CInt] = [-1, -1]
        #if os(Linux)
        let type = CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
        #else
        let type = SOCK_STREAM
        #endif
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else { throw IOError(errnoCode: errno, reason: "socketpair") }
        var listener = BrokerConfiguration.Listener(host: "bridge", port: 0, slowConsumerPolicy: policy, allowAnonymous: true)
        listener.bridgeQueue = queue
        let settings = ConnectionSettings(configuration: core.live.withLockedValue { $0 }, listener: listener)
        let loop = group.next()
        guard let router = routers.first(where: { $0.eventLoop === loop }) else {
            close(fds[0])
            close(fds[1])
            throw ChannelError.ioOnClosedChannel
        }
        let logger = core.logger
        do {
            _ = try await ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            MQTTConnectionHandler(router: router, settings: settings, logger: logger))
                    }
                }
                .withConnectedSocket(fds[0])
                .get()
        } catch {
            close(fds[1])
            throw error
        }
        return (fds[1], loop)
    }
}
