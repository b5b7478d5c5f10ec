/// How MQTT topics and filters become NATS subjects (and retained-bucket keys).
///
/// A topic `a/b` published at QoS 0 goes to `mqtt.0.a.b`; at QoS 1 or 2 to `mqtts.a.b`, which
/// the stream stores and, once stored, publishes again on `mqtt.1.a.b` (the nodes follow
/// `mqtt.0` and `mqtt.1`: a QoS 1/2 message reaches another node only once it is stored).
/// Each topic level is one NATS token: letters, digits, `-` and `_` stay as they are; every
/// other byte (`.`, space, `*`, `>`, `$`, `=`, non-ASCII …) becomes `=` and two hex digits,
/// and an empty level is `=` alone. The same tokens, joined by
/// `.`, are the keys of the retained bucket (JetStream keys allow `=` too).
///
/// A filter subscribes `mqtt.*.` and its levels, `+` as `*` and `#` as `>`; since MQTT's `a/#`
/// also matches `a`, it is two subjects, `…a` and `…a.>`. NATS matches at least what MQTT
/// does; where it matches more (a leading wildcard and a `$` topic, MQTT-4.7.2-1), the
/// receiving node's own trie decides, as it does for every message.
public enum ClusterSubjects {
    /// The subject a node follows for `topic`: `stored` for QoS 1/2 (as the stream publishes
    /// them again).
    public static func subject(topic: String, stored: Bool) -> String {
        var out = stored ? "mqtt.1." : "mqtt.0."
        appendTokens(of: topic, to: &out)
        return out
    }

    /// The stream's subject for `topic`: where a QoS 1/2 message is published to be stored.
    public static func storedSubject(topic: String) -> String {
        var out = "mqtts."
        appendTokens(of: topic, to: &out)
        return out
    }

    /// The retained bucket's key of `topic`.
    public static func key(topic: String) -> String {
        var out = ""
        appendTokens(of: topic, to: &out)
        return out
    }

    /// The subjects that carry every message `filter` matches.
    public static func subjects(filter: String) -> [String] {
        var out = "mqtt.*"
        let levels = filter.split(separator: "/", omittingEmptySubsequences: false)
        for (i, level) in levels.enumerated() {
            switch level {
            case "+":
                out += ".*"
            case "#":
                // `#` is last: the parent level itself, and everything below it.
                return i == 0 ? [out + ".>"] : [out, out + ".>"]
            default:
                out += "."
                appendToken(level, to: &out)
            }
        }
        return [out]
    }

    /// NATS subject matching: `*` one token, `>` one or more tokens at the end.
    public static func matches(pattern: String, subject: String) -> Bool {
        var p = pattern.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)[...]
        var s = subject.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)[...]
        while let token = p.popFirst() {
            if token.elementsEqual(">".utf8) { return !s.isEmpty }
            guard let level = s.popFirst(), token.elementsEqual("*".utf8) || token.elementsEqual(level) else { return false }
        }
        return s.isEmpty
    }

    /// The topic of a subject made by `subject(topic:stored:)` or `storedSubject(topic:)`;
    /// nil for anything else.
    public static func topic(subject: String) -> String? {
        if subject.hasPrefix("mqtts.") { return topic(key: String(subject.dropFirst(6))) }
        let utf8 = subject.utf8
        guard utf8.count > 7, subject.hasPrefix("mqtt.") else { return nil }
        let rest = subject.dropFirst(5)
        guard let first = rest.first, first == "0" || first == "1", rest.dropFirst().first == "." else { return nil }
        return topic(key: String(rest.dropFirst(2)))
    }

    /// The topic of a retained bucket key; nil when it is not one this type made.
    public static func topic(key: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(key.utf8.count)
        for token in key.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            if token.startIndex != key.utf8.startIndex { bytes.append(UInt8(ascii: "/")) }
            if token.count == 1 && token.first == UInt8(ascii: "=") { continue }
            guard !token.isEmpty else { return nil }
            var i = token.startIndex
            while i < token.endIndex {
                let b = token[i]
                if b == UInt8(ascii: "=") {
                    let h = token.index(after: i)
                    guard h < token.endIndex, token.index(after: h) < token.endIndex,
                          let hi = hexValue(token[h]), let lo = hexValue(token[token.index(after: h)]) else { return nil }
                    bytes.append(hi << 4 | lo)
                    i = token.index(h, offsetBy: 2)
                } else {
                    guard isPlain(b) else { return nil }
                    bytes.append(b)
                    i = token.index(after: i)
                }
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func appendTokens(of topic: String, to out: inout String) {
        var first = true
        for level in topic.split(separator: "/", omittingEmptySubsequences: false) {
            if !first { out += "." }
            first = false
            appendToken(level, to: &out)
        }
    }

    private static func appendToken(_ level: Substring, to out: inout String) {
        if level.isEmpty {
            out += "="
            return
        }
        if level.utf8.allSatisfy(isPlain) {
            out += level
            return
        }
        var bytes: [UInt8] = []
        for b in level.utf8 {
            if isPlain(b) {
                bytes.append(b)
            } else {
                bytes.append(UInt8(ascii: "="))
                bytes.append(hexDigits[Int(b >> 4)])
                bytes.append(hexDigits[Int(b & 0xF)])
            }
        }
        out += String(decoding: bytes, as: UTF8.self)
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    private static func isPlain(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x5F
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: b - 0x30
        case 0x41...0x46: b - 0x41 + 10
        default: nil
        }
    }
}
