import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Byte-for-byte checks against encodings written out by hand from the spec.
@Suite struct EncodingTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var packet: MQTTPacket
        var version: ProtocolVersion
        var bytes: [UInt8]
        var testDescription: String { "\(name) @\(version)" }
    }

    static let cases: [Case] = {
        var user = Properties()
        user.payloadFormatIndicator = 1
        user.appendUserProperty("k", "v")
        var reason = Properties()
        reason.reasonString = "x"
        var subID = Properties()
        subID.set(.subscriptionIdentifier, .variableByteInteger(5))
        var expiry = Properties()
        expiry.sessionExpiryInterval = 0
        var authMethod = Properties()
        authMethod.authenticationMethod = "m"
        var connectProps = Properties()
        connectProps.receiveMaximum = 10
        return [
            Case(name: "CONNECT clean", packet: .connect(.init(protocolVersion: .v3_1_1, cleanStart: true, keepAlive: 60, clientIdentifier: "abc")),
                 version: .v3_1_1, bytes: h("10 0F 00 04 'MQTT' 04 02 00 3C 00 03 'abc'")),
            Case(name: "CONNECT v5", packet: .connect(.init(protocolVersion: .v5, cleanStart: true, keepAlive: 60, clientIdentifier: "abc")),
                 version: .v5, bytes: h("10 10 00 04 'MQTT' 05 02 00 3C 00 00 03 'abc'")),
            Case(name: "CONNECT v5 receive maximum", packet: .connect(.init(protocolVersion: .v5, cleanStart: false, keepAlive: 0, clientIdentifier: "", properties: connectProps)),
                 version: .v5, bytes: h("10 10 00 04 'MQTT' 05 00 00 00 03 21 00 0A 00 00")),
            Case(name: "CONNECT will+user+password",
                 packet: .connect(.init(protocolVersion: .v3_1_1, cleanStart: false, keepAlive: 10, clientIdentifier: "c",
                                        will: Will(topic: "w", payload: buffer("x"), qos: .atLeastOnce, retain: true),
                                        username: "u", password: buffer("p"))),
                 version: .v3_1_1, bytes: h("10 19 00 04 'MQTT' 04 EC 00 0A 00 01 'c' 00 01 'w' 00 01 'x' 00 01 'u' 00 01 'p'")),
            Case(name: "CONNECT 3.1", packet: .connect(.init(protocolVersion: .v3_1, cleanStart: true, keepAlive: 60, clientIdentifier: "a")),
                 version: .v3_1, bytes: h("10 0F 00 06 'MQIsdp' 03 02 00 3C 00 01 'a'")),
            Case(name: "CONNACK session present", packet: .connack(.init(sessionPresent: true, reasonCode: .success)),
                 version: .v3_1_1, bytes: h("20 02 01 00")),
            Case(name: "CONNACK v3 refused", packet: .connack(.init(sessionPresent: false, reasonCode: ReasonCode(ConnectReturnCode.identifierRejected.rawValue))),
                 version: .v3_1_1, bytes: h("20 02 00 02")),
            Case(name: "CONNACK v5 not authorized", packet: .connack(.init(sessionPresent: false, reasonCode: .notAuthorized)),
                 version: .v5, bytes: h("20 03 00 87 00")),
            Case(name: "PUBLISH QoS 0", packet: .publish(.init(topic: "a/b", payload: buffer("hi"))),
                 version: .v3_1_1, bytes: h("30 07 00 03 'a/b' 'hi'")),
            Case(name: "PUBLISH QoS 1 dup retain",
                 packet: .publish(.init(topic: "a/b", payload: buffer("hi"), qos: .atLeastOnce, retain: true, dup: true, packetIdentifier: 10)),
                 version: .v3_1_1, bytes: h("3B 09 00 03 'a/b' 00 0A 'hi'")),
            Case(name: "PUBLISH QoS 2 v5", packet: .publish(.init(topic: "t", payload: buffer(""), qos: .exactlyOnce, packetIdentifier: 0x1234)),
                 version: .v5, bytes: h("34 06 00 01 't' 12 34 00")),
            Case(name: "PUBLISH v5 properties", packet: .publish(.init(topic: "a/b", payload: buffer("hi"), properties: user)),
                 version: .v5, bytes: h("30 11 00 03 'a/b' 09 01 01 26 00 01 'k' 00 01 'v' 'hi'")),
            Case(name: "PUBACK", packet: .puback(.init(packetIdentifier: 7)), version: .v3_1_1, bytes: h("40 02 00 07")),
            Case(name: "PUBACK v5 success short", packet: .puback(.init(packetIdentifier: 7)), version: .v5, bytes: h("40 02 00 07")),
            Case(name: "PUBACK v5 no subscribers", packet: .puback(.init(packetIdentifier: 7, reasonCode: .noMatchingSubscribers)),
                 version: .v5, bytes: h("40 03 00 07 10")),
            Case(name: "PUBACK v5 reason string", packet: .puback(.init(packetIdentifier: 7, reasonCode: .noMatchingSubscribers, properties: reason)),
                 version: .v5, bytes: h("40 08 00 07 10 04 1F 00 01 'x'")),
            Case(name: "PUBREC", packet: .pubrec(.init(packetIdentifier: 7)), version: .v3_1_1, bytes: h("50 02 00 07")),
            Case(name: "PUBREL", packet: .pubrel(.init(packetIdentifier: 7)), version: .v3_1_1, bytes: h("62 02 00 07")),
            Case(name: "PUBREL v5 not found", packet: .pubrel(.init(packetIdentifier: 7, reasonCode: .packetIdentifierNotFound)),
                 version: .v5, bytes: h("62 03 00 07 92")),
            Case(name: "PUBCOMP", packet: .pubcomp(.init(packetIdentifier: 7)), version: .v3_1_1, bytes: h("70 02 00 07")),
            Case(name: "SUBSCRIBE", packet: .subscribe(.init(packetIdentifier: 1, subscriptions: [.init("a/+", qos: .atLeastOnce), .init("#", qos: .exactlyOnce)])),
                 version: .v3_1_1, bytes: h("82 0C 00 01 00 03 'a/+' 01 00 01 '#' 02")),
            Case(name: "SUBSCRIBE v5 options",
                 packet: .subscribe(.init(packetIdentifier: 1,
                                          subscriptions: [.init(topicFilter: "a", options: .init(qos: .atLeastOnce, noLocal: true, retainAsPublished: true, retainHandling: .doNotSend))],
                                          properties: subID)),
                 version: .v5, bytes: h("82 09 00 01 02 0B 05 00 01 'a' 2D")),
            Case(name: "SUBACK", packet: .suback(.init(packetIdentifier: 1, reasonCodes: [.grantedQoS1, .subscribeFailure])),
                 version: .v3_1_1, bytes: h("90 04 00 01 01 80")),
            Case(name: "SUBACK v5", packet: .suback(.init(packetIdentifier: 1, reasonCodes: [.topicFilterInvalid])),
                 version: .v5, bytes: h("90 04 00 01 00 8F")),
            Case(name: "UNSUBSCRIBE", packet: .unsubscribe(.init(packetIdentifier: 2, topicFilters: ["a"])),
                 version: .v3_1_1, bytes: h("A2 05 00 02 00 01 'a'")),
            Case(name: "UNSUBSCRIBE v5", packet: .unsubscribe(.init(packetIdentifier: 2, topicFilters: ["a"])),
                 version: .v5, bytes: h("A2 06 00 02 00 00 01 'a'")),
            Case(name: "UNSUBACK", packet: .unsuback(.init(packetIdentifier: 2)), version: .v3_1_1, bytes: h("B0 02 00 02")),
            Case(name: "UNSUBACK v5", packet: .unsuback(.init(packetIdentifier: 2, reasonCodes: [.success, .noSubscriptionExisted])),
                 version: .v5, bytes: h("B0 05 00 02 00 00 11")),
            Case(name: "PINGREQ", packet: .pingreq, version: .v3_1_1, bytes: h("C0 00")),
            Case(name: "PINGRESP", packet: .pingresp, version: .v3_1_1, bytes: h("D0 00")),
            Case(name: "PINGRESP v5", packet: .pingresp, version: .v5, bytes: h("D0 00")),
            Case(name: "DISCONNECT", packet: .disconnect(.init()), version: .v3_1_1, bytes: h("E0 00")),
            Case(name: "DISCONNECT v5 normal", packet: .disconnect(.init()), version: .v5, bytes: h("E0 00")),
            Case(name: "DISCONNECT v5 taken over", packet: .disconnect(.init(reasonCode: .sessionTakenOver)), version: .v5, bytes: h("E0 01 8E")),
            Case(name: "DISCONNECT v5 session expiry", packet: .disconnect(.init(reasonCode: .normalDisconnection, properties: expiry)),
                 version: .v5, bytes: h("E0 07 00 05 11 00 00 00 00")),
            Case(name: "AUTH v5 success", packet: .auth(.init()), version: .v5, bytes: h("F0 00")),
            Case(name: "AUTH v5 continue", packet: .auth(.init(reasonCode: .continueAuthentication, properties: authMethod)),
                 version: .v5, bytes: h("F0 06 18 04 15 00 01 'm'")),
        ]
    }()

    @Test(arguments: cases)
    func encodesByteForByte(_ c: Case) throws {
        #expect(try encode(c.packet, c.version) == c.bytes)
        #expect(c.packet.encodedLength(version: c.version) == c.bytes.count)
    }

    @Test(arguments: cases)
    func decodesHandWrittenBytes(_ c: Case) throws {
        #expect(try decodeOne(c.bytes, c.version) == c.packet)
    }

    @Test("PublishPacket.writeHeader followed by the payload is the whole packet, for every PUBLISH case")
    func publishHeaderThenPayload() throws {
        for c in Self.cases {
            guard case .publish(let p) = c.packet else { continue }
            var buffer = ByteBuffer()
            try p.writeHeader(to: &buffer, version: c.version)
            buffer.writeImmutableBuffer(p.payload)
            #expect(Array(buffer.readableBytesView) == c.bytes, "\(c.name)")
        }
        // And a payload long enough for a two-byte remaining length.
        let big = PublishPacket(topic: "a/b", payload: ByteBuffer(repeating: 7, count: 20_000), qos: .atLeastOnce, packetIdentifier: 9)
        var header = ByteBuffer()
        try big.writeHeader(to: &header, version: .v5)
        header.writeImmutableBuffer(big.payload)
        #expect(try encode(.publish(big), .v5) == Array(header.readableBytesView))
    }

    @Test func everyPacketTypeHasACaseAtBothLevels() {
        let v3 = Set(Self.cases.filter { $0.version != .v5 }.map { $0.packet.type })
        let v5 = Set(Self.cases.filter { $0.version == .v5 }.map { $0.packet.type })
        #expect(v3 == Set(PacketType.allCases).subtracting([.auth]))
        #expect(v5.isSuperset(of: [.connect, .connack, .publish, .puback, .pubrel, .subscribe, .suback, .unsubscribe, .unsuback, .pingresp, .disconnect, .auth]))
    }

    @Test func variableByteIntegerBoundaries() throws {
        for (value, bytes) in [(0, h("00")), (127, h("7F")), (128, h("80 01")), (16_383, h("FF 7F")), (16_384, h("80 80 01")),
                               (2_097_151, h("FF FF 7F")), (2_097_152, h("80 80 80 01")), (268_435_455, h("FF FF FF 7F"))] {
            var b = ByteBuffer()
            b.writeMQTTVariableByteIntegerForTest(value)
            #expect(Array(b.readableBytesView) == bytes)
            #expect(VariableByteInteger.encodedLength(value) == bytes.count)
            let peeked = try VariableByteInteger.peek(ByteBuffer(bytes: bytes), at: 0)
            #expect(peeked?.value == UInt32(value))
            #expect(peeked?.length == bytes.count)
        }
    }

    @Test func largePayloadUsesMultiByteLength() throws {
        let payload = ByteBuffer(repeating: 0x41, count: 16_384)
        let packet = MQTTPacket.publish(.init(topic: "big", payload: payload))
        let bytes = try encode(packet, .v3_1_1)
        #expect(Array(bytes[0..<4]) == h("30 85 80 01"))  // 16_389 = 0x4005
        #expect(try decodeOne(bytes, .v3_1_1) == packet)
    }
}

extension ByteBuffer {
    mutating func writeMQTTVariableByteIntegerForTest(_ value: Int) {
        var v = value
        repeat {
            var byte = UInt8(v & 0x7F)
            v >>= 7
            if v > 0 { byte |= 0x80 }
            writeInteger(byte)
        } while v > 0
    }
}
