import MartletMQTT

/// Topic filters as a tree of levels, with `+` and `#` children, matched against a
/// topic name without splitting it into an array.
///
/// `Subscriber` is compared by identity, so one subscriber holds at most one entry per
/// filter (a second SUBSCRIBE to the same filter replaces the first, MQTT-3.8.4-3).
public struct SubscriptionTrie<Subscriber: AnyObject> {
    public struct Entry {
        public var subscriber: Subscriber
        public var options: SubscriptionOptions
        public var identifier: UInt32?
    }

    final class Node {
        var children: [Substring: Node] = [:]
        var plus: Node?
        var hash: Node?
        var entries: [Entry] = []

        var isEmpty: Bool { children.isEmpty && plus == nil && hash == nil && entries.isEmpty }
    }

    private let root = Node()
    public private(set) var count = 0
    /// Told when a filter gets its first entry and loses its last (a cluster's interest).
    public var observer: (any FilterInterestObserver)?

    public init() {}

    /// Adds or replaces `subscriber`'s entry for `filter`. Returns true if it already existed.
    @discardableResult
    public mutating func insert(filter: String, subscriber: Subscriber, options: SubscriptionOptions, identifier: UInt32? = nil) -> Bool {
        var node = root
        for level in filter.split(separator: "/", omittingEmptySubsequences: false) {
            switch level {
            case "+":
                if node.plus == nil { node.plus = Node() }
                node = node.plus!
            case "#":
                if node.hash == nil { node.hash = Node() }
                node = node.hash!
            default:
                let key = Substring(String(level))
                if let child = node.children[key] {
                    node = child
                } else {
                    let child = Node()
                    node.children[key] = child
                    node = child
                }
            }
        }
        let entry = Entry(subscriber: subscriber, options: options, identifier: identifier)
        if let i = node.entries.firstIndex(where: { $0.subscriber === subscriber }) {
            node.entries[i] = entry
            return true
        }
        node.entries.append(entry)
        count += 1
        if node.entries.count == 1, let observer { observer.filterAdded(filter) }
        return false
    }

    /// Removes `subscriber`'s entry for `filter`. Returns whether there was one.
    @discardableResult
    public mutating func remove(filter: String, subscriber: Subscriber) -> Bool {
        let levels = filter.split(separator: "/", omittingEmptySubsequences: false)
        var path: [(Node, Substring)] = []
        var node = root
        for level in levels {
            let next: Node?
            switch level {
            case "+": next = node.plus
            case "#": next = node.hash
            default: next = node.children[level]
            }
            guard let next else { return false }
            path.append((node, level))
            node = next
        }
        guard let i = node.entries.firstIndex(where: { $0.subscriber === subscriber }) else { return false }
        node.entries.remove(at: i)
        count -= 1
        if node.entries.isEmpty, let observer { observer.filterRemoved(filter) }
        // Prune empty nodes bottom-up so churned filters do not leak memory.
        var child = node
        for (parent, level) in path.reversed() {
            guard child.isEmpty else { break }
            switch level {
            case "+": parent.plus = nil
            case "#": parent.hash = nil
            default: parent.children[level] = nil
            }
            child = parent
        }
        return true
    }

    /// Calls `body` for every entry whose filter matches `topic`. A subscriber with several
    /// matching filters is reported once per filter; the router merges them.
    public func forEachMatch(topic: String, _ body: (Entry) -> Void) {
        let t = topic[...]
        let dollar = t.utf8.first == UInt8(ascii: "$")
        Self.match(root, t, atRoot: true, dollar: dollar, body)
    }

    private static func match(_ node: Node, _ rest: Substring, atRoot: Bool, dollar: Bool, _ body: (Entry) -> Void) {
        // A leading wildcard never matches a topic that starts with '$' (MQTT-4.7.2-1).
        let wildcardsAllowed = !(atRoot && dollar)
        if wildcardsAllowed, let hash = node.hash {
            for e in hash.entries { body(e) }
        }
        let slash = rest.utf8.firstIndex(of: UInt8(ascii: "/"))
        let level = slash.map { rest[rest.startIndex..<$0] } ?? rest
        let remainder: Substring? = slash.map { rest[rest.index(after: $0)...] }
        if let child = node.children[level] {
            visit(child, remainder, dollar: dollar, body)
        }
        if wildcardsAllowed, let plus = node.plus {
            visit(plus, remainder, dollar: dollar, body)
        }
    }

    private static func visit(_ node: Node, _ remainder: Substring?, dollar: Bool, _ body: (Entry) -> Void) {
        if let remainder {
            match(node, remainder, atRoot: false, dollar: dollar, body)
        } else {
            for e in node.entries { body(e) }
            // "a/#" also matches "a" (MQTT-4.7.1-2).
            if let hash = node.hash { for e in hash.entries { body(e) } }
        }
    }
}
