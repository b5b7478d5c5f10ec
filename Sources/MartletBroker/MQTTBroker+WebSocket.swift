import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// WebSocket listeners: what a new channel of a `websocket: true` listener gets.
extension MQTTBroker {
    /// A WebSocket listener's pipeline: the HTTP upgrade (path, Origin, `mqtt` subprotocol,
    /// bounded request, connect timeout), then frames bridged to the same connection handler
    /// TCP uses. The client address is X-Forwarded-For / Forwarded from a trusted proxy, else
    /// the PROXY header's, else the peer's.
    static func configureWebSocket(
        _ channel: any Channel, settings: ConnectionSettings, router: Router, refusal: Refusal?, logger: Logger,
        proxiedSource: NIOLoopBoundBox<SocketAddress?>?
    ) throws {
        let listener = settings.listener
        let configuration = settings.configuration
        let upgrader = WebSocketUpgrader(
            shouldUpgrade: { head in
                guard case .upgrade(let subprotocol) = WebSocketTransport.check(
                    head, path: listener.webSocketPath, allowedOrigins: listener.allowedOrigins) else {
                    return nil
                }
                var headers = HTTPHeaders()
                headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol)
                return headers
            },
            upgraded: { channel, head in
                let ops = channel.pipeline.syncOperations
                if let guardHandler = try? ops.handler(type: WebSocketRequestGuard.self) { ops.removeHandler(guardHandler, promise: nil) }
                if let refusalHandler = try? ops.handler(type: WebSocketRefusalHandler.self) { ops.removeHandler(refusalHandler, promise: nil) }
                try ops.addHandler(WebSocketMQTTBridge(maxFrameSize: configuration.maximumPacketSize))
                let client = WebSocketTransport.forwardedClient(head, peer: channel.remoteAddress, trusted: configuration.trustedProxies)
                    ?? proxiedSource?.value
                try ops.addHandler(MQTTConnectionHandler(router: router, settings: settings, refusal: refusal, logger: logger, clientAddress: client))
            })
        let ops = channel.pipeline.syncOperations
        try ops.addHandler(WebSocketRequestGuard(limit: configuration.maximumHTTPHeaderBytes, timeout: configuration.connectTimeout))
        try ops.configureHTTPServerPipeline(withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
        try ops.addHandler(WebSocketRefusalHandler(path: listener.webSocketPath, allowedOrigins: listener.allowedOrigins) { status, head in
            router.assumeIsolated { $0.count(\.webSocketRefused) }
            logger.debug("WebSocket upgrade refused", metadata: [
                "remote": "\(channel.remoteAddress.map { "\($0)" } ?? "?")", "status": "\(status.code)", "path": "\(head.uri)",
                "origin": "\(head.headers.first(name: "Origin") ?? "-")",
            ])
        })
    }
}
