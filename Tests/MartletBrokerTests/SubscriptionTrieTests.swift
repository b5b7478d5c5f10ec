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

@Suite struct SessionTests {
    @Test func packetIdentifiersSkipThoseInFlight() {
        let s = Session(clientID: "c", version: .v3_1_1, expiryInterval: 0, inflightWindow: 10)
        let message = Message(topic: "t", payload: .init(), qos: .atLeastOnce, retain: false)
        let delivery = Delivery(message: message, qos: .atLeastOnce, retain: false, subscriptionIdentifiers: [])
        // 1 stays in flight; 2 ... 65,533 are sent and acknowledged, so the next is 65,534.
        #expect(s.inflight.send(delivery) == 1)
        for _ in 2...65_533 {
            let id = s.inflight.send(delivery)
            _ = s.inflight.acknowledge(id)
        }
        #expect(s.inflight.send(delivery) == 65_534)
        #expect(s.inflight.send(delivery) == 65_535)
        // Wraps past 0 and skips 1, which is still in flight.
        #expect(s.inflight.send(delivery) == 2)
    }

    @Test func stateRoundTripsForTakeover() {
        let s = Session(clientID: "c", version: .v5, expiryInterval: 60, inflightWindow: 5)
        s.subscriptions["a/#"] = StoredSubscription(options: .init(qos: .exactlyOnce), identifier: 7)
        s.inboundQoS2 = [3, 4]
        let message = Message(topic: "t", payload: .init(), qos: .atLeastOnce, retain: false)
        let delivery = Delivery(message: message, qos: .atLeastOnce, retain: false, subscriptionIdentifiers: [])
        for _ in 1...98 { _ = s.inflight.acknowledge(s.inflight.send(delivery)) }
        let open = s.inflight.send(delivery)
        let t = Session(clientID: "c", version: .v5, expiryInterval: 60, inflightWindow: 5)
        t.restore(s.state)
        #expect(t.subscriptions["a/#"]?.identifier == 7)
        #expect(t.inboundQoS2 == [3, 4])
        // The flow in flight and the packet identifier counter move with the session.
        #expect(open == 99 && t.inflight.flights.map(\.packetIdentifier) == [99])
        #expect(t.inflight.send(delivery) == 100)
        #expect(t.isPersistent)
    }
}

@Suite struct RetainedStoreTests {
    @Test func storeReplaceDeleteAndMatch() {
        let store = RetainedStore()
        store.store(RetainedMessage(topic: "a/b", payload: .init(string: "1"), qos: .atMostOnce, properties: []))
        store.store(RetainedMessage(topic: "a/c", payload: .init(string: "2"), qos: .atLeastOnce, properties: []))
        store.store(RetainedMessage(topic: "a/b", payload: .init(string: "3"), qos: .atMostOnce, properties: []))
        #expect(store.count == 2)
        #expect(store.matching("a/+").map { String(decoding: $0.payload.readableBytesView, as: UTF8.self) } == ["3", "2"])
        store.store(RetainedMessage(topic: "a/b", payload: .init(), qos: .atMostOnce, properties: []))
        #expect(store.matching("#").map(\.topic) == ["a/c"])
    }

    @Test("a filter without wildcards finds its one topic; + and # still match by level")
    func exactFilterLookup() {
        let store = RetainedStore()
        for topic in ["a", "a/b", "a/b/c", "b"] {
            store.store(RetainedMessage(topic: topic, payload: .init(string: topic), qos: .atMostOnce, properties: []))
        }
        #expect(store.matching("a/b").map(\.topic) == ["a/b"])
        #expect(store.matching("a/b/d").isEmpty)
        #expect(store.matching("a/+").map(\.topic) == ["a/b"])
        #expect(store.matching("a/#").map(\.topic) == ["a", "a/b", "a/b/c"])
    }

    @Test("the topic tree answers every filter as Topic.matches does over all topics ($ topics, empty levels, a/# matching a)")
    func treeAgreesWithTopicMatches() {
        let store = RetainedStore()
        let levels = ["a", "b", "", "$SYS", "c"]
        var seed: UInt64 = 42
        func next(_ n: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int((seed >> 33) % UInt64(n))
        }
        var topics = Set<String>()
        for _ in 0..<300 {
            let topic = (0...next(3)).map { _ in levels[next(levels.count)] }.joined(separator: "/")
            if topic.isEmpty { continue }  // not a topic name (MQTT-4.7.3-1); the decoder refuses it
            topics.insert(topic)
            store.store(RetainedMessage(topic: topic, payload: .init(string: topic), qos: .atMostOnce, properties: []))
        }
        #expect(store.count == topics.count)
        let filterLevels = levels + ["+", "+"]
        for _ in 0..<300 {
            var parts = (0...next(3)).map { _ in filterLevels[next(filterLevels.count)] }
            if next(3) == 0 { parts.append("#") }
            let filter = parts.joined(separator: "/")
            let expected = topics.filter { Topic.matches(filter: filter, topic: $0) }.sorted()
            #expect(store.matching(filter).map(\.topic) == expected, "filter \(filter)")
            // The cursor, read a few at a time, visits the same topics, each once.
            var cursor = RetainedStore.Cursor(filter: filter)
            var walked: [String] = []
            while !cursor.isFinished {
                let batch = store.next(&cursor, limit: 1 + next(4))
                walked += batch.map(\.topic)
            }
            #expect(walked.sorted() == expected, "cursor, filter \(filter)")
        }
        // Deleting every topic leaves an empty tree.
        for topic in topics { store.store(RetainedMessage(topic: topic, payload: .init(), qos: .atMostOnce, properties: [])) }
        #expect(store.count == 0)
        #expect(store.matching("#").isEmpty)
    }

