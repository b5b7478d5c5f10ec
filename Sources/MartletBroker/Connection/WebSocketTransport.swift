import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// MQTT over WebSocket (MQTT 5 chapter 6, MQTT 3.1.1 section 6): an HTTP/1.1 upgrade on the
/// listener's `path` with the `mqtt` subprotocol (`mqttv3.1` for old clients), then binary
/// frames carrying MQTT bytes to the same `MQTTConnectionHandler` a TCP connection has.
enum WebSocketTransport {
    /// Offered by the client, chosen in this order (MQTT-6.0.0-4: the server answers `mqtt`).
    static let subprotocols = ["mqtt", "mqttv3.1"]

    enum Verdict: Equatable {
        case upgrade(subprotocol: String)
        case refuse(HTTPResponseStatus, String)
    }

    /// Whether an upgrade request for `path` may go on.
    static func check(_ head: HTTPRequestHead, path: String, allowedOrigins: [String]) -> Verdict {
        let requestPath = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard requestPath == path else { return .refuse(.notFound, "no MQTT endpoint at \(requestPath); it is at \(path)\n") }
        // Browsers always send Origin; a client that sends none is not a web page another site
        // could script, so allowed_origins does not apply to it.
        if !allowedOrigins.isEmpty, let origin = head.headers.first(name: "Origin"), !allowedOrigins.contains(origin) {
            return .refuse(.forbidden, "Origin \(origin) is not in allowed_origins\n")
        }
        let offered = head.headers[canonicalForm: "Sec-WebSocket-Protocol"].map { $0.lowercased() }
        guard let chosen = subprotocols.first(where: { offered.contains($0) }) else {
            return .refuse(.badRequest, "Sec-WebSocket-Protocol must offer mqtt\n")
        }
        return .upgrade(subprotocol: chosen)
    }

    /// The client's address from `X-Forwarded-For` or `Forwarded`, honoured only when the
    /// peer is in `trusted` (a list that must be set: an empty one trusts no such header).
    static func forwardedClient(_ head: HTTPRequestHead, peer: SocketAddress?, trusted: [AddressRange]) -> SocketAddress? {
        guard let peer, trusted.contains(where: { $0.contains(peer) }) else { return nil }
        if let forwarded = head.headers.first(name: "Forwarded") {
            // `for=192.0.2.60;proto=https, for=...`: the first element is the client.
            let first = forwarded.split(separator: ",").first ?? ""
            for pair in first.split(separator: ";") {
                let kv = pair.split(separator: "=", maxSplits: 1).map { trimmed($0) }
                guard kv.count == 2, kv[0].lowercased() == "for" else { continue }
                var value = trimmed(Substring(kv[1]), also: "\"")
                if value.hasPrefix("[") {
                    // "[2001:db8::1]:4711"
                    value = String(value.dropFirst().prefix { $0 != "]" })
                } else if value.filter({ $0 == ":" }).count == 1 {
                    value = String(value.prefix { $0 != ":" })
                }
                return try? SocketAddress(ipAddress: value, port: 0)
            }
        }
        if let list = head.headers.first(name: "X-Forwarded-For"), let first = list.split(separator: ",").first {
            return try? SocketAddress(ipAddress: trimmed(first), port: 0)
        }
        return nil
    }

    private static func trimmed(_ text: Substring, also extra: Character? = nil) -> String {
        let drop: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == extra }
        return String(text.drop(while: drop).reversed().drop(while: drop).reversed())
    }
}

/// Before the upgrade: bounds the bytes of the HTTP request (`max_http_header_bytes`) and
/// closes a connection that has not upgraded within the connect timeout. Removed at upgrade.
final class WebSocketRequestGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let limit: Int
    private let timeout: TimeAmount
    private var received = 0
    private var timer: Scheduled<Void>?

    init(limit: Int, timeout: TimeAmount) {
        self.limit = limit
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) { bound.value.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytes
        guard received <= limit else {
            let reply = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            context.writeAndFlush(NIOAny(ByteBuffer(string: reply)), promise: nil)
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }
}

/// Answers an HTTP request that did not upgrade: 404 (another path), 403 (Origin not
/// allowed), 400 (no `mqtt` subprotocol, or not a WebSocket upgrade at all); then closes.
final class WebSocketRefusalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let path: String
    private let allowedOrigins: [String]
    /// Told of each refusal: the status and the request (for the log and the counter).
    private let refused: (HTTPResponseStatus, HTTPRequestHead) -> Void

    init(path: String, allowedOrigins: [String], refused: @escaping (HTTPResponseStatus, HTTPRequestHead) -> Void) {
        self.path = path
        self.allowedOrigins = allowedOrigins
        self.refused = refused
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        var status = HTTPResponseStatus.badRequest
        var body = "expected a WebSocket upgrade (Upgrade: websocket) with Sec-WebSocket-Protocol: mqtt\n"
        if case .refuse(let s, let why) = WebSocketTransport.check(head, path: path, allowedOrigins: allowedOrigins) {
            status = s
            body = why
        }
        refused(status, head)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
    }
}

/// After the upgrade: WebSocket frames in, MQTT bytes out to the connection handler, and its
/// bytes back as binary frames. MQTT packets may span frames and a frame may hold several
/// (the connection handler frames the byte stream itself), so the fragments of a binary
/// message are passed on as they come: the MQTT framer bounds packets by `max_packet_size`,
/// and the frame decoder bounds each frame by it. Pings are answered; a text message is
/// refused with close code 1003; a frame the decoder rejects closes with 1009 (too large) or
/// 1002; a close is answered with a close. One handler for all of it keeps an idle
/// WebSocket connection small.
final class WebSocketMQTTBridge: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = WebSocketFrame

    private var closeSent = false
    /// Inside a fragmented text message (its continuations are refused with it).
    private var inText = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary:
            inText = false
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .continuation where !inText:
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .text, .continuation:
            inText = true
            sendClose(context, code: .unacceptableData, then: true)
        case .ping:
            var data = frame.unmaskedData
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: data.readSlice(length: data.readableBytes) ?? ByteBuffer())
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            // The peer's close: answered with its code (or 1000), then the connection ends.
            var data = frame.unmaskedData
            let code = data.readWebSocketErrorCode() ?? .normalClosure
            sendClose(context, code: code, then: true)
        default:
            break
        }
    }

    /// The frame decoder's errors: a frame over the maximum size (1009) or a broken frame (1002).
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let error = error as? NIOWebSocketError else {
            context.fireErrorCaught(error)
            return
        }
        sendClose(context, code: error == .invalidFrameLength ? .messageTooLarge : .protocolError, then: true)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: bytes)), promise: promise)
    }

    /// The broker closes the connection: a close frame (1000) goes first.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all && !closeSent && context.channel.isActive {
            closeSent = true
            var data = context.channel.allocator.buffer(capacity: 2)
            data.write(webSocketErrorCode: .normalClosure)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)), promise: nil)
        }
        context.close(mode: mode, promise: promise)
    }

    private func sendClose(_ context: ChannelHandlerContext, code: WebSocketErrorCode, then close: Bool) {
        guard !closeSent else {
            if close { context.close(promise: nil) }
            return
        }
        closeSent = true
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))).whenComplete { _ in
            if close { bound.value.close(promise: nil) }
        }
    }
}
