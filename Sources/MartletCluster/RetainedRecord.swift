import MartletBroker
import MartletMQTT
import NIOCore

/// A retained message as the cluster's bucket holds it: the value of its topic's key.
///
/// Layout: version (1), QoS (1), expiry as wall-clock milliseconds or 0 (8), the writing
/// node's run id (2-byte length, UTF-8), the v5 properties (4-byte length, MQTT encoding),
/// then the payload.
struct RetainedRecord: Equatable {
    var qos: QoS
    var expiresAtWall: Int64?
    var writer: String
    var properties: Properties
    var payload: ByteBuffer

    static let version: UInt8 = 1

    func encoded() -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(Self.version)
        buffer.writeInteger(qos.rawValue)
        buffer.writeInteger(expiresAtWall ?? 0)
        buffer.writeInteger(UInt16(writer.utf8.count))
        buffer.writeString(writer)
        var props = ByteBuffer()
        if !properties.isEmpty { try? properties.write(to: &props) }
        buffer.writeInteger(UInt32(props.readableBytes))
        buffer.writeImmutableBuffer(props)
        buffer.writeImmutableBuffer(payload)
        return Array(buffer.readableBytesView)
    }

    init(qos: QoS, expiresAtWall: Int64?, writer: String, properties: Properties, payload: ByteBuffer) {
        self.qos = qos
        self.expiresAtWall = expiresAtWall
        self.writer = writer
        self.properties = properties
        self.payload = payload
    }

    init?(_ bytes: UnsafeRawBufferPointer) {
        var buffer = ByteBuffer(bytes: bytes)
        guard buffer.readInteger(as: UInt8.self) == Self.version,
              let q = buffer.readInteger(as: UInt8.self), let qos = QoS(rawValue: q),
              let expires = buffer.readInteger(as: Int64.self),
              let writerLength = buffer.readInteger(as: UInt16.self),
              let writer = buffer.readString(length: Int(writerLength)),
              let propertiesLength = buffer.readInteger(as: UInt32.self),
              var props = buffer.readSlice(length: Int(propertiesLength)) else { return nil }
        self.qos = qos
        self.expiresAtWall = expires == 0 ? nil : expires
        self.writer = writer
        if props.readableBytes > 0 {
            guard let decoded = try? Properties.read(from: &props, context: .publish) else { return nil }
            self.properties = decoded
        } else {
            self.properties = []
        }
        self.payload = buffer
    }
}
