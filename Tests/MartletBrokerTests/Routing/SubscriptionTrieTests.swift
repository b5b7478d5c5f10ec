@testable import MartletBroker
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import Testing

final class Sub: CustomStringConvertible {
    let name: String
    init(_ name: String) { self.name = name }
    var description: String { name }
}

@Suite struct SubscriptionTrieTests {
    func matches(_ trie: SubscriptionTrie<Sub>, _ topic: String) -> [String] {
        var names: [String] = []
        trie.forEachMatch(topic: topic) { names.append($0.subscriber.name) }
        return names.sorted()
    }

    @Test func exactPlusAndHash() {
        var trie = SubscriptionTrie<Sub>()
        let a = Sub("a"), b = Sub("b"), c = Sub("c"), d = Sub("d"), e = Sub("e")
        trie.insert(filter: "sport/tennis/player1", subscriber: a, options: .init())
        trie.insert(filter: "sport/+/player1", subscriber: b, options: .init())
        trie.insert(filter: "sport/#", subscriber: c, options: .init())
        trie.insert(filter: "#", subscriber: d, options: .init())
        trie.insert(filter: "+/+", subscriber: e, options: .init())
        #expect(matches(trie, "sport/tennis/player1") == ["a", "b", "c", "d"])
        #expect(matches(trie, "sport") == ["c", "d"])  // '#' matches the parent level
        #expect(matches(trie, "sport/") == ["c", "d", "e"])
        #expect(matches(trie, "other/x") == ["d", "e"])
        #expect(trie.count == 5)
    }

    @Test func dollarTopicsNeedAnExplicitFirstLevel() {
        var trie = SubscriptionTrie<Sub>()
        let all = Sub("all"), plus = Sub("plus"), sys = Sub("sys")
        trie.insert(filter: "#", subscriber: all, options: .init())
        trie.insert(filter: "+/monitor", subscriber: plus, options: .init())
        trie.insert(filter: "$SYS/#", subscriber: sys, options: .init())
        #expect(matches(trie, "$SYS/monitor") == ["sys"])
        #expect(matches(trie, "SYS/monitor") == ["all", "plus"])
    }

    @Test func emptyLevels() {
        var trie = SubscriptionTrie<Sub>()
        let a = Sub("a"), b = Sub("b")
        trie.insert(filter: "/finance", subscriber: a, options: .init())
        trie.insert(filter: "+/+", subscriber: b, options: .init())
        #expect(matches(trie, "/finance") == ["a", "b"])
        #expect(matches(trie, "finance") == [])
    }

    @Test func insertReplacesAndRemovePrunes() {
        var trie = SubscriptionTrie<Sub>()
        let a = Sub("a")
        let first = trie.insert(filter: "x/y", subscriber: a, options: .init(qos: .atMostOnce))
        let second = trie.insert(filter: "x/y", subscriber: a, options: .init(qos: .exactlyOnce))
        #expect(first == false)
        #expect(second == true)
        #expect(trie.count == 1)
        var qos: [QoS] = []
        trie.forEachMatch(topic: "x/y") { qos.append($0.options.qos) }
        #expect(qos == [.exactlyOnce])
        let removed = trie.remove(filter: "x/y", subscriber: a)
        let removedAgain = trie.remove(filter: "x/y", subscriber: a)
        #expect(removed)
        #expect(!removedAgain)
        #expect(trie.count == 0)
        #expect(matches(trie, "x/y") == [])
    }

    @Test func overlappingFiltersReportEachEntry() {
        var trie = SubscriptionTrie<Sub>()
        let a = Sub("a")
        trie.insert(filter: "a/#", subscriber: a, options: .init(qos: .atMostOnce))
        trie.insert(filter: "a/+", subscriber: a, options: .init(qos: .atLeastOnce))
        var seen: [QoS] = []
        trie.forEachMatch(topic: "a/b") { seen.append($0.options.qos) }
        #expect(seen.sorted() == [.atMostOnce, .atLeastOnce])
    }

    /// The trie must agree with the reference matcher on random filters and topics.
    @Test func agreesWithTopicMatches() {
        var rng = SystemRandomNumberGenerator()
        let levels = ["a", "b", "$x", ""]
        func randomTopic() -> String {
            (0..<Int.random(in: 1...4, using: &rng)).map { _ in levels.randomElement(using: &rng)! }.joined(separator: "/")
        }
        func randomFilter() -> String {
            var parts = (0..<Int.random(in: 1...4, using: &rng)).map { _ in (levels + ["+"]).randomElement(using: &rng)! }
            if Bool.random(using: &rng) { parts.append("#") }
            return parts.joined(separator: "/")
        }
        var trie = SubscriptionTrie<Sub>()
        var filters: [(String, Sub)] = []
        for i in 0..<200 {
            let f = randomFilter()
            let s = Sub("\(i)")
            trie.insert(filter: f, subscriber: s, options: .init())
            filters.append((f, s))
        }
        for _ in 0..<500 {
            let topic = randomTopic()
            let expected = filters.filter { Topic.matches(filter: $0.0, topic: topic) }.map(\.1.name).sorted()
            #expect(matches(trie, topic) == expected, "topic \(topic)")
        }
    }
}

@Suite struct TopicMatchTests {
    @Test(arguments: [
        ("a/b", "a/b", true), ("a/+", "a/b", true), ("a/+", "a/b/c", false), ("a/#", "a", true),
        ("a/#", "a/b/c", true), ("#", "a", true), ("+", "a/b", false), ("+/+", "/a", true),
        ("#", "$SYS/x", false), ("+/x", "$SYS/x", false), ("$SYS/#", "$SYS/x", true), ("a/b", "a/b/", false),
        ("a//b", "a//b", true), ("a/+/b", "a//b", true),
    ])
    func matches(_ filter: String, _ topic: String, _ expected: Bool) {
        #expect(Topic.matches(filter: filter, topic: topic) == expected)
    }
}
