import MartletTLS
import NIOCore
import NIOHTTP1

/// The server's WebSocket upgrade (RFC 6455 4.2): `Sec-WebSocket-Version: 13` and one
/// `Sec-WebSocket-Key`, answered with its `Sec-WebSocket-Accept`. `shouldUpgrade` gives the
/// extra response headers (the subprotocol), or nil to refuse; a refused request goes on to
/// the next handler (which answers it with an HTTP error). `upgraded` sets up the pipeline.
/// Unlike NIO's `NIOWebSocketServerUpgrader`, it adds no frame encoder and decoder of its own:
/// `WebSocketMQTTBridge` reads and writes frames itself.
struct WebSocketUpgrader: HTTPServerProtocolUpgrader, Sendable {
    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    let supportedProtocol = "websocket"
    /// None in the Connection header (RFC 6455 asks only for "Upgrade"); the key and version
    /// are checked below.
    let requiredUpgradeHeaders: [String] = []
    let shouldUpgrade: @Sendable (HTTPRequestHead) -> HTTPHeaders?
    let upgraded: @Sendable (any Channel, HTTPRequestHead) throws -> Void

    enum Refused: Error { case badHandshake, notAccepted }

    /// The `Sec-WebSocket-Accept` value for a client's key.
    static func accept(key: String) -> String {
        Crypto.base64Encode(Crypto.sha1(Array((key + guid).utf8)))
    }

    func buildUpgradeResponse(
        channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders
    ) -> EventLoopFuture<HTTPHeaders> {
        let keys = upgradeRequest.headers["Sec-WebSocket-Key"]
        guard keys.count == 1, upgradeRequest.headers["Sec-WebSocket-Version"] == ["13"] else {
            return channel.eventLoop.makeFailedFuture(Refused.badHandshake)
        }
        guard var headers = shouldUpgrade(upgradeRequest) else {
            return channel.eventLoop.makeFailedFuture(Refused.notAccepted)
        }
        headers.replaceOrAdd(name: "Upgrade", value: "websocket")
        headers.add(name: "Sec-WebSocket-Accept", value: Self.accept(key: keys[0]))
        headers.replaceOrAdd(name: "Connection", value: "upgrade")
        return channel.eventLoop.makeSucceededFuture(headers)
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        let channel = context.channel
        return channel.eventLoop.makeCompletedFuture { try upgraded(channel, upgradeRequest) }
    }
}

/// One WebSocket frame header (RFC 6455 5.2), read from the front of a buffer.
struct WebSocketFrameHeader: Equatable {
    static let continuation: UInt8 = 0x0, text: UInt8 = 0x1, binary: UInt8 = 0x2
    static let close: UInt8 = 0x8, ping: UInt8 = 0x9, pong: UInt8 = 0xA

    var fin: Bool
    var reservedBits: UInt8
    var opcode: UInt8
    /// The masking key, nil for an unmasked frame.
    var mask: UInt32?
    var length: UInt64
    /// Bytes of the header itself (2 to 14).
    var size: Int

    var isControl: Bool { opcode & 0x8 != 0 }

    /// The header at the buffer's reader index, or nil while it is incomplete.
    static func peek(_ buffer: ByteBuffer) -> WebSocketFrameHeader? {
        let start = buffer.readerIndex
        guard let b0 = buffer.getInteger(at: start, as: UInt8.self),
              let b1 = buffer.getInteger(at: start + 1, as: UInt8.self) else { return nil }
        var size = 2
        var length = UInt64(b1 & 0x7F)
        if length == 126 {
            guard let l = buffer.getInteger(at: start + size, as: UInt16.self) else { return nil }
            length = UInt64(l)
            size += 2
        } else if length == 127 {
            guard let l = buffer.getInteger(at: start + size, as: UInt64.self) else { return nil }
            length = l
            size += 8
        }
        var mask: UInt32?
        if b1 & 0x80 != 0 {
            guard let m = buffer.getInteger(at: start + size, as: UInt32.self) else { return nil }
            mask = m
            size += 4
        }
        return WebSocketFrameHeader(fin: b0 & 0x80 != 0, reservedBits: b0 & 0x70, opcode: b0 & 0x0F, mask: mask, length: length, size: size)
    }

    /// Writes an unmasked server frame header.
    static func write(opcode: UInt8, length: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(0x80 | opcode)
        if length < 126 {
            buffer.writeInteger(UInt8(length))
        } else if length <= Int(UInt16.max) {
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        } else {
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
    }
}

extension ByteBuffer {
    /// Moves `count` bytes from `source` (from its reader index) to the end of this buffer,
    /// XORed with the masking key starting at byte `offset` of the key.
    mutating func writeUnmasked(_ source: inout ByteBuffer, count: Int, key: UInt32, offset: Int) {
        writeWithUnsafeMutableBytes(minimumWritableBytes: count) { target in
            source.withUnsafeReadableBytes { bytes in
                for i in 0..<count {
                    target[i] = bytes[i] ^ UInt8(truncatingIfNeeded: key >> (24 - 8 * ((offset + i) & 3)))
                }
            }
            return count
        }
        source.moveReaderIndex(forwardBy: count)
    }
}
