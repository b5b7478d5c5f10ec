import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Each row: bytes a peer might send, the level the connection speaks, and the exact error.
@Suite struct MalformedInputTests {
    struct Row: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: [UInt8]
        var version: ProtocolVersion?
        var error: MQTTCodecError
        var maximumPacketSize = 1 << 20
        var testDescription: String { name }
    }

    static let v3 = ProtocolVersion.v3_1_1
    static let v5 = ProtocolVersion.v5

    static let rows: [Row] = [
        // Fixed header
        Row(name: "remaining length over 4 bytes", bytes: h("30 FF FF FF FF 01"), version: v3, error: .malformedVariableByteInteger),
        Row(name: "packet type 0", bytes: h("00 00"), version: v3, error: .invalidPacketType(0)),
        Row(name: "AUTH at 3.1.1", bytes: h("F0 00"), version: v3, error: .invalidPacketType(15)),
        Row(name: "SUBSCRIBE reserved flags 0000", bytes: h("80 06 00 01 00 01 'a' 00"), version: v3, error: .invalidFixedHeaderFlags(.subscribe, flags: 0)),
        Row(name: "UNSUBSCRIBE reserved flags 0011", bytes: h("A3 05 00 01 00 01 'a'"), version: v3, error: .invalidFixedHeaderFlags(.unsubscribe, flags: 3)),
        Row(name: "PUBREL reserved flags 0000", bytes: h("60 02 00 01"), version: v3, error: .invalidFixedHeaderFlags(.pubrel, flags: 0)),
        Row(name: "PINGREQ reserved flag set", bytes: h("C1 00"), version: v3, error: .invalidFixedHeaderFlags(.pingreq, flags: 1)),
        Row(name: "CONNECT reserved flags", bytes: h("12 0F 00 04 'MQTT' 04 02 00 3C 00 03 'abc'"), version: nil, error: .invalidFixedHeaderFlags(.connect, flags: 2)),
        Row(name: "packet larger than the maximum", bytes: h("30 C8 01") + [UInt8](repeating: 0, count: 200), version: v3,
            error: .packetTooLarge(size: 203, maximum: 100), maximumPacketSize: 100),
        // PUBLISH
        Row(name: "PUBLISH QoS 3", bytes: h("36 05 00 01 't' 00 01"), version: v3, error: .invalidQoS(3)),
        Row(name: "PUBLISH QoS 0 with DUP", bytes: h("38 03 00 01 't'"), version: v3, error: .duplicateFlagOnQoS0),
        Row(name: "topic length past the remaining length", bytes: h("30 05 00 0A 'abc'"), version: v3, error: .truncated(field: "topic name")),
        Row(name: "invalid UTF-8 in topic", bytes: h("30 04 00 02 C3 28"), version: v3, error: .invalidUTF8(field: "topic name")),
        Row(name: "UTF-16 surrogate in topic", bytes: h("30 05 00 03 ED A0 80"), version: v3, error: .invalidUTF8(field: "topic name")),
        Row(name: "overlong UTF-8 in topic", bytes: h("30 04 00 02 C0 AF"), version: v3, error: .invalidUTF8(field: "topic name")),
        Row(name: "U+0000 in topic", bytes: h("30 05 00 03 'a' 00 'b'"), version: v3, error: .nullCharacter(field: "topic name")),
        Row(name: "+ in topic name", bytes: h("30 05 00 03 'a/+'"), version: v3, error: .invalidTopicName(.wildcardInTopicName)),
        Row(name: "# in topic name", bytes: h("30 06 00 03 'a/#' 00"), version: v5, error: .invalidTopicName(.wildcardInTopicName)),
        Row(name: "empty topic at 3.1.1", bytes: h("30 02 00 00"), version: v3, error: .invalidTopicName(.empty)),
        Row(name: "empty topic at v5 without alias", bytes: h("30 03 00 00 00"), version: v5, error: .emptyTopicWithoutAlias),
        Row(name: "PUBLISH QoS 1 packet id 0", bytes: h("32 05 00 01 't' 00 00"), version: v3, error: .zeroPacketIdentifier(.publish)),
        Row(name: "PUBLISH truncated packet id", bytes: h("32 04 00 01 't' 00"), version: v3, error: .truncated(field: "packet identifier")),
        Row(name: "property length past the packet", bytes: h("30 06 00 01 't' 05 01 01"), version: v5, error: .truncated(field: "properties")),
        Row(name: "session expiry in PUBLISH", bytes: h("30 09 00 01 't' 05 11 00 00 00 01"), version: v5,
            error: .propertyNotAllowed(.sessionExpiryInterval, in: .publish)),
        Row(name: "two payload format indicators", bytes: h("30 08 00 01 't' 04 01 00 01 00"), version: v5, error: .duplicateProperty(.payloadFormatIndicator)),
        Row(name: "unknown property 0x05", bytes: h("30 06 00 01 't' 02 05 00"), version: v5, error: .unknownProperty(5)),
        Row(name: "payload format indicator 2", bytes: h("30 06 00 01 't' 02 01 02"), version: v5, error: .invalidPropertyValue(.payloadFormatIndicator)),
        Row(name: "topic alias 0", bytes: h("30 07 00 01 't' 03 23 00 00"), version: v5, error: .invalidPropertyValue(.topicAlias)),
        Row(name: "UTF-8 payload that is not UTF-8", bytes: h("30 08 00 01 't' 02 01 01 FF FE"), version: v5, error: .payloadFormatInvalid),
        Row(name: "truncated user property value", bytes: h("30 0C 00 01 't' 08 26 00 01 'k' 00 05 'vv'"), version: v5,
            error: .truncated(field: "User Property value")),
        Row(name: "invalid UTF-8 in user property", bytes: h("30 0B 00 01 't' 07 26 00 01 'k' 00 01 FF"), version: v5,
            error: .invalidUTF8(field: "User Property value")),
        // CONNECT
        Row(name: "bad protocol name", bytes: h("10 0F 00 04 'MQTX' 04 02 00 3C 00 03 'abc'"), version: nil, error: .invalidProtocolName("MQTX")),
        Row(name: "protocol level 6", bytes: h("10 0F 00 04 'MQTT' 06 02 00 3C 00 03 'abc'"), version: nil, error: .unsupportedProtocolVersion(6)),
        Row(name: "MQIsdp with level 4", bytes: h("10 11 00 06 'MQIsdp' 04 02 00 3C 00 03 'abc'"), version: nil, error: .unsupportedProtocolVersion(4)),
        Row(name: "reserved CONNECT flag", bytes: h("10 0F 00 04 'MQTT' 04 03 00 3C 00 03 'abc'"), version: nil, error: .reservedConnectFlagSet),
        Row(name: "will QoS without will flag", bytes: h("10 0F 00 04 'MQTT' 04 0A 00 3C 00 03 'abc'"), version: nil, error: .willFieldsWithoutWillFlag),
        Row(name: "will retain without will flag", bytes: h("10 0F 00 04 'MQTT' 04 22 00 3C 00 03 'abc'"), version: nil, error: .willFieldsWithoutWillFlag),
        Row(name: "will QoS 3", bytes: h("10 13 00 04 'MQTT' 04 1E 00 3C 00 01 'a' 00 01 'w' 00 01 'x'"), version: nil, error: .invalidQoS(3)),
        Row(name: "password without user name at 3.1.1", bytes: h("10 10 00 04 'MQTT' 04 42 00 3C 00 01 'a' 00 01 'p'"), version: nil,
            error: .passwordWithoutUserName),
        Row(name: "client id longer than the packet", bytes: h("10 0F 00 04 'MQTT' 04 02 00 3C 00 09 'abc'"), version: nil,
            error: .truncated(field: "client identifier")),
        Row(name: "CONNECT with trailing bytes", bytes: h("10 10 00 04 'MQTT' 04 02 00 3C 00 03 'abc' 00"), version: nil,
            error: .unexpectedTrailingBytes(.connect, count: 1)),
        Row(name: "topic alias in CONNECT", bytes: h("10 13 00 04 'MQTT' 05 02 00 3C 03 23 00 01 00 03 'abc'"), version: nil,
            error: .propertyNotAllowed(.topicAlias, in: .connect)),
        Row(name: "receive maximum twice", bytes: h("10 16 00 04 'MQTT' 05 02 00 3C 06 21 00 05 21 00 05 00 03 'abc'"), version: nil,
            error: .duplicateProperty(.receiveMaximum)),
        Row(name: "receive maximum 0", bytes: h("10 13 00 04 'MQTT' 05 02 00 3C 03 21 00 00 00 03 'abc'"), version: nil,
            error: .invalidPropertyValue(.receiveMaximum)),
        Row(name: "will topic with wildcard", bytes: h("10 13 00 04 'MQTT' 04 06 00 3C 00 01 'a' 00 01 '#' 00 01 'x'"), version: nil,
            error: .invalidTopicName(.wildcardInTopicName)),
        // SUBSCRIBE / UNSUBSCRIBE
        Row(name: "SUBSCRIBE without filters", bytes: h("82 02 00 01"), version: v3, error: .noTopicFilters(.subscribe)),
        Row(name: "UNSUBSCRIBE without filters", bytes: h("A2 02 00 01"), version: v3, error: .noTopicFilters(.unsubscribe)),
        Row(name: "SUBSCRIBE packet id 0", bytes: h("82 06 00 00 00 01 'a' 00"), version: v3, error: .zeroPacketIdentifier(.subscribe)),
        Row(name: "UNSUBSCRIBE packet id 0", bytes: h("A2 05 00 00 00 01 'a'"), version: v3, error: .zeroPacketIdentifier(.unsubscribe)),
        Row(name: "subscription options reserved bits at 3.1.1", bytes: h("82 06 00 01 00 01 'a' 04"), version: v3,
            error: .reservedBitsSet(field: "subscription options")),
        Row(name: "subscription QoS 3", bytes: h("82 06 00 01 00 01 'a' 03"), version: v3, error: .invalidQoS(3)),
        Row(name: "retain handling 3", bytes: h("82 07 00 01 00 00 01 'a' 30"), version: v5, error: .invalidRetainHandling(3)),
        Row(name: "subscription options reserved bits at v5", bytes: h("82 07 00 01 00 00 01 'a' 40"), version: v5,
            error: .reservedBitsSet(field: "subscription options")),
        Row(name: "subscription identifier 0", bytes: h("82 09 00 01 02 0B 00 00 01 'a' 00"), version: v5,
            error: .invalidPropertyValue(.subscriptionIdentifier)),
        Row(name: "two subscription identifiers in SUBSCRIBE", bytes: h("82 0B 00 01 04 0B 01 0B 02 00 01 'a' 00"), version: v5,
            error: .duplicateProperty(.subscriptionIdentifier)),
        Row(name: "SUBSCRIBE filter missing its options byte", bytes: h("82 05 00 01 00 01 'a'"), version: v3,
            error: .truncated(field: "subscription options")),
        // Acknowledgements and the rest
        Row(name: "PUBACK packet id 0", bytes: h("40 02 00 00"), version: v3, error: .zeroPacketIdentifier(.puback)),
        Row(name: "PUBACK v5 reason code 0x05", bytes: h("40 03 00 01 05"), version: v5, error: .invalidReasonCode(5, .puback)),
        Row(name: "PUBREL v5 reason code 0x10", bytes: h("62 03 00 01 10"), version: v5, error: .invalidReasonCode(0x10, .pubrel)),
        Row(name: "PUBACK at 3.1.1 with a reason code", bytes: h("40 03 00 01 00"), version: v3, error: .unexpectedTrailingBytes(.puback, count: 1)),
        Row(name: "PINGREQ with a body", bytes: h("C0 01 00"), version: v3, error: .unexpectedTrailingBytes(.pingreq, count: 1)),
        Row(name: "DISCONNECT at 3.1.1 with a body", bytes: h("E0 01 00"), version: v3, error: .unexpectedTrailingBytes(.disconnect, count: 1)),
        Row(name: "DISCONNECT v5 reason code 0x05", bytes: h("E0 01 05"), version: v5, error: .invalidReasonCode(5, .disconnect)),
        Row(name: "CONNACK reserved acknowledge flags", bytes: h("20 02 02 00"), version: v3, error: .reservedBitsSet(field: "connect acknowledge flags")),
        Row(name: "CONNACK 3.1.1 return code 6", bytes: h("20 02 00 06"), version: v3, error: .invalidReasonCode(6, .connack)),
        Row(name: "SUBACK 3.1.1 return code 3", bytes: h("90 03 00 01 03"), version: v3, error: .invalidReasonCode(3, .suback)),
        Row(name: "AUTH reason code 0x87", bytes: h("F0 01 87"), version: v5, error: .invalidReasonCode(0x87, .auth)),
        Row(name: "reason string in PUBLISH", bytes: h("30 09 00 01 't' 05 1F 00 02 'hi'"), version: v5, error: .propertyNotAllowed(.reasonString, in: .publish)),
    ]

    @Test(arguments: rows)
    func rejects(_ row: Row) {
        #expect(throws: row.error) {
            try decodeOne(row.bytes, row.version, maximumPacketSize: row.maximumPacketSize)
        }
    }

    @Test func tableIsLargeEnough() {
        #expect(Self.rows.count >= 40)
    }

    @Test func errorsCarryTheirReasonCodes() {
        #expect(MQTTCodecError.malformedVariableByteInteger.reasonCode == .malformedPacket)
        #expect(MQTTCodecError.invalidQoS(3).reasonCode == .malformedPacket)
        #expect(MQTTCodecError.duplicateProperty(.topicAlias).reasonCode == .protocolError)
        #expect(MQTTCodecError.packetTooLarge(size: 2, maximum: 1).reasonCode == .packetTooLarge)
        #expect(MQTTCodecError.payloadFormatInvalid.reasonCode == .payloadFormatInvalid)
        #expect(MQTTCodecError.unsupportedProtocolVersion(6).reasonCode == .unsupportedProtocolVersion)
        #expect(MQTTCodecError.invalidTopicName(.empty).reasonCode == .topicNameInvalid)
        #expect(MQTTCodecError.invalidUTF8(field: "x").reasonCode.rawValue == 0x81)
    }

    @Test func sizeLimitIsCheckedBeforeTheBodyArrives() throws {
        // Only the fixed header of a 10 MB packet: refused at once, without waiting for the body.
        var partial = ByteBuffer(bytes: h("30 80 AD E2 04"))
        #expect(throws: MQTTCodecError.packetTooLarge(size: 10_000_005, maximum: 1024)) {
            _ = try MQTTPacket.decode(from: &partial, version: .v3_1_1, maximumPacketSize: 1024)
        }
    }

    @Test func incompleteInputIsNotAnError() throws {
        for prefix in [h(""), h("30"), h("30 FF"), h("30 FF FF FF"), h("30 07 00 03 'a/'")] {
            var buf = ByteBuffer(bytes: prefix)
            #expect(try MQTTPacket.decode(from: &buf, version: .v3_1_1, maximumPacketSize: 1 << 20) == nil)
            #expect(buf.readableBytes == prefix.count)
        }
    }
}

