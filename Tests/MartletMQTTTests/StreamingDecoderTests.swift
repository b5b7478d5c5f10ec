import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// The decoder must give the same packets whatever the read boundaries are.
@Suite struct StreamingDecoderTests {
    static func feed(_ chunks: [[UInt8]], version: ProtocolVersion?) throws -> [MQTTPacket] {
        let processor = NIOSingleStepByteToMessageProcessor(MQTTPacketDecoder(version: version))
        var out: [MQTTPacket] = []
        for chunk in chunks {
            try processor.process(buffer: ByteBuffer(bytes: chunk)) { out.append($0) }
        }
        try processor.finishProcessing(seenEOF: true) { out.append($0) }
        return out
    }

    @Test(arguments: EncodingTests.cases)
    func oneByteAtATime(_ c: EncodingTests.Case) throws {
        let decoded = try Self.feed(c.bytes.map { [$0] }, version: c.version)
        #expect(decoded == [c.packet])
    }

    @Test(arguments: [ProtocolVersion.v3_1_1, .v5])
    func manyPacketsInOneRead(_ version: ProtocolVersion) throws {
        let cases = EncodingTests.cases.filter { $0.version == version }
        let all = cases.flatMap(\.bytes)
        #expect(try Self.feed([all], version: version) == cases.map(\.packet))
        // And in chunks of 7, which splits most packets mid-field.
        let chunks = stride(from: 0, to: all.count, by: 7).map { Array(all[$0..<min($0 + 7, all.count)]) }
        #expect(try Self.feed(chunks, version: version) == cases.map(\.packet))
    }

    @Test func serverDecoderLearnsTheLevelFromConnect() throws {
        let connect = MQTTPacket.connect(.init(protocolVersion: .v5, clientIdentifier: "x"))
        var props = Properties()
        props.appendUserProperty("a", "b")
        let publish = MQTTPacket.publish(.init(topic: "t", payload: buffer("p"), properties: props))
        let bytes = try encode(connect, .v5) + encode(publish, .v5)
        #expect(try Self.feed(bytes.map { [$0] }, version: nil) == [connect, publish])
    }

    @Test func partialPacketAtEOFIsLeftUndelivered() throws {
        let processor = NIOSingleStepByteToMessageProcessor(MQTTPacketDecoder(version: .v3_1_1))
        var out: [MQTTPacket] = []
        try processor.process(buffer: ByteBuffer(bytes: h("C0 00 30 07 00 03"))) { out.append($0) }
        #expect(out == [.pingreq])
        #expect(processor.unprocessedBytes == 4)
    }

    @Test("a continuous stream of packets larger than a read does not grow the framer's buffer")
    func framerBufferStaysBoundedOnAStream() throws {
        var packet = ByteBuffer()
        try MQTTPacket.publish(PublishPacket(topic: "flood", payload: ByteBuffer(repeating: 1, count: 65_536), qos: .atMostOnce))
            .write(to: &packet, version: .v3_1_1)
        var stream = ByteBuffer()
        for _ in 0..<200 { stream.writeImmutableBuffer(packet) }
        var framer = MQTTPacketFramer(decoder: MQTTPacketDecoder(version: .v3_1_1))
        var decoded = 0
        var largest = 0
        // The broker holds recent packets (their payloads are slices) while it routes them.
        var held: [MQTTPacket] = []
        while stream.readableBytes > 0 {
            let chunk = stream.readSlice(length: min(65_536, stream.readableBytes))!
            try framer.process(chunk, allocator: ByteBufferAllocator()) { packet in
                decoded += 1
                held.append(packet)
                if held.count > 4 { held.removeFirst() }
                return true
            }
            largest = max(largest, framer.bufferedCapacity)
        }
        #expect(decoded == 200)
        #expect(largest <= 2 * packet.readableBytes, "the framer held \(largest) bytes")
    }

    @Test func framerKeepsOnlyTheUnfinishedPacket() throws {
        var framer = MQTTPacketFramer(decoder: MQTTPacketDecoder(version: .v3_1_1))
        let allocator = ByteBufferAllocator()
        var got: [MQTTPacket] = []
        // A whole PINGREQ and the first 3 bytes of a PUBLISH in one large read buffer.
        var read = allocator.buffer(capacity: 16_384)
        read.writeBytes(h("C0 00 30 07 00"))
        try framer.process(read, allocator: allocator) { got.append($0); return true }
        #expect(got == [.pingreq])
        #expect(framer.bufferedBytes == 3)
        try framer.process(ByteBuffer(bytes: h("03 'a/b'")), allocator: allocator) { got.append($0); return true }
        #expect(framer.bufferedBytes == 7)
        try framer.process(ByteBuffer(bytes: h("'hi' C0 00")), allocator: allocator) { got.append($0); return true }
        #expect(got == [.pingreq, .publish(.init(topic: "a/b", payload: buffer("hi"))), .pingreq])
        #expect(framer.bufferedBytes == 0)
        // Returning false stops at once; the rest is held (and more can be held behind it)
        // until the next call decodes it.
        try framer.process(ByteBuffer(bytes: h("C0 00 C0 00")), allocator: allocator) { _ in false }
        #expect(framer.bufferedBytes == 2)
        framer.hold(ByteBuffer(bytes: h("E0 00")), allocator: allocator)
        #expect(framer.bufferedBytes == 4)
        got = []
        try framer.process(ByteBuffer(), allocator: allocator) { got.append($0); return true }
        #expect(got == [.pingreq, .disconnect(DisconnectPacket())])
        #expect(framer.bufferedBytes == 0)
        // Errors surface as the decoder's.
        #expect(throws: MQTTCodecError.invalidPacketType(0)) {
            try framer.process(ByteBuffer(bytes: h("00 00")), allocator: allocator) { _ in true }
        }
    }
}
