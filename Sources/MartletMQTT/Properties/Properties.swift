import NIOCore

/// One v5 property value, tagged by its wire type.
public enum PropertyValue: Sendable, Hashable {
    case byte(UInt8)
    case twoByteInteger(UInt16)
    case fourByteInteger(UInt32)
    case variableByteInteger(UInt32)
    case string(String)
    case binary(ByteBuffer)
    case stringPair(String, String)

    var wireType: PropertyIdentifier.WireType {
        switch self {
        case .byte: return .byte
        case .twoByteInteger: return .twoByteInteger
        case .fourByteInteger: return .fourByteInteger
        case .variableByteInteger: return .variableByteInteger
        case .string: return .utf8String
        case .binary: return .binaryData
        case .stringPair: return .utf8StringPair
        }
    }
}

public struct Property: Sendable, Hashable {
    public var identifier: PropertyIdentifier
    public var value: PropertyValue

    public init(_ identifier: PropertyIdentifier, _ value: PropertyValue) {
        precondition(identifier.wireType == value.wireType, "\(identifier) cannot hold \(value)")
        self.identifier = identifier
        self.value = value
    }
}

/// A v5 property list in wire order. User properties keep their order and repeats.
///
/// An empty list holds no storage, so packets without properties (all of 3.1.1)
/// cost nothing for having this field.
public struct Properties: Sendable, Hashable, ExpressibleByArrayLiteral {
    public var elements: [Property]

    public init() { self.elements = [] }
    public init(_ elements: [Property]) { self.elements = elements }
    public init(arrayLiteral elements: Property...) { self.elements = elements }

    public var isEmpty: Bool { elements.isEmpty }

    public func first(_ id: PropertyIdentifier) -> PropertyValue? {
        for p in elements where p.identifier == id { return p.value }
        return nil
    }

    /// Replaces the first value of `id` (or appends it); nil removes every value of `id`.
    public mutating func set(_ id: PropertyIdentifier, _ value: PropertyValue?) {
        guard let value else {
            elements.removeAll { $0.identifier == id }
            return
        }
        if let i = elements.firstIndex(where: { $0.identifier == id }) {
            elements[i] = Property(id, value)
        } else {
            elements.append(Property(id, value))
        }
    }

    public var userProperties: [(name: String, value: String)] {
        elements.compactMap {
            if case .stringPair(let k, let v) = $0.value { return (k, v) }
            return nil
        }
    }

    public mutating func appendUserProperty(_ name: String, _ value: String) {
        elements.append(Property(.userProperty, .stringPair(name, value)))
    }

    /// Removes the properties that a broker must not forward from a PUBLISH as received
    /// (topic alias is per connection; subscription identifiers are per subscriber).
    public mutating func removeAll(_ ids: Set<PropertyIdentifier>) {
        elements.removeAll { ids.contains($0.identifier) }
    }

    // MARK: Typed accessors

    private func u8(_ id: PropertyIdentifier) -> UInt8? {
        if case .byte(let v) = first(id) { return v }
        return nil
    }
    private func u16(_ id: PropertyIdentifier) -> UInt16? {
        if case .twoByteInteger(let v) = first(id) { return v }
        return nil
    }
    private func u32(_ id: PropertyIdentifier) -> UInt32? {
        if case .fourByteInteger(let v) = first(id) { return v }
        return nil
    }
    private func string(_ id: PropertyIdentifier) -> String? {
        if case .string(let v) = first(id) { return v }
        return nil
    }
    private func binary(_ id: PropertyIdentifier) -> ByteBuffer? {
        if case .binary(let v) = first(id) { return v }
        return nil
    }

