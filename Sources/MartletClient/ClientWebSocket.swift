import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The client's side of MQTT over WebSocket: its bytes go out as masked binary frames (a
/// client must mask, RFC 6455 5.3), frames from the broker come in as MQTT bytes; pings are
/// answered and a close ends the connection.
final class ClientWebSocketBridge: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = WebSocketFrame

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary, .continuation:
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .ping:
            var data = frame.unmaskedData
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: data.readSlice(length: data.readableBytes) ?? ByteBuffer())
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: unwrapOutboundIn(data))),
                      promise: promise)
    }
}

/// Before the upgrade: an HTTP error (a refused upgrade) closes the connection, so the
/// client fails at once instead of at its connect timeout.
final class CloseOnErrorHandler: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }
}

/// MQTT over WebSocket for any client pipeline (`MQTTClient`, `martlet bench`): the HTTP
/// upgrade handlers, then the frame bridge and the caller's MQTT handler once it is done.
public enum MQTTWebSocket {
    /// Adds the upgrade handlers to a new channel (on its event loop). `addMQTTHandler` runs
    /// when the upgrade is done, after the bridge is in place; the future completes then, or
    /// fails if the connection closes first.
    public static func configure(
        _ channel: any Channel, addMQTTHandler: @escaping @Sendable (any Channel) throws -> Void
    ) throws -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let done = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
        let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 28, automaticErrorHandling: true) { channel, _ in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(ClientWebSocketBridge())
                try addMQTTHandler(channel)
                done.value = true
                promise.succeed()
            }
        }
        try channel.pipeline.syncOperations.addHTTPClientHandlers(withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
        try channel.pipeline.syncOperations.addHandler(CloseOnErrorHandler())
        channel.closeFuture.whenComplete { _ in
            if !done.value {
                done.value = true
                promise.fail(ChannelError.ioOnClosedChannel)
            }
        }
        return promise.futureResult
    }

    /// Sends the upgrade request (`Sec-WebSocket-Protocol: mqtt`) for `path`.
    public static func requestUpgrade(_ channel: any Channel, host: String, port: Int, path: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Sec-WebSocket-Protocol", value: "mqtt")
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }
}