    @Test("a cursor paused between reads: a topic deleted before it is reached is skipped, one stored behind it is not visited, one ahead is; an expired one is deleted")
    func cursorAcrossChanges() {
        let store = RetainedStore()
        func message(_ topic: String, expiresAt: NIODeadline? = nil) -> RetainedMessage {
            RetainedMessage(topic: topic, payload: .init(string: topic), qos: .atMostOnce, properties: [], expiresAt: expiresAt)
        }
        for topic in ["s/1", "s/2", "s/3", "s/5", "t"] { store.store(message(topic)) }
        var cursor = RetainedStore.Cursor(filter: "s/+")
        #expect(store.next(&cursor, limit: 1).map(\.topic) == ["s/1"])
        store.store(RetainedMessage(topic: "s/2", payload: .init(), qos: .atMostOnce, properties: []))
        store.store(message("s/0"))
        store.store(message("s/4", expiresAt: .now() - .seconds(1)))
        #expect(store.next(&cursor, limit: 10).map(\.topic) == ["s/3", "s/5"])
        #expect(cursor.isFinished)
        // s/4 was never in the walk's names (stored after its level was listed) and is expired:
        // a new walk deletes it.
        var again = RetainedStore.Cursor(filter: "s/#")
        #expect(store.next(&again, limit: 10).map(\.topic) == ["s/0", "s/1", "s/3", "s/5"])
        #expect(store.count == 5)
    }

    @Test("with a limit, a new topic past it is refused; replacing and clearing held topics still work")
    func limit() {
        let store = RetainedStore()
        func message(_ topic: String, _ payload: String) -> RetainedMessage {
            RetainedMessage(topic: topic, payload: .init(string: payload), qos: .atMostOnce, properties: [])
        }
        #expect(store.store(message("a", "1"), limit: 2))
        #expect(store.store(message("b", "1"), limit: 2))
        #expect(store.store(message("c", "1"), limit: 2) == false)
        #expect(store.store(message("a", "2"), limit: 2))
        #expect(store.matching("a").first?.payload == ByteBuffer(string: "2"))
        #expect(store.store(message("a", ""), limit: 2))
        #expect(store.store(message("c", "1"), limit: 2))
        #expect(store.matching("#").map(\.topic) == ["b", "c"])
        #expect(store.store(message("d", "1"), limit: 0))
        #expect(store.count == 3)
    }
}

@Suite struct SessionRegistryTests {
    @Test("MQTT-3.1.4-3: claims of one client id run one at a time, in arrival order, each taking over from the owner the previous one left")
    func claimsAreSerialized() {
        let registry = SessionRegistry()
        let turns = NIOLockedValueBox<[(router: Int, previous: Int?)]>([])
        #expect(registry.claim("x", router: 0) { _ in Issue.record("the first claim runs at once") } == .granted(previousOwner: nil))
        #expect(registry.claim("x", router: 1) { previous in turns.withLockedValue { $0.append((1, previous)) } } == .queued)
        #expect(registry.claim("x", router: 0) { previous in turns.withLockedValue { $0.append((0, previous)) } } == .queued)
        // Another client id is not held up.
        #expect(registry.claim("y", router: 1) { _ in } == .granted(previousOwner: nil))
        // A session ending on its owner while a claim is in progress is left to that claim.
        registry.release("x", router: 0)
        #expect(registry.owner(of: "x") == 0)
        registry.settle("x", owner: 0)
        #expect(turns.withLockedValue { $0.map(\.router) } == [1])
        #expect(turns.withLockedValue { $0.last?.previous } == 0)
        #expect(registry.owner(of: "x") == 1)
        registry.settle("x", owner: 1)
        #expect(turns.withLockedValue { $0.map(\.router) } == [1, 0])
        #expect(turns.withLockedValue { $0.last?.previous } == 1)
        registry.settle("x", owner: 0)
        // Free again: a new claim runs at once, from owner 0.
        #expect(registry.claim("x", router: 1) { _ in } == .granted(previousOwner: 0))
        registry.settle("x", owner: nil)
        registry.settle("y", owner: 1)
        registry.release("y", router: 1)
        // Nothing stays behind for client ids that are gone.
        #expect(registry.count == 0)
    }
}