    public var payloadFormatIndicator: UInt8? {
        get { u8(.payloadFormatIndicator) }
        set { set(.payloadFormatIndicator, newValue.map { .byte($0) }) }
    }
    public var messageExpiryInterval: UInt32? {
        get { u32(.messageExpiryInterval) }
        set { set(.messageExpiryInterval, newValue.map { .fourByteInteger($0) }) }
    }
    public var contentType: String? {
        get { string(.contentType) }
        set { set(.contentType, newValue.map { .string($0) }) }
    }
    public var responseTopic: String? {
        get { string(.responseTopic) }
        set { set(.responseTopic, newValue.map { .string($0) }) }
    }
    public var correlationData: ByteBuffer? {
        get { binary(.correlationData) }
        set { set(.correlationData, newValue.map { .binary($0) }) }
    }
    public var subscriptionIdentifiers: [UInt32] {
        elements.compactMap {
            if $0.identifier == .subscriptionIdentifier, case .variableByteInteger(let v) = $0.value { return v }
            return nil
        }
    }
    public var sessionExpiryInterval: UInt32? {
        get { u32(.sessionExpiryInterval) }
        set { set(.sessionExpiryInterval, newValue.map { .fourByteInteger($0) }) }
    }
    public var assignedClientIdentifier: String? {
        get { string(.assignedClientIdentifier) }
        set { set(.assignedClientIdentifier, newValue.map { .string($0) }) }
    }
    public var serverKeepAlive: UInt16? {
        get { u16(.serverKeepAlive) }
        set { set(.serverKeepAlive, newValue.map { .twoByteInteger($0) }) }
    }
    public var authenticationMethod: String? {
        get { string(.authenticationMethod) }
        set { set(.authenticationMethod, newValue.map { .string($0) }) }
    }
    public var authenticationData: ByteBuffer? {
        get { binary(.authenticationData) }
        set { set(.authenticationData, newValue.map { .binary($0) }) }
    }
    public var requestProblemInformation: UInt8? {
        get { u8(.requestProblemInformation) }
        set { set(.requestProblemInformation, newValue.map { .byte($0) }) }
    }
    public var willDelayInterval: UInt32? {
        get { u32(.willDelayInterval) }
        set { set(.willDelayInterval, newValue.map { .fourByteInteger($0) }) }
    }
    public var requestResponseInformation: UInt8? {
        get { u8(.requestResponseInformation) }
        set { set(.requestResponseInformation, newValue.map { .byte($0) }) }
    }
    public var responseInformation: String? {
        get { string(.responseInformation) }
        set { set(.responseInformation, newValue.map { .string($0) }) }
    }
    public var serverReference: String? {
        get { string(.serverReference) }
        set { set(.serverReference, newValue.map { .string($0) }) }
    }
    public var reasonString: String? {
        get { string(.reasonString) }
        set { set(.reasonString, newValue.map { .string($0) }) }
    }
    public var receiveMaximum: UInt16? {
        get { u16(.receiveMaximum) }
        set { set(.receiveMaximum, newValue.map { .twoByteInteger($0) }) }
    }
    public var topicAliasMaximum: UInt16? {
        get { u16(.topicAliasMaximum) }
        set { set(.topicAliasMaximum, newValue.map { .twoByteInteger($0) }) }
    }
    public var topicAlias: UInt16? {
        get { u16(.topicAlias) }
        set { set(.topicAlias, newValue.map { .twoByteInteger($0) }) }
    }
    public var maximumQoS: UInt8? {
        get { u8(.maximumQoS) }
        set { set(.maximumQoS, newValue.map { .byte($0) }) }
    }
    public var retainAvailable: UInt8? {
        get { u8(.retainAvailable) }
        set { set(.retainAvailable, newValue.map { .byte($0) }) }
    }
    public var maximumPacketSize: UInt32? {
        get { u32(.maximumPacketSize) }
        set { set(.maximumPacketSize, newValue.map { .fourByteInteger($0) }) }
    }
    public var wildcardSubscriptionAvailable: UInt8? {
        get { u8(.wildcardSubscriptionAvailable) }
        set { set(.wildcardSubscriptionAvailable, newValue.map { .byte($0) }) }
    }
    public var subscriptionIdentifierAvailable: UInt8? {
        get { u8(.subscriptionIdentifierAvailable) }
        set { set(.subscriptionIdentifierAvailable, newValue.map { .byte($0) }) }
    }
    public var sharedSubscriptionAvailable: UInt8? {
        get { u8(.sharedSubscriptionAvailable) }
        set { set(.sharedSubscriptionAvailable, newValue.map { .byte($0) }) }
    }
}

// MARK: Wire format

extension Properties {
    /// Bytes of the property list without its length prefix.
    public var contentLength: Int {
        var n = 0
        for p in elements {
            n += 1
            switch p.value {
            case .byte: n += 1
            case .twoByteInteger: n += 2
            case .fourByteInteger: n += 4
            case .variableByteInteger(let v): n += VariableByteInteger.encodedLength(Int(v))
            case .string(let s): n += MQTTString.encodedLength(s)
            case .binary(let b): n += 2 + b.readableBytes
            case .stringPair(let k, let v): n += MQTTString.encodedLength(k) + MQTTString.encodedLength(v)
            }
        }
        return n
    }

