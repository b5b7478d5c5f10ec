import MartletMQTT
import Synchronization

/// How a share group picks the member that gets a message (`shared_subscription_strategy`).
public enum SharedSubscriptionStrategy: String, Sendable, CaseIterable {
    /// In turn among the online members whose outbox is not lagging and whose in-flight
    /// window has room; in turn among all online members when every one is busy.
    case balanced
    /// In turn among the online members, busy or not (mosquitto's way).
    case roundRobin = "round_robin"
    /// A random online member.
    case random
    /// The same online member while it stays online and not busy.
    case sticky
}

/// Every share group of the broker (`$share/{name}/{filter}`, MQTT 5 4.8.2): which sessions
/// are members, on which event loop each lives, and whether each is online and has room.
/// One table for all loops, so that each message matching a group goes to exactly one member
/// wherever the members live: the loop that routes a message picks, under the lock, and hands
/// the copy to the member's loop. Routing takes the lock only while a group exists.
final class SharedSubscriptions: Sendable {
    struct Member: Sendable {
        var clientID: String
        var router: Int
        var options: SubscriptionOptions
        var identifier: UInt32?
        var online: Bool
        /// Lagging, or its in-flight window is full.
        var busy = false
        /// Keeps its session offline (it may queue for the group when no member is online).
        var persistent: Bool
    }

    /// The copy of a message a group sends one member.
    struct Pick: Sendable {
        /// `$share/{name}/{filter}`, as subscribed.
        var group: String
        var clientID: String
        var router: Int
        var options: SubscriptionOptions
        var identifier: UInt32?
    }

    /// What `/metrics` shows of one group.
    struct GroupStatistics: Sendable, Equatable {
        var group: String
        var members: Int
        var delivered: Int
        var redelivered: Int
    }

    private final class Group {
        let key: String
        var members: [Member] = []
        var next = 0
        var sticky: String?
        var delivered = 0
        var redelivered = 0
        init(key: String) { self.key = key }
    }

    private struct Table: ~Copyable {
        var trie = SubscriptionTrie<Group>()
        var groups: [String: Group] = [:]
        /// The groups each client id is a member of.
        var memberships: [String: Set<String>] = [:]
        var random = SystemRandomNumberGenerator()
    }

    private let table = Mutex(Table())
    /// The cluster, told which groups have members on this node.
    private let cluster: (any ClusterLink)?

    init(cluster: (any ClusterLink)? = nil) {
        self.cluster = cluster
    }
    /// Groups that exist: routing skips the lock while there are none.
    private let groupCount = Atomic<Int>(0)

    var isEmpty: Bool { groupCount.load(ordering: .relaxed) == 0 }

    /// Adds or updates `member` in the group `key` (`$share/{name}/{filter}`) of `filter`.
    func subscribe(_ key: String, filter: String, _ member: Member) {
        table.withLock { t in
            let group: Group
            if let existing = t.groups[key] {
                group = existing
            } else {
                group = Group(key: key)
                t.groups[key] = group
                t.trie.insert(filter: filter, subscriber: group, options: SubscriptionOptions(qos: .exactlyOnce))
                groupCount.add(1, ordering: .relaxed)
                cluster?.shareAdded(key, filter: filter)
            }
            if let i = group.members.firstIndex(where: { $0.clientID == member.clientID }) {
                group.members[i] = member
            } else {
                group.members.append(member)
            }
            t.memberships[member.clientID, default: []].insert(key)
        }
    }

    /// Removes `clientID` from the group `key`; a group left empty goes.
    func unsubscribe(_ key: String, filter: String, clientID: String) {
        table.withLock { t in
            guard let group = t.groups[key] else { return }
            group.members.removeAll { $0.clientID == clientID }
            t.memberships[clientID]?.remove(key)
            if t.memberships[clientID]?.isEmpty == true { t.memberships[clientID] = nil }
            if group.members.isEmpty {
                t.groups[key] = nil
                t.trie.remove(filter: filter, subscriber: group)
                groupCount.subtract(1, ordering: .relaxed)
                cluster?.shareRemoved(key, filter: filter)
            }
        }
    }

