import NIOCore

/// Wire primitives of MQTT section 1.5 over `ByteBuffer`.
///
/// Readers consume from a buffer that holds exactly one packet's body, so running
/// out of bytes is always a truncated field, never "wait for more".
extension ByteBuffer {
    // MARK: Integers

    mutating func readMQTTByte(_ field: String) throws(MQTTCodecError) -> UInt8 {
        guard let v = self.readInteger(as: UInt8.self) else { throw .truncated(field: field) }
        return v
    }

    mutating func readMQTTUInt16(_ field: String) throws(MQTTCodecError) -> UInt16 {
        guard let v = self.readInteger(endianness: .big, as: UInt16.self) else { throw .truncated(field: field) }
        return v
    }

    mutating func readMQTTUInt32(_ field: String) throws(MQTTCodecError) -> UInt32 {
        guard let v = self.readInteger(endianness: .big, as: UInt32.self) else { throw .truncated(field: field) }
        return v
    }

    /// Reads a variable byte integer that must be complete inside this buffer.
    mutating func readMQTTVariableByteInteger(_ field: String) throws(MQTTCodecError) -> UInt32 {
        switch try VariableByteInteger.peek(self, at: self.readerIndex) {
        case .none:
            throw .truncated(field: field)
        case .some(let (value, length)):
            self.moveReaderIndex(forwardBy: length)
            return value
        }
    }

    @discardableResult
    mutating func writeMQTTVariableByteInteger(_ value: Int) -> Int {
        precondition(value >= 0 && value <= VariableByteInteger.maximum)
        var v = value
        var written = 0
        repeat {
            var byte = UInt8(v & 0x7F)
            v >>= 7
            if v > 0 { byte |= 0x80 }
            self.writeInteger(byte)
            written += 1
        } while v > 0
        return written
    }

    // MARK: Strings and binary data

    /// Reads a UTF-8 string under MQTT-1.5.4: well-formed (so no surrogates) and no U+0000.
    mutating func readMQTTString(_ field: String) throws(MQTTCodecError) -> String {
        let length = Int(try self.readMQTTUInt16(field))
        guard self.readableBytes >= length else { throw .truncated(field: field) }
        let string = try self.withUnsafeReadableBytes { (bytes) throws(MQTTCodecError) -> String in
            try MQTTString.decode(UnsafeRawBufferPointer(rebasing: bytes[0..<length]), field: field)
        }
        self.moveReaderIndex(forwardBy: length)
        return string
    }

    mutating func readMQTTBinary(_ field: String) throws(MQTTCodecError) -> ByteBuffer {
        let length = Int(try self.readMQTTUInt16(field))
        guard let slice = self.readSlice(length: length) else { throw .truncated(field: field) }
        return slice
    }

    mutating func writeMQTTString(_ string: String, _ field: @autoclosure () -> String) throws(MQTTCodecError) {
        let count = string.utf8.count
        guard count <= Int(UInt16.max) else { throw .valueTooLarge(field: field()) }
        self.writeInteger(UInt16(count))
        self.writeString(string)
    }

    mutating func writeMQTTBinary(_ data: ByteBuffer, _ field: @autoclosure () -> String) throws(MQTTCodecError) {
        guard data.readableBytes <= Int(UInt16.max) else { throw .valueTooLarge(field: field()) }
        self.writeInteger(UInt16(data.readableBytes))
        self.writeImmutableBuffer(data)
    }
}

/// Variable byte integers (MQTT-1.5.5): 7 bits a byte, at most 4 bytes.
public enum VariableByteInteger {
    public static let maximum = 268_435_455

    /// Decodes the integer at `index` without moving the reader.
    /// Returns nil when the buffer ends before the integer does.
    public static func peek(_ buffer: ByteBuffer, at index: Int) throws(MQTTCodecError) -> (value: UInt32, length: Int)? {
        var value: UInt32 = 0
        var shift: UInt32 = 0
        for i in 0..<4 {
            guard let byte = buffer.getInteger(at: index + i, as: UInt8.self) else { return nil }
            value |= UInt32(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return (value, i + 1) }
            shift += 7
        }
        throw .malformedVariableByteInteger
    }

    public static func encodedLength(_ value: Int) -> Int {
        switch value {
        case ..<128: return 1
        case ..<16_384: return 2
        case ..<2_097_152: return 3
        default: return 4
        }
    }
}

/// UTF-8 string rules of MQTT-1.5.4.
public enum MQTTString {
    /// Validates and builds a String; ASCII without NUL takes the fast path.
    public static func decode(_ bytes: UnsafeRawBufferPointer, field: String) throws(MQTTCodecError) -> String {
        var ascii = true
        for byte in bytes {
            if byte == 0 { throw .nullCharacter(field: field) }
            if byte & 0x80 != 0 { ascii = false }
        }
        if ascii { return String(decoding: bytes, as: UTF8.self) }
        guard let s = String(validating: bytes, as: UTF8.self) else { throw .invalidUTF8(field: field) }
        return s
    }

    /// Whether a payload marked with payload format indicator 1 is well-formed UTF-8.
    /// (U+0000 is allowed here: MQTT-1.5.4-2 governs strings in packets, not payloads.)
    public static func isWellFormedUTF8(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { String(validating: $0, as: UTF8.self) != nil }
    }

    /// Encoded length of a string field: two length bytes and the UTF-8 bytes.
    static func encodedLength(_ s: String) -> Int { 2 + s.utf8.count }
}
