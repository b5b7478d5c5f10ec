@testable import MartletBroker
import MartletMQTT
import Testing

@Suite struct SharedSubscriptionsTests {
    func member(_ id: String, router: Int = 0, online: Bool = true, persistent: Bool = false) -> SharedSubscriptions.Member {
        .init(clientID: id, router: router, options: .init(qos: .atLeastOnce), identifier: nil, online: online, persistent: persistent)
    }

    func table(_ members: [SharedSubscriptions.Member], key: String = "$share/g/a/#", filter: String = "a/#") -> SharedSubscriptions {
        let shared = SharedSubscriptions()
        for m in members { shared.subscribe(key, filter: filter, m) }
        return shared
    }

    func picks(_ shared: SharedSubscriptions, _ n: Int, _ strategy: SharedSubscriptionStrategy, topic: String = "a/b") -> [String] {
        (0..<n).flatMap { _ in shared.pick(topic: topic, strategy: strategy).map(\.clientID) }
    }

    @Test("round_robin takes online members in turn; balanced skips busy ones while any is free, and takes all in turn when all are busy")
    func roundRobinAndBalanced() {
        let shared = table([member("x"), member("y"), member("z")])
        #expect(picks(shared, 6, .roundRobin) == ["x", "y", "z", "x", "y", "z"])
        shared.update("y", busy: true)
        #expect(picks(shared, 4, .balanced) == ["x", "z", "x", "z"])
        #expect(picks(shared, 3, .roundRobin).count == 3)
        shared.update("x", busy: true)
        shared.update("z", busy: true)
        #expect(Set(picks(shared, 3, .balanced)) == ["x", "y", "z"])
    }

    @Test("sticky keeps one member while it is online and free; random picks only online members")
    func stickyAndRandom() {
        let shared = table([member("x"), member("y"), member("z", online: false)])
        let first = picks(shared, 5, .sticky)
        #expect(Set(first).count == 1)
        shared.update(first[0], busy: true)
        let next = picks(shared, 3, .sticky)
        #expect(Set(next).count == 1 && next[0] != first[0])
        #expect(Set(picks(shared, 200, .random)) == ["x", "y"])
    }

    @Test("MQTT 5 4.8.2: with no member online a persistent member queues; a re-pick can exclude the member that left and insist on online members")
    func offlineMembers() {
        let shared = table([member("gone", online: false), member("keeper", online: false, persistent: true)])
        #expect(picks(shared, 2, .balanced) == ["keeper", "keeper"])
        #expect(shared.repick(group: "$share/g/a/#", excluding: "keeper", strategy: .balanced) == nil)
        shared.subscribe("$share/g/a/#", filter: "a/#", member("live", router: 1))
        let re = shared.repick(group: "$share/g/a/#", excluding: "keeper", strategy: .balanced, onlineOnly: true)
        #expect(re?.clientID == "live" && re?.router == 1)
        #expect(shared.statistics() == [.init(group: "$share/g/a/#", members: 3, delivered: 2, redelivered: 1)])
    }

    @Test("only groups whose filter matches are picked from, one member each; the last member leaving ends the group")
    func matchingAndLeaving() {
        let shared = table([member("x")])
        shared.subscribe("$share/h/a/b", filter: "a/b", member("y"))
        #expect(Set(shared.pick(topic: "a/b", strategy: .balanced).map(\.group)) == ["$share/g/a/#", "$share/h/a/b"])
        #expect(shared.pick(topic: "a/c", strategy: .balanced).map(\.clientID) == ["x"])
        #expect(shared.pick(topic: "b", strategy: .balanced).isEmpty)
        shared.unsubscribe("$share/g/a/#", filter: "a/#", clientID: "x")
        #expect(shared.pick(topic: "a/c", strategy: .balanced).isEmpty)
        shared.unsubscribe("$share/h/a/b", filter: "a/b", clientID: "y")
        #expect(shared.isEmpty)
    }

    @Test("/metrics shows members, delivered and redelivered per group, the group's name escaped as a label")
    func metrics() {
        let text = String(decoding: MetricsExporter.render([.init(group: "$share/g/\"q\"", members: 2, delivered: 7, redelivered: 1)]), as: UTF8.self)
        #expect(text.contains("martlet_shared_group_members{group=\"$share/g/\\\"q\\\"\"} 2\n"))
        #expect(text.contains("martlet_shared_group_delivered_total{group=\"$share/g/\\\"q\\\"\"} 7\n"))
        #expect(text.contains("martlet_shared_group_redelivered_total{group=\"$share/g/\\\"q\\\"\"} 1\n"))
        #expect(MetricsExporter.render([]).isEmpty)
    }
}
