@testable import MartletBroker
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import Testing

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
