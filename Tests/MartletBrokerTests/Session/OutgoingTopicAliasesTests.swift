@testable import MartletBroker
import Testing

@Suite struct OutgoingTopicAliasesTests {
    func send(_ aliases: OutgoingTopicAliases, _ topic: String) -> OutgoingTopicAliases.Use {
        let use = aliases.use(for: topic)
        aliases.commit(use, for: topic)
        return use
    }

    @Test("a topic gets an alias with its first PUBLISH and only the alias after; at most `maximum` aliases")
    func assignThenAlias() {
        let aliases = OutgoingTopicAliases(maximum: 2)
        #expect(send(aliases, "a") == .assign(1))
        #expect(send(aliases, "a") == .alias(1))
        #expect(send(aliases, "b") == .assign(2))
        #expect(send(aliases, "c") == .none)  // full, and every alias is in use
        #expect(send(aliases, "b") == .alias(2))
        #expect(aliases.count == 2)
    }

    @Test("nothing is learned until a PUBLISH is written (one dropped as too large leaves no mapping behind)")
    func commitOnlyWhenWritten() {
        let aliases = OutgoingTopicAliases(maximum: 4)
        #expect(aliases.use(for: "x") == .assign(1))
        #expect(aliases.use(for: "x") == .assign(1))
        #expect(aliases.count == 0)
    }

    @Test("when full, the least recently used alias goes to a new topic once it has been idle for a while, with the topic sent again")
    func replacement() {
        let aliases = OutgoingTopicAliases(maximum: 2)
        _ = send(aliases, "old")
        _ = send(aliases, "hot")
        for _ in 0..<aliases.idleBeforeReuse - 1 { _ = send(aliases, "hot") }
        #expect(send(aliases, "new") == .assign(1))  // "old" idle long enough
        #expect(send(aliases, "new") == .alias(1))
        #expect(send(aliases, "old") == .none)
        #expect(send(aliases, "hot") == .alias(2))
    }
}
