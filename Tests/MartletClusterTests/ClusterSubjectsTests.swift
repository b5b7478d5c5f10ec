@testable import MartletCluster
import MartletBroker
import MartletMQTT
import NIOCore
import Testing

/// MQTT topics and filters as NATS subjects, checked against `Topic.matches` over every topic
/// and filter built from a set of awkward levels.
@Suite struct ClusterSubjectsTests {
    /// NATS subject matching: `*` one token, `>` one or more tokens at the end.
    static func natsMatches(_ pattern: String, _ subject: String) -> Bool {
        let p = pattern.split(separator: ".", omittingEmptySubsequences: false)
        let s = subject.split(separator: ".", omittingEmptySubsequences: false)
        var i = 0
        while i < p.count {
            if p[i] == ">" { return s.count > i }
            guard i < s.count, p[i] == "*" || p[i] == s[i] else { return false }
            i += 1
        }
        return i == s.count
    }

    /// Every character NATS gives a meaning to, plus `$`, the escape character itself, a space,
    /// an empty level and non-ASCII.
    static let levels = ["a", "", ".", "*", ">", " ", "$SYS", "=", "=41", "é", "a.b", "x y", "A-z_0"]

    static var topics: [String] {
        var result = levels
        for a in levels { for b in levels { result.append(a + "/" + b) } }
        for a in ["a", "", "$SYS", "*"] { for b in ["a", ""] { for c in ["a", ">", ""] { result.append("\(a)/\(b)/\(c)") } } }
        return result
    }

    static var filters: [String] {
        var result = ["#", "+", "+/+", "+/#", "a/#", "$SYS/#", "+/a", "a/+/#", "/#", "*/#"]
        for a in levels + ["+"] {
            result.append(a)
            for b in levels + ["+", "#"] { result.append(a + "/" + b) }
        }
        return result
    }

    @Test("A subject decodes back to its topic, for every level shape; subjects and bucket keys use only characters NATS and JetStream keys allow")
    func roundTrip() {
        for topic in Self.topics {
            for stored in [false, true] {
                let subject = ClusterSubjects.subject(topic: topic, stored: stored)
                #expect(ClusterSubjects.topic(subject: subject) == topic, "\(topic) via \(subject)")
                #expect(subject.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0 != "*" && $0 != ">" })
                #expect(subject.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "*") && $0 != UInt8(ascii: ">") })
            }
            #expect(ClusterSubjects.topic(subject: ClusterSubjects.storedSubject(topic: topic)) == topic)
            let key = ClusterSubjects.key(topic: topic)
            #expect(ClusterSubjects.topic(key: key) == topic)
            #expect(key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_=.".contains($0)) }, "\(key)")
        }
        #expect(ClusterSubjects.topic(subject: "mqtt.2.a") == nil)
        #expect(ClusterSubjects.topic(subject: "other.0.a") == nil)
        #expect(ClusterSubjects.topic(key: "a..b") == nil)
        #expect(ClusterSubjects.topic(key: "a=4") == nil)
    }

    @Test("NATS matches every message MQTT matches (no message is lost between nodes), and more only for a leading wildcard on a $ topic, which the receiving node's trie drops")
    func matchingAgreesWithMQTT() {
        var checked = 0
        for filter in Self.filters {
            guard (try? Topic.validateFilter(filter)) != nil else { continue }
            let subjects = ClusterSubjects.subjects(filter: filter)
            for topic in Self.topics {
                for stored in [false, true] {
                    let subject = ClusterSubjects.subject(topic: topic, stored: stored)
                    let nats = subjects.contains { Self.natsMatches($0, subject) }
                    let mqtt = Topic.matches(filter: filter, topic: topic)
                    checked += 1
                    if mqtt { #expect(nats, "\(filter) must reach \(topic)") }
                    if nats && !mqtt {
                        let leadingWildcard = filter.hasPrefix("+") || filter.hasPrefix("#")
                        #expect(leadingWildcard && topic.hasPrefix("$"), "\(filter) over-matches \(topic)")
                    }
                }
            }
        }
        #expect(checked > 10_000)
    }

    @Test("The node's own subject matching (which stored messages read after a reconnect it keeps) agrees with NATS' rules on every subject and pattern here")
    func subjectMatching() {
        let subjects = Self.topics.flatMap { [ClusterSubjects.subject(topic: $0, stored: true), ClusterSubjects.subject(topic: $0, stored: false)] }
        var checked = 0
        for pattern in Self.filters.flatMap(ClusterSubjects.subjects(filter:)) {
            for subject in subjects {
                #expect(ClusterSubjects.matches(pattern: pattern, subject: subject) == Self.natsMatches(pattern, subject), "\(pattern) \(subject)")
                checked += 1
            }
        }
        #expect(checked > 10_000)
        #expect(ClusterSubjects.matches(pattern: "mqtt.*.a.>", subject: "mqtt.1.a.b.c"))
        #expect(!ClusterSubjects.matches(pattern: "mqtt.*.a.>", subject: "mqtt.1.a"))
        #expect(!ClusterSubjects.matches(pattern: "mqtt.*.a", subject: "mqtt.1.a.b"))
    }

    @Test("`a/#` is two subjects (MQTT's # matches its parent level); `#` alone is one")
    func hashSubjects() {
        #expect(ClusterSubjects.subjects(filter: "a/#") == ["mqtt.*.a", "mqtt.*.a.>"])
        #expect(ClusterSubjects.subjects(filter: "#") == ["mqtt.*.>"])
        #expect(ClusterSubjects.subjects(filter: "+/b/+") == ["mqtt.*.*.b.*"])
        #expect(ClusterSubjects.subject(topic: "a.b/ /", stored: true) == "mqtt.1.a=2Eb.=20.=")
    }

    @Test("A retained record keeps QoS, expiry, writer, v5 properties and payload; a damaged one is refused")
    func retainedRecord() {
        var properties = Properties()
        properties.appendUserProperty("k", "v")
        properties.contentType = "application/json"
        let record = RetainedRecord(qos: .exactlyOnce, expiresAtWall: 1_700_000_000_123, writer: "node1-abc", properties: properties,
                                    payload: ByteBuffer(string: "{\"on\":true}"))
        let bytes = record.encoded()
        let decoded = bytes.withUnsafeBytes { RetainedRecord($0) }
        #expect(decoded == record)
        let plain = RetainedRecord(qos: .atMostOnce, expiresAtWall: nil, writer: "w", properties: [], payload: ByteBuffer(string: "x"))
        #expect(plain.encoded().withUnsafeBytes { RetainedRecord($0) } == plain)
        for cut in [0, 1, 5, 12] {
            #expect(Array(bytes.prefix(cut)).withUnsafeBytes { RetainedRecord($0) } == nil, "cut at \(cut)")
        }
        var wrongVersion = bytes
        wrongVersion[0] = 9
        #expect(wrongVersion.withUnsafeBytes { RetainedRecord($0) } == nil)
    }
}