    /// Where `clientID`'s session lives and whether it is online (in every group it is in).
    func update(_ clientID: String, router: Int? = nil, online: Bool? = nil, busy: Bool? = nil, persistent: Bool? = nil) {
        table.withLock { t in
            guard let keys = t.memberships[clientID] else { return }
            for key in keys {
                guard let group = t.groups[key], let i = group.members.firstIndex(where: { $0.clientID == clientID }) else { continue }
                if let router { group.members[i].router = router }
                if let online { group.members[i].online = online }
                if let busy { group.members[i].busy = busy }
                if let persistent { group.members[i].persistent = persistent }
            }
        }
    }

    /// One member of every group whose filter matches `topic`.
    func pick(topic: String, strategy: SharedSubscriptionStrategy) -> [Pick] {
        table.withLock { t in
            var picks: [Pick] = []
            var groups: [Group] = []
            t.trie.forEachMatch(topic: topic) { groups.append($0.subscriber) }
            for group in groups {
                if let pick = Self.choose(in: group, excluding: nil, strategy: strategy, onlineOnly: false, random: &t.random) {
                    group.delivered += 1
                    picks.append(pick)
                }
            }
            return picks
        }
    }

    /// Another member of the group `key` for a copy its first member could not take (gone,
    /// or went offline with it unacknowledged); nil when there is none.
    /// With `onlineOnly`, a copy is not moved to an offline member's queue.
    func repick(group key: String, excluding clientID: String, strategy: SharedSubscriptionStrategy, onlineOnly: Bool = false) -> Pick? {
        table.withLock { t in
            guard let group = t.groups[key],
                  let pick = Self.choose(in: group, excluding: clientID, strategy: strategy, onlineOnly: onlineOnly, random: &t.random)
            else {
                return nil
            }
            group.redelivered += 1
            return pick
        }
    }

    func statistics() -> [GroupStatistics] {
        table.withLock { t in
            t.groups.values.map { GroupStatistics(group: $0.key, members: $0.members.count, delivered: $0.delivered, redelivered: $0.redelivered) }
                .sorted { $0.group < $1.group }
        }
    }

    /// Online members first (not busy ones first under `balanced` and `sticky`); with none
    /// online, a persistent offline member queues it (MQTT 5 4.8.2).
    private static func choose(in group: Group, excluding: String?, strategy: SharedSubscriptionStrategy, onlineOnly: Bool,
                               random: inout SystemRandomNumberGenerator) -> Pick? {
        let members = group.members
        guard !members.isEmpty else { return nil }
        func eligible(_ m: Member) -> Bool { m.clientID != excluding }
        var chosen: Int?
        switch strategy {
        case .sticky:
            if let sticky = group.sticky, let i = members.firstIndex(where: { $0.clientID == sticky }),
               eligible(members[i]), members[i].online, !members[i].busy {
                chosen = i
            }
            chosen = chosen ?? inTurn(group, { eligible($0) && $0.online && !$0.busy }) ?? inTurn(group, { eligible($0) && $0.online })
            if let chosen { group.sticky = members[chosen].clientID }
        case .balanced:
            chosen = inTurn(group, { eligible($0) && $0.online && !$0.busy }) ?? inTurn(group, { eligible($0) && $0.online })
        case .roundRobin:
            chosen = inTurn(group, { eligible($0) && $0.online })
        case .random:
            let online = members.indices.filter { eligible(members[$0]) && members[$0].online }
            chosen = online.randomElement(using: &random)
        }
        if !onlineOnly { chosen = chosen ?? inTurn(group, { eligible($0) && $0.persistent }) }
        guard let i = chosen else { return nil }
        let m = members[i]
        return Pick(group: group.key, clientID: m.clientID, router: m.router, options: m.options, identifier: m.identifier)
    }

    /// The next member after the group's cursor that `accept`s, moving the cursor past it.
    private static func inTurn(_ group: Group, _ accept: (Member) -> Bool) -> Int? {
        let count = group.members.count
        for step in 0..<count {
            let i = (group.next + step) % count
            if accept(group.members[i]) {
                group.next = (i + 1) % count
                return i
            }
        }
        return nil
    }
}
