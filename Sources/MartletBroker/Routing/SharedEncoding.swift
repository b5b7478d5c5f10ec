import MartletMQTT
import NIOCore

/// Encodes a QoS 0 message once per wire format (3.1/3.1.1 share one, v5 has properties)
/// and RETAIN flag during one route, so every subscriber of the same kind receives the
/// same bytes. Four optional slots rather than a collection: nothing allocated but the bytes.
struct SharedEncoding {
    var v3: ByteBuffer?
    var v3Retained: ByteBuffer?
    var v5: ByteBuffer?
    var v5Retained: ByteBuffer?
    /// v5 encodings with a topic alias, by what the alias table said and RETAIN (few per route).
    var withAliases: [(use: OutgoingTopicAliases.Use, retain: Bool, bytes: ByteBuffer)] = []

    /// The v5 bytes for a subscriber whose alias table says `use` for this topic.
    mutating func aliased(_ delivery: Delivery, _ use: OutgoingTopicAliases.Use, allocator: ByteBufferAllocator,
                          now: @autoclosure () -> NIODeadline) -> ByteBuffer {
        if let hit = withAliases.first(where: { $0.use == use && $0.retain == delivery.retain }) { return hit.bytes }
        var packet = Self.publishPacket(delivery, version: .v5, packetIdentifier: nil, dup: false, now: now())
        switch use {
        case .none: break
        case .assign(let a): packet.properties.topicAlias = a
        case .alias(let a):
            packet.properties.topicAlias = a
            packet.topic = ""
        }
        var buffer = allocator.buffer(capacity: packet.bodyLength(version: .v5) + 5)
        // Cannot fail: the topic was validated on the way in and QoS 0 needs no packet id.
        try? MQTTPacket.write(packet, to: &buffer, version: .v5)
        withAliases.append((use, delivery.retain, buffer))
        return buffer
    }

    mutating func buffer(for delivery: Delivery, version: ProtocolVersion, allocator: ByteBufferAllocator,
                         now: @autoclosure () -> NIODeadline) -> ByteBuffer {
        switch (version == .v5, delivery.retain) {
        case (false, false): return Self.cached(&v3, delivery, version, allocator, now)
        case (false, true): return Self.cached(&v3Retained, delivery, version, allocator, now)
        case (true, false): return Self.cached(&v5, delivery, version, allocator, now)
        case (true, true): return Self.cached(&v5Retained, delivery, version, allocator, now)
        }
    }

    static func cached(_ slot: inout ByteBuffer?, _ delivery: Delivery, _ version: ProtocolVersion, _ allocator: ByteBufferAllocator,
                               _ now: () -> NIODeadline) -> ByteBuffer {
        if let buffer = slot { return buffer }
        let packet = publishPacket(delivery, version: version, packetIdentifier: nil, dup: false, now: now())
        var buffer = allocator.buffer(capacity: packet.bodyLength(version: version) + 5)
        // Cannot fail: the topic was validated on the way in and QoS 0 needs no packet id.
        try? MQTTPacket.write(packet, to: &buffer, version: version)
        slot = buffer
        return buffer
    }

    static func publishPacket(_ delivery: Delivery, version: ProtocolVersion, packetIdentifier: UInt16?, dup: Bool,
                              now: @autoclosure () -> NIODeadline) -> PublishPacket {
        var properties = version == .v5 ? delivery.message.properties : Properties()
        if version == .v5 {
            if let expiresAt = delivery.message.expiresAt {
                // The interval received minus the time the message waited here (MQTT-3.3.2-6),
                // rounded up so a message sent at once keeps its interval.
                let left = max(0, (expiresAt - now()).nanoseconds)
                properties.messageExpiryInterval = UInt32(clamping: max(1, (left + 999_999_999) / 1_000_000_000))
            }
            for id in delivery.subscriptionIdentifiers {
                properties.elements.append(Property(.subscriptionIdentifier, .variableByteInteger(id)))
            }
        }
        return PublishPacket(
            topic: delivery.message.topic, payload: delivery.message.payload, qos: delivery.qos,
            retain: delivery.retain, dup: dup, packetIdentifier: packetIdentifier, properties: properties)
    }
}