@Suite struct TopicValidationTests {
    @Test(arguments: [
        ("", TopicValidationError.empty),
        ("a/#/b", .hashNotLast),
        ("a#", .hashNotLast),
        ("#/", .hashNotLast),
        ("a+", .plusNotWholeLevel),
        ("+a/b", .plusNotWholeLevel),
        ("a/b+/c", .plusNotWholeLevel),
        ("$share/g", .invalidSharedSubscription),
        ("$share//a", .invalidSharedSubscription),
        ("$share/g+/a", .invalidSharedSubscription),
        ("$share/g/", .invalidSharedSubscription),
        ("$share/g/a#", .hashNotLast),
    ])
    func invalidFilters(_ filter: String, _ error: TopicValidationError) {
        #expect(throws: error) { try Topic.validateFilter(filter) }
    }

    @Test(arguments: ["#", "+", "a/+", "+/+", "a/#", "/", "//", "a//b", "+/#", "$SYS/#", "$share/g/a/+", "$share/g/#", "sport/tennis/+/score"])
    func validFilters(_ filter: String) throws {
        try Topic.validateFilter(filter)
    }

    @Test func topicNames() throws {
        try Topic.validateName("a/b")
        try Topic.validateName("/")
        try Topic.validateName("$SYS/x")
        #expect(throws: TopicValidationError.empty) { try Topic.validateName("") }
        #expect(throws: TopicValidationError.wildcardInTopicName) { try Topic.validateName("a/+") }
        #expect(throws: TopicValidationError.tooLong(bytes: 65_536)) {
            try Topic.validateName(String(repeating: "a", count: 65_536))
        }
        #expect(throws: TopicValidationError.tooLong(bytes: 65_536)) {
            try Topic.validateFilter(String(repeating: "a", count: 65_536))
        }
    }

    @Test func sharedSubscriptionParts() {
        let s = SharedSubscription("$share/group/a/+")
        #expect(s?.group == "group")
        #expect(s?.filter == "a/+")
        #expect(SharedSubscription("a/b") == nil)
    }
}
