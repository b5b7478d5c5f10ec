@testable import MartletBroker
import NIOCore
import MartletTestSupport
import NIOEmbedded
import Testing

/// The server's own WebSocket framing (`WebSocketMQTTBridge`) on an `EmbeddedChannel`: masked
/// client frames in, MQTT bytes out; the broker's bytes out as binary frames; the refusals.
@Suite struct WebSocketCodecTests {
    /// A client frame: masked with `key` (RFC 6455 5.3), with the given first byte.
    func frame(_ payload: [UInt8], first: UInt8 = 0x82, key: [UInt8] = [0x37, 0xFA, 0x21, 0x3D], masked: Bool = true) -> [UInt8] {
        var out = [first]
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            out.append(maskBit | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            out += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            out.append(maskBit | 127)
            out += (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
        }
        guard masked else { return out + payload }
        return out + key + payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
    }

    func channel(maxFrameSize: Int = 1 << 20) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(WebSocketMQTTBridge(maxFrameSize: maxFrameSize))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1883)).wait()
        #expect(channel.isActive)
        return channel
    }

    /// Everything the handler passed on inbound, concatenated.
    func received(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var out: [UInt8] = []
        while var b = try channel.readInbound(as: ByteBuffer.self) { out += b.readBytes(length: b.readableBytes) ?? [] }
        return out
    }

    func written(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var out: [UInt8] = []
        while var b = try channel.readOutbound(as: ByteBuffer.self) { out += b.readBytes(length: b.readableBytes) ?? [] }
        return out
    }

    @Test("Sec-WebSocket-Accept for the key of RFC 6455's example")
    func accept() {
        #expect(WebSocketUpgrader.accept(key: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("Payloads of 0, 5, 126 (16-bit length) and 70,000 bytes (64-bit length) arrive unmasked, fed whole, one byte at a time, and several frames in one read")
    func payloads() throws {
        let payloads: [[UInt8]] = [[], Array("hello".utf8), (0..<126).map { UInt8($0) }, (0..<70_000).map { UInt8(truncatingIfNeeded: $0 * 7) }]
        let all = payloads.flatMap { $0 }
        let bytes = payloads.flatMap { frame($0) }

        let whole = try channel()
        try whole.writeInbound(ByteBuffer(bytes: bytes))
        #expect(try received(whole) == all)

        let dribbled = try channel()
        for byte in bytes.prefix(400) { try dribbled.writeInbound(ByteBuffer(bytes: [byte])) }
        try dribbled.writeInbound(ByteBuffer(bytes: bytes.dropFirst(400)))
        #expect(try received(dribbled) == all)
        #expect(try written(dribbled).isEmpty)
    }

    @Test("A fragmented binary message (binary without FIN, continuations) with a ping between its fragments: the payload in order, the ping answered with a pong carrying its data")
    func fragmentsAndPing() throws {
        let c = try channel()
        let bytes = frame([1, 2], first: 0x02) + frame(Array("hi".utf8), first: 0x89) + frame([3], first: 0x00) + frame([4, 5], first: 0x80)
        try c.writeInbound(ByteBuffer(bytes: bytes))
        #expect(try received(c) == [1, 2, 3, 4, 5])
        #expect(try written(c) == [0x8A, 2] + Array("hi".utf8))
    }

    @Test("The broker's bytes go out as one unmasked binary frame each, with 7-, 16- and 64-bit lengths")
    func outbound() throws {
        let c = try channel()
        for count in [3, 300, 70_000] {
            try c.writeOutbound(ByteBuffer(repeating: 0xAB, count: count))
            let out = try written(c)
            let header: [UInt8] = count < 126 ? [0x82, UInt8(count)]
                : count <= 0xFFFF ? [0x82, 126, UInt8(count >> 8), UInt8(count & 0xFF)]
                : [0x82, 127] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: count >> ($0 * 8)) }
            #expect(out == header + [UInt8](repeating: 0xAB, count: count))
        }
    }

    @Test("A close is answered with its code and ends the connection; the bytes before it are delivered, those after it dropped")
    func closeHandshake() throws {
        let c = try channel()
        try c.writeInbound(ByteBuffer(bytes: frame([9]) + frame([0x03, 0xE9], first: 0x88) + frame([10])))
        #expect(try received(c) == [9])
        #expect(try written(c) == [0x88, 2, 0x03, 0xE9])
        #expect(!c.isActive)
    }

    @Test("Refusals: text 1003; unmasked, reserved bits, unknown opcode, a fragmented or 126-byte ping, a continuation with no message open, a new message inside a fragmented one 1002; a frame over the maximum 1009")
    func refusals() throws {
        let cases: [([UInt8], UInt16)] = [
            (frame(Array("{}".utf8), first: 0x81), 1003),
            (frame([1], masked: false), 1002),
            (frame([1], first: 0xC2), 1002),
            (frame([1], first: 0x83), 1002),
            (frame([1], first: 0x09), 1002),
            (frame([UInt8](repeating: 0, count: 126), first: 0x89), 1002),
            (frame([1], first: 0x80), 1002),
            (frame([1], first: 0x02) + frame([2], first: 0x82), 1002),
            (frame([UInt8](repeating: 0, count: 1025)), 1009),
        ]
        for (bytes, code) in cases {
            let c = try channel(maxFrameSize: 1024)
            try c.writeInbound(ByteBuffer(bytes: bytes))
            let out = try written(c)
            #expect(out == [0x88, 2, UInt8(code >> 8), UInt8(code & 0xFF)], "\(bytes.prefix(2)) → \(out)")
            #expect(!c.isActive)
        }
    }

    @Test("A frame header that declares more than the maximum, or a ping that declares 2^64-1 bytes, is refused before its payload arrives")
    func oversizeHeaderAlone() throws {
        let c = try channel(maxFrameSize: 1024)
        try c.writeInbound(ByteBuffer(bytes: [0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]))
        #expect(try written(c) == [0x88, 2, 0x03, 0xF1])
        #expect(try received(c).isEmpty)
        let ping = try channel(maxFrameSize: 1024)
        try ping.writeInbound(ByteBuffer(bytes: [0x89, 0x80 | 127] + [UInt8](repeating: 0xFF, count: 8) + [1, 2, 3, 4]))
        #expect(try written(ping) == [0x88, 2, 0x03, 0xEA])
    }

    @Test("3,000 mutated frame streams (random bytes changed, inserted or cut, random chunking): no crash, and the connection either stays open having passed on payload or is closed with a close frame")
    func mutatedStreams() throws {
        var rng = SplitMix64(seed: 0x5753_4652_414D_45)
        let seeds: [[UInt8]] = [
            frame([0x10, 0x0C] + Array("MQTT".utf8)), frame([1, 2], first: 0x02) + frame([3], first: 0x80),
            frame(Array("ping".utf8), first: 0x89), frame([UInt8](repeating: 7, count: 300)), frame([0x03, 0xE8], first: 0x88),
        ]
        for _ in 0..<3_000 {
            var bytes = (0..<Int.random(in: 1...4, using: &rng)).flatMap { _ in seeds.randomElement(using: &rng)! }
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: at)
                default: bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...16, using: &rng)))
                }
                if bytes.isEmpty { bytes = [0x82] }
            }
            let c = try channel(maxFrameSize: 1024)
            var rest = bytes[...]
            while !rest.isEmpty && c.isActive {
                let n = Int.random(in: 1...rest.count, using: &rng)
                try c.writeInbound(ByteBuffer(bytes: rest.prefix(n)))
                rest = rest.dropFirst(n)
            }
            _ = try received(c)
            let out = try written(c)
            if !c.isActive {
                #expect(out.count >= 4 && out[out.count - 4] == 0x88, "\(bytes)")
            }
        }
    }
}