    /// Bytes of the property list with its variable-byte-integer length prefix.
    public var encodedLength: Int {
        if isEmpty { return 1 }
        let c = contentLength
        return VariableByteInteger.encodedLength(c) + c
    }

    package func write(to buffer: inout ByteBuffer) throws(MQTTCodecError) {
        if isEmpty {
            buffer.writeInteger(UInt8(0))
            return
        }
        let length = contentLength
        guard length <= VariableByteInteger.maximum else { throw .valueTooLarge(field: "properties") }
        buffer.writeMQTTVariableByteInteger(length)
        for p in elements {
            buffer.writeInteger(p.identifier.rawValue)
            switch p.value {
            case .byte(let v): buffer.writeInteger(v)
            case .twoByteInteger(let v): buffer.writeInteger(v)
            case .fourByteInteger(let v): buffer.writeInteger(v)
            case .variableByteInteger(let v):
                guard Int(v) <= VariableByteInteger.maximum else { throw .valueTooLarge(field: "\(p.identifier)") }
                buffer.writeMQTTVariableByteInteger(Int(v))
            case .string(let s): try buffer.writeMQTTString(s, "\(p.identifier)")
            case .binary(let b): try buffer.writeMQTTBinary(b, "\(p.identifier)")
            case .stringPair(let k, let v):
                try buffer.writeMQTTString(k, "User Property name")
                try buffer.writeMQTTString(v, "User Property value")
            }
        }
    }

    /// Reads a length-prefixed property list and checks it against `context`.
    package static func read(from buffer: inout ByteBuffer, context: PropertyContext) throws(MQTTCodecError) -> Properties {
        let length = Int(try buffer.readMQTTVariableByteInteger("property length"))
        if length == 0 { return Properties() }
        guard var slice = buffer.readSlice(length: length) else { throw .truncated(field: "properties") }
        var result = Properties()
        var seen: UInt64 = 0
        while slice.readableBytes > 0 {
            let rawID = try slice.readMQTTVariableByteInteger("property identifier")
            guard rawID < 256, let id = PropertyIdentifier(rawValue: UInt8(rawID)) else {
                throw .unknownProperty(rawID)
            }
            guard id.isAllowed(in: context) else { throw .propertyNotAllowed(id, in: context) }
            let bit: UInt64 = 1 << UInt64(id.rawValue)
            if seen & bit != 0 && !id.mayRepeat(in: context) { throw .duplicateProperty(id) }
            seen |= bit
            let field = id.description
            let value: PropertyValue
            switch id.wireType {
            case .byte:
                let v = try slice.readMQTTByte(field)
                // Every byte-valued property is a boolean or, for Maximum QoS, 0 or 1.
                guard v <= 1 else { throw .invalidPropertyValue(id) }
                value = .byte(v)
            case .twoByteInteger:
                let v = try slice.readMQTTUInt16(field)
                if v == 0 && (id == .receiveMaximum || id == .topicAlias) { throw .invalidPropertyValue(id) }
                value = .twoByteInteger(v)
            case .fourByteInteger:
                let v = try slice.readMQTTUInt32(field)
                if v == 0 && id == .maximumPacketSize { throw .invalidPropertyValue(id) }
                value = .fourByteInteger(v)
            case .variableByteInteger:
                let v = try slice.readMQTTVariableByteInteger(field)
                if v == 0 && id == .subscriptionIdentifier { throw .invalidPropertyValue(id) }
                value = .variableByteInteger(v)
            case .utf8String:
                value = .string(try slice.readMQTTString(field))
            case .binaryData:
                value = .binary(try slice.readMQTTBinary(field))
            case .utf8StringPair:
                let k = try slice.readMQTTString("User Property name")
                let v = try slice.readMQTTString("User Property value")
                value = .stringPair(k, v)
            }
            result.elements.append(Property(identifier: id, value: value))
        }
        return result
    }
}

extension Property {
    /// Unchecked init for the decoder, which already matched the wire type.
    fileprivate init(identifier: PropertyIdentifier, value: PropertyValue) {
        self.identifier = identifier
        self.value = value
    }
}
