import MartletMQTT
import NIOCore
import MartletTestSupport
import Testing

/// Random packets, encoded then decoded, must come back equal.
@Suite struct RandomizedRoundTripTests {
    struct Generator {
        var rng: SplitMix64
        let version: ProtocolVersion

        mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
        mutating func bool() -> Bool { Bool.random(using: &rng) }
        mutating func qos() -> QoS { QoS(rawValue: UInt8(int(0...2)))! }
        mutating func id() -> UInt16 { UInt16(int(1...65_535)) }

        mutating func string(_ maxLength: Int = 12) -> String {
            let alphabet = Array("abcXYZ019 _-é€😀$")
            return String((0..<int(0...maxLength)).map { _ in alphabet[int(0...alphabet.count - 1)] })
        }
        mutating func topic() -> String {
            (0..<int(1...4)).map { _ in String(string(6).filter { $0 != "/" }) }.joined(separator: "/") + "x"
        }
        mutating func bytes(_ max: Int = 64) -> ByteBuffer {
            ByteBuffer(bytes: (0..<int(0...max)).map { _ in UInt8(int(0...255)) })
        }

        mutating func properties(_ context: PropertyContext) -> Properties {
            guard version == .v5 else { return [] }
            var p = Properties()
            for id in PropertyIdentifier.allCases.shuffled(using: &rng) where id.isAllowed(in: context) && bool() {
                switch id.wireType {
                case .byte: p.set(id, .byte(UInt8(int(0...1))))
                case .twoByteInteger: p.set(id, .twoByteInteger(UInt16(int(1...65_535))))
                case .fourByteInteger: p.set(id, .fourByteInteger(UInt32(int(1...Int(UInt32.max)))))
                case .variableByteInteger: p.set(id, .variableByteInteger(UInt32(int(1...268_435_455))))
                case .utf8String: p.set(id, .string(string()))
                case .binaryData: p.set(id, .binary(bytes(16)))
                case .utf8StringPair:
                    for _ in 0..<int(1...3) { p.appendUserProperty(string(), string()) }
                }
            }
            // A random payload is not UTF-8; keep the indicator truthful.
            if p.payloadFormatIndicator == 1 { p.payloadFormatIndicator = 0 }
            return p
        }

        mutating func reason(_ allowed: [UInt8]) -> ReasonCode {
            version == .v5 ? ReasonCode(allowed[int(0...allowed.count - 1)]) : .success
        }

        mutating func packet(_ type: PacketType) -> MQTTPacket {
            switch type {
            case .connect:
                var will: Will?
                if bool() { will = Will(topic: topic(), payload: bytes(), qos: qos(), retain: bool(), properties: properties(.will)) }
                let user: String? = bool() ? string() : nil
                let pass: ByteBuffer? = (user != nil || version == .v5) && bool() ? bytes(8) : nil
                return .connect(.init(protocolVersion: version, cleanStart: bool(), keepAlive: UInt16(int(0...65_535)),
                                      clientIdentifier: string(23), will: will, username: user, password: pass,
                                      properties: properties(.connect)))
            case .connack:
                return .connack(.init(sessionPresent: bool(), reasonCode: version == .v5 ? reason([0x00, 0x80, 0x86, 0x9F]) : ReasonCode(UInt8(int(0...5))),
                                      properties: properties(.connack)))
            case .publish:
                let q = qos()
                var props = properties(.publish)
                if version == .v5 { props.set(.topicAlias, nil) }
                return .publish(.init(topic: topic(), payload: bytes(), qos: q, retain: bool(), dup: q != .atMostOnce && bool(),
                                      packetIdentifier: q == .atMostOnce ? nil : id(), properties: props))
            case .puback: return .puback(.init(packetIdentifier: id(), reasonCode: reason([0x00, 0x10, 0x80, 0x97]), properties: properties(.puback)))
            case .pubrec: return .pubrec(.init(packetIdentifier: id(), reasonCode: reason([0x00, 0x10, 0x87]), properties: properties(.pubrec)))
            case .pubrel: return .pubrel(.init(packetIdentifier: id(), reasonCode: reason([0x00, 0x92]), properties: properties(.pubrel)))
            case .pubcomp: return .pubcomp(.init(packetIdentifier: id(), reasonCode: reason([0x00, 0x92]), properties: properties(.pubcomp)))
            case .subscribe:
                let subs = (0..<int(1...4)).map { _ in
                    Subscription(topicFilter: topic(), options: version == .v5
                        ? .init(qos: qos(), noLocal: bool(), retainAsPublished: bool(), retainHandling: .init(rawValue: UInt8(int(0...2)))!)
                        : .init(qos: qos()))
                }
                return .subscribe(.init(packetIdentifier: id(), subscriptions: subs, properties: properties(.subscribe)))
            case .suback:
                let codes = (0..<int(1...4)).map { _ in version == .v5 ? reason([0x00, 0x01, 0x02, 0x80, 0x8F, 0xA2]) : ReasonCode([0, 1, 2, 0x80][int(0...3)]) }
                return .suback(.init(packetIdentifier: id(), reasonCodes: codes, properties: properties(.suback)))
            case .unsubscribe:
                return .unsubscribe(.init(packetIdentifier: id(), topicFilters: (0..<int(1...4)).map { _ in topic() }, properties: properties(.unsubscribe)))
            case .unsuback:
                let codes = version == .v5 ? (0..<int(1...4)).map { _ in reason([0x00, 0x11, 0x80]) } : []
                return .unsuback(.init(packetIdentifier: id(), reasonCodes: codes, properties: properties(.unsuback)))
            case .pingreq: return .pingreq
            case .pingresp: return .pingresp
            case .disconnect: return .disconnect(.init(reasonCode: reason([0x00, 0x04, 0x8E, 0x81]), properties: properties(.disconnect)))
            case .auth: return .auth(.init(reasonCode: reason([0x00, 0x18, 0x19]), properties: properties(.auth)))
            }
        }
    }

    @Test(arguments: [ProtocolVersion.v3_1_1, .v5])
    func randomPacketsRoundTrip(_ version: ProtocolVersion) throws {
        var g = Generator(rng: SplitMix64(seed: 0x4D41_524C_4554 &+ UInt64(version.rawValue)), version: version)
        let types = PacketType.allCases.filter { version == .v5 || $0 != .auth }
        for i in 0..<3_000 {
            let packet = g.packet(types[i % types.count])
            let bytes = try encode(packet, version)
            let decoded = try decodeOne(bytes, version)
            #expect(decoded == packet, "case \(i): \(packet)")
            if decoded != packet { return }
        }
    }
}
