import NIOCore

/// CONNECT (MQTT 3.1.1 section 3.1, MQTT 5 section 3.1).
public struct ConnectPacket: MQTTPacketBody {
    public static let packetType = PacketType.connect

    public var protocolVersion: ProtocolVersion
    /// 3.1.1 "clean session", v5 "clean start".
    public var cleanStart: Bool
    public var keepAlive: UInt16
    public var clientIdentifier: String
    public var will: Will?
    public var username: String?
    public var password: ByteBuffer?
    public var properties: Properties

    public init(
        protocolVersion: ProtocolVersion = .v3_1_1, cleanStart: Bool = true, keepAlive: UInt16 = 60,
        clientIdentifier: String, will: Will? = nil, username: String? = nil, password: ByteBuffer? = nil,
        properties: Properties = []
    ) {
        self.protocolVersion = protocolVersion
        self.cleanStart = cleanStart
        self.keepAlive = keepAlive
        self.clientIdentifier = clientIdentifier
        self.will = will
        self.username = username
        self.password = password
        self.properties = properties
    }

    var flagsByte: UInt8 {
        var f: UInt8 = 0
        if cleanStart { f |= 0x02 }
        if let will {
            f |= 0x04 | (will.qos.rawValue << 3)
            if will.retain { f |= 0x20 }
        }
        if password != nil { f |= 0x40 }
        if username != nil { f |= 0x80 }
        return f
    }

    public func bodyLength(version: ProtocolVersion) -> Int {
        let v = protocolVersion
        var n = MQTTString.encodedLength(v.protocolName) + 1 + 1 + 2
        if v.hasProperties { n += properties.encodedLength }
        n += MQTTString.encodedLength(clientIdentifier)
        if let will {
            if v.hasProperties { n += will.properties.encodedLength }
            n += MQTTString.encodedLength(will.topic) + 2 + will.payload.readableBytes
        }
        if let username { n += MQTTString.encodedLength(username) }
        if let password { n += 2 + password.readableBytes }
        return n
    }

    public func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(MQTTCodecError) {
        let v = protocolVersion
        try buffer.writeMQTTString(v.protocolName, "protocol name")
        buffer.writeInteger(v.rawValue)
        buffer.writeInteger(flagsByte)
        buffer.writeInteger(keepAlive)
        if v.hasProperties { try properties.write(to: &buffer) }
        try buffer.writeMQTTString(clientIdentifier, "client identifier")
        if let will {
            if v.hasProperties { try will.properties.write(to: &buffer) }
            try buffer.writeMQTTString(will.topic, "will topic")
            try buffer.writeMQTTBinary(will.payload, "will payload")
        }
        if let username { try buffer.writeMQTTString(username, "user name") }
        if let password { try buffer.writeMQTTBinary(password, "password") }
    }

    public static func readBody(flags: UInt8, from body: inout ByteBuffer, version _: ProtocolVersion) throws(MQTTCodecError) -> ConnectPacket {
        let name = try body.readMQTTString("protocol name")
        let level = try body.readMQTTByte("protocol level")
        let version: ProtocolVersion
        switch name {
        case "MQTT":
            guard level == 4 || level == 5 else { throw .unsupportedProtocolVersion(level) }
            version = ProtocolVersion(rawValue: level)!
        case "MQIsdp":
            guard level == 3 else { throw .unsupportedProtocolVersion(level) }
            version = .v3_1
        default:
            throw .invalidProtocolName(name)
        }
        let f = try body.readMQTTByte("connect flags")
        guard f & 0x01 == 0 else { throw .reservedConnectFlagSet }
        let hasWill = f & 0x04 != 0
        let willQoSRaw = (f >> 3) & 0x03
        let willRetain = f & 0x20 != 0
        let hasPassword = f & 0x40 != 0
        let hasUsername = f & 0x80 != 0
        if !hasWill && (willQoSRaw != 0 || willRetain) { throw .willFieldsWithoutWillFlag }
        guard let willQoS = QoS(rawValue: willQoSRaw) else { throw .invalidQoS(willQoSRaw) }
        if version != .v5 && hasPassword && !hasUsername { throw .passwordWithoutUserName }
        let keepAlive = try body.readMQTTUInt16("keep alive")
        let properties = version.hasProperties ? try Properties.read(from: &body, context: .connect) : Properties()
        let clientID = try body.readMQTTString("client identifier")
        var will: Will?
        if hasWill {
            let willProperties = version.hasProperties ? try Properties.read(from: &body, context: .will) : Properties()
            let topic = try body.readMQTTString("will topic")
            do { try Topic.validateName(topic) } catch { throw .invalidTopicName(error) }
            let payload = try body.readMQTTBinary("will payload")
            if willProperties.payloadFormatIndicator == 1 && !MQTTString.isWellFormedUTF8(payload) {
                throw .payloadFormatInvalid
            }
            will = Will(topic: topic, payload: payload, qos: willQoS, retain: willRetain, properties: willProperties)
        }
        let username = hasUsername ? try body.readMQTTString("user name") : nil
        let password = hasPassword ? try body.readMQTTBinary("password") : nil
        try expectEnd(body, .connect)
        return ConnectPacket(
            protocolVersion: version, cleanStart: f & 0x02 != 0, keepAlive: keepAlive, clientIdentifier: clientID,
            will: will, username: username, password: password, properties: properties)
    }
}
