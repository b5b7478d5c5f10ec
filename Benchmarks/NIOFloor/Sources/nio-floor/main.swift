// nio-floor: the least an MQTT broker built on SwiftNIO channels does for one connection, and
// nothing more: accept (one SO_REUSEPORT listener per event loop, as martletd's
// `listen_per_thread`), one handler per channel, CONNACK for a CONNECT, PUBACK for a QoS 1
// PUBLISH, PINGRESP for a PINGREQ, close on DISCONNECT. No session, no routing, no checks.
//
// `martlet bench churn` and `martlet bench idle` against it measure the per-connection cost of
// NIO itself (broker CPU per short-lived connection, RSS per idle connection): a floor under
// what martletd can reach while each MQTT connection is a NIO channel.
//
//   swift run -c release nio-floor [port] [event loops]
//
// Same socket options as martletd's defaults, same receive buffer sizes.
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

final class FloorHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Bytes of a packet not yet complete.
    private var partial: ByteBuffer?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = Self.unwrapInboundIn(data)
        if var partial {
            partial.writeBuffer(&bytes)
            bytes = partial
            self.partial = nil
        }
        var wrote = false
        while let (header, body) = Self.nextPacket(&bytes) {
            switch header >> 4 {
            case 1:  // CONNECT: accepted, no session present
                reply(context, [0x20, 0x02, 0x00, 0x00])
                wrote = true
            case 3 where (header >> 1) & 0x3 == 1:  // QoS 1 PUBLISH: its packet id follows the topic
                var body = body
                guard let topicLength = body.readInteger(as: UInt16.self),
                      let id = body.getInteger(at: body.readerIndex + Int(topicLength), as: UInt16.self) else { break }
                reply(context, [0x40, 0x02, UInt8(id >> 8), UInt8(id & 0xFF)])
                wrote = true
            case 12:  // PINGREQ
                reply(context, [0xD0, 0x00])
                wrote = true
            case 14:  // DISCONNECT
                if wrote { context.flush() }
                context.close(promise: nil)
                return
            default:
                break
            }
        }
        if bytes.readableBytes > 0 { partial = bytes }
        if wrote { context.flush() }
    }

    private func reply(_ context: ChannelHandlerContext, _ packet: [UInt8]) {
        var out = context.channel.allocator.buffer(capacity: packet.count)
        out.writeBytes(packet)
        context.write(Self.wrapOutboundOut(out), promise: nil)
    }

    /// The next whole packet's first byte and body, or nil (the bytes are left as they were).
    private static func nextPacket(_ bytes: inout ByteBuffer) -> (UInt8, ByteBuffer)? {
        let start = bytes.readerIndex
        guard let header = bytes.readInteger(as: UInt8.self) else { return nil }
        var length = 0
        var shift = 0
        while true {
            guard let digit = bytes.readInteger(as: UInt8.self), shift <= 21 else {
                bytes.moveReaderIndex(to: start)
                return nil
            }
            length |= Int(digit & 0x7F) << shift
            shift += 7
            if digit & 0x80 == 0 { break }
        }
        guard let body = bytes.readSlice(length: length) else {
            bytes.moveReaderIndex(to: start)
            return nil
        }
        return (header, body)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// The argument at `index` as a number in `range`, `fallback` when absent; anything else stops here.
func argument(_ index: Int, _ name: String, in range: ClosedRange<Int>, default fallback: Int) -> Int {
    let arguments = CommandLine.arguments
    guard arguments.count > index else { return fallback }
    guard let value = Int(arguments[index]), range.contains(value) else {
        print("nio-floor: \(name) must be a number in \(range.lowerBound)...\(range.upperBound), not '\(arguments[index])'")
        exit(1)
    }
    return value
}

let port = argument(1, "port", in: 1...65_535, default: 18_841)
let loops = argument(2, "event loops", in: 1...256, default: System.coreCount)
let group = MultiThreadedEventLoopGroup(numberOfThreads: loops)
var channels: [any Channel] = []
for loop in group.makeIterator() {
    let channel = try ServerBootstrap(group: loop, childGroup: loop)
        .serverChannelOption(.backlog, value: 4096)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
        // martletd's defaults (tcp_defer_accept 1 s; NIO sets TCP_NODELAY on accepted sockets).
        .serverChannelOption(.tcpOption(NIOBSDSocket.Option(rawValue: TCP_DEFER_ACCEPT)), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let options = channel.syncOptions {
                    try options.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 128, maximum: 65_536))
                }
                try channel.pipeline.syncOperations.addHandler(FloorHandler())
            }
        }
        .bind(host: "127.0.0.1", port: port)
        .wait()
    channels.append(channel)
}
print("nio-floor listening on 127.0.0.1:\(port) with \(loops) event loop(s)")
try channels[0].closeFuture.wait()
