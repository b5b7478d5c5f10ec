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
/// bytes back as binary frames, in one handler that reads and writes the frames itself (no
/// frame objects, no decoder state between reads: an idle WebSocket connection costs little
/// more than a TCP one). MQTT packets may span frames and a frame may hold several (the
/// connection handler frames the byte stream itself), so the payload of binary frames is
/// passed on as it arrives, unmasked, one buffer per read. The MQTT framer bounds packets by
/// `max_packet_size`, and no frame may be longer (1009). Pings are answered; a text message
/// is refused with close code 1003; an unmasked frame, reserved bits, an unknown opcode, a
/// fragmented or long control frame or a continuation out of place close with 1002; a close
/// is answered with a close.
final class WebSocketMQTTBridge: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let maxFrameSize: Int
    /// The start of a frame whose header (or, for a control frame, payload) is not all here
    /// yet: at most 14 + 125 bytes.
    private var partial: ByteBuffer?
    /// Payload bytes of the current binary frame still to come, and its masking key and
    /// position in the key.
    private var payloadLeft = 0
    private var mask: UInt32 = 0
    private var maskOffset = 0
    /// A fragmented binary message is open: continuations may follow, a new message may not.
    private var inMessage = false
    private var closeSent = false
    /// Closing: what arrives is dropped.
    private var closing = false

    init(maxFrameSize: Int) {
        self.maxFrameSize = maxFrameSize
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        var input = unwrapInboundIn(data)
        if var earlier = partial {
            partial = nil
            earlier.writeBuffer(&input)
            input = earlier
        }
        var payload: ByteBuffer?
        while input.readableBytes > 0 && !closing {
            if payloadLeft > 0 {
                let count = min(payloadLeft, input.readableBytes)
                if payload == nil { payload = context.channel.allocator.buffer(capacity: count) }
                payload!.writeUnmasked(&input, count: count, key: mask, offset: maskOffset)
                payloadLeft -= count
                maskOffset = (maskOffset + count) & 3
                continue
            }
            let header = WebSocketFrameHeader.peek(input)
            if let header, let code = refusal(header) {
                deliver(context, &payload)
                sendClose(context, code: code)
                return
            }
            // (A control frame that is not refused is at most 125 bytes long.)
            guard let header, !header.isControl || input.readableBytes >= header.size + Int(header.length) else {
                var rest = context.channel.allocator.buffer(capacity: input.readableBytes)
                rest.writeBuffer(&input)
                partial = rest
                break
            }
            input.moveReaderIndex(forwardBy: header.size)
            if header.isControl {
                deliver(context, &payload)
                var body = context.channel.allocator.buffer(capacity: Int(header.length))
                body.writeUnmasked(&input, count: Int(header.length), key: header.mask!, offset: 0)
                control(context, opcode: header.opcode, body: body)
            } else {
                inMessage = !header.fin
                payloadLeft = Int(header.length)
                mask = header.mask!
                maskOffset = 0
            }
        }
        deliver(context, &payload)
    }

    /// Why a frame is refused, as a close code; nil if it is fine.
    private func refusal(_ header: WebSocketFrameHeader) -> WebSocketErrorCode? {
        if header.reservedBits != 0 || header.mask == nil { return .protocolError }
        switch header.opcode {
        case WebSocketFrameHeader.close, WebSocketFrameHeader.ping, WebSocketFrameHeader.pong:
            return header.fin && header.length <= 125 ? nil : .protocolError
        case WebSocketFrameHeader.text:
            return .unacceptableData
        case WebSocketFrameHeader.binary where !inMessage, WebSocketFrameHeader.continuation where inMessage:
            return header.length > UInt64(maxFrameSize) ? .messageTooLarge : nil
        default:
            return .protocolError
        }
    }

    private func deliver(_ context: ChannelHandlerContext, _ payload: inout ByteBuffer?) {
        if let bytes = payload, bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(bytes)) }
        payload = nil
    }

    private func control(_ context: ChannelHandlerContext, opcode: UInt8, body: ByteBuffer) {
        switch opcode {
        case WebSocketFrameHeader.ping:
            context.writeAndFlush(wrapOutboundOut(frame(context, opcode: WebSocketFrameHeader.pong, body: body)), promise: nil)
        case WebSocketFrameHeader.close:
            // The peer's close: answered with its code (or 1000), then the connection ends.
            var body = body
            sendClose(context, code: body.readWebSocketErrorCode() ?? .normalClosure)
        default:
            break
        }
    }

    /// A small message is copied behind its header into one buffer (one write for the socket
    /// to gather instead of two); a large one goes out as it is, behind a header of its own.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        let copied = bytes.readableBytes <= Self.copyLimit
        var header = context.channel.allocator.buffer(capacity: copied ? bytes.readableBytes + 4 : 10)
        WebSocketFrameHeader.write(opcode: WebSocketFrameHeader.binary, length: bytes.readableBytes, into: &header)
        if copied {
            header.writeImmutableBuffer(bytes)
            context.write(wrapOutboundOut(header), promise: promise)
        } else {
            context.write(wrapOutboundOut(header), promise: nil)
            context.write(data, promise: promise)
        }
    }

    static let copyLimit = 1024

    /// The broker closes the connection: a close frame (1000) goes first.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all && !closeSent && context.channel.isActive {
            closeSent = true
            context.writeAndFlush(wrapOutboundOut(closeFrame(context, code: .normalClosure)), promise: nil)
        }
        context.close(mode: mode, promise: promise)
    }

    /// Sends a close frame with `code`, then closes the connection.
    private func sendClose(_ context: ChannelHandlerContext, code: WebSocketErrorCode) {
        closing = true
        guard !closeSent else {
            context.close(promise: nil)
            return
        }
        closeSent = true
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(closeFrame(context, code: code))).whenComplete { _ in
            bound.value.close(promise: nil)
        }
    }

    private func closeFrame(_ context: ChannelHandlerContext, code: WebSocketErrorCode) -> ByteBuffer {
        var body = context.channel.allocator.buffer(capacity: 2)
        body.write(webSocketErrorCode: code)
        return frame(context, opcode: WebSocketFrameHeader.close, body: body)
    }

    private func frame(_ context: ChannelHandlerContext, opcode: UInt8, body: ByteBuffer) -> ByteBuffer {
        var out = context.channel.allocator.buffer(capacity: 2 + body.readableBytes)
        WebSocketFrameHeader.write(opcode: opcode, length: body.readableBytes, into: &out)
        out.writeImmutableBuffer(body)
        return out
    }
}
