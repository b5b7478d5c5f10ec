import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore

/// A retained message as stored: what a new subscriber receives with RETAIN=1.
public struct RetainedMessage: Sendable, Hashable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: QoS
    public var properties: Properties
    /// When its Message Expiry Interval runs out; after that no subscriber receives it.
    public var expiresAt: NIODeadline?

    public init(topic: String, payload: ByteBuffer, qos: QoS, properties: Properties, expiresAt: NIODeadline? = nil) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.properties = properties
        self.expiresAt = expiresAt
    }
}

/// Retained messages of the whole broker, one per topic, in a tree of topic levels, so a
/// SUBSCRIBE visits only the branches its filter can match (`+` every child of one level,
/// `#` everything below), not every retained topic.
///
/// Shared by every event loop; writes are one tree update under a lock and reads happen
/// only on SUBSCRIBE, so a lock costs less here than an actor hop.
public final class RetainedStore: Sendable {
    private struct Node: Sendable {
        var children: [String: Node] = [:]
        var message: RetainedMessage?

        var isEmpty: Bool { message == nil && children.isEmpty }

        /// Sets or clears the message at `levels` below this node; returns the one replaced.
        mutating func set(_ levels: ArraySlice<Substring>, _ message: RetainedMessage?) -> RetainedMessage? {
            guard let level = levels.first else {
                defer { self.message = message }
                return self.message
            }
            let key = String(level)
            if message == nil && children[key] == nil { return nil }
            let old = children[key, default: Node()].set(levels.dropFirst(), message)
            if children[key]?.isEmpty == true { children.removeValue(forKey: key) }
            return old
        }

        func node(at path: [String]) -> Node? {
            var node = self
            for name in path {
                guard let child = node.children[name] else { return nil }
                node = child
            }
            return node
        }

        func get(_ levels: ArraySlice<Substring>) -> RetainedMessage? {
            guard let level = levels.first else { return message }
            return children[String(level)]?.get(levels.dropFirst())
        }

        /// The messages below this node that `filter` matches. At the root, a filter that
        /// starts with a wildcard does not match `$` topics (MQTT-4.7.2-1).
        func collect(_ filter: ArraySlice<Substring>, atRoot: Bool, into found: inout [RetainedMessage]) {
            guard let level = filter.first else {
                if let message { found.append(message) }
                return
            }
            switch level {
            case "#":
                // "a/#" matches "a" too (MQTT-4.7.1-2).
                if let message, !atRoot { found.append(message) }
                for (name, child) in children where !(atRoot && name.hasPrefix("$")) { child.collectAll(into: &found) }
            case "+":
                for (name, child) in children where !(atRoot && name.hasPrefix("$")) {
                    child.collect(filter.dropFirst(), atRoot: false, into: &found)
                }
            default:
                children[String(level)]?.collect(filter.dropFirst(), atRoot: false, into: &found)
            }
        }

        func collectAll(into found: inout [RetainedMessage]) {
            if let message { found.append(message) }
            for child in children.values { child.collectAll(into: &found) }
        }
    }

    private struct State: Sendable {
        var root = Node()
        var count = 0

        mutating func set(_ levels: ArraySlice<Substring>, _ message: RetainedMessage?) {
            let old = root.set(levels, message)
            count += (message == nil ? 0 : 1) - (old == nil ? 0 : 1)
        }
    }

    private let storage = NIOLockedValueBox(State())

    public init() {}

    public var count: Int { storage.withLockedValue { $0.count } }

    /// Stores `message`, or deletes the topic's retained message when the payload is empty
    /// (MQTT-3.3.1-10). With `limit` > 0 and that many topics already held, a message for a
    /// topic not held yet is refused (returns false); replacing or deleting always works.
    @discardableResult
    public func store(_ message: RetainedMessage, limit: Int = 0) -> Bool {
        let levels = Self.levels(message.topic)
        return storage.withLockedValue {
            if message.payload.readableBytes == 0 {
                $0.set(levels, nil)
                return true
            }
            if limit > 0 && $0.count >= limit && $0.root.get(levels) == nil { return false }
            $0.set(levels, message)
            return true
        }
    }

    /// Retained messages whose topic matches `filter`, in topic order; expired ones are
    /// deleted instead (MQTT-3.3.2-5).
    public func matching(_ filter: String, now: NIODeadline = .now()) -> [RetainedMessage] {
        let levels = Self.levels(filter)
        let found = storage.withLockedValue { state -> [RetainedMessage] in
            var found: [RetainedMessage] = []
            state.root.collect(levels, atRoot: true, into: &found)
            let expired = found.filter { $0.expiresAt.map { $0 <= now } ?? false }
            guard !expired.isEmpty else { return found }
            for message in expired { state.set(Self.levels(message.topic), nil) }
            return found.filter { $0.expiresAt.map { $0 > now } ?? true }
        }
        return found.count > 1 ? found.sorted { $0.topic < $1.topic } : found
    }

    /// A resumable walk over the retained messages a filter matches, children in name order,
    /// read a few at a time (`next`) so a subscriber to many gets them as its socket drains:
    /// the store is locked only for each small read, and nothing but the walk's position is
    /// held in between. A topic stored after the walk passed its place is not visited (a
    /// subscriber already receives it by routing); one deleted before it is reached is skipped.
    public struct Cursor: Sendable {
        fileprivate enum Step: Sendable {
            /// The node at `path`, against the filter from level `level` on.
            case visit(path: [String], level: Int)
            /// Every message at and below the node at `path` (`#`).
            case everything(path: [String])
            /// The children of the node at `path`, by name, from `next` on: each visited against
            /// the filter from `level` on, or with `everything` when `level` is nil.
            case children(path: [String], names: [String], next: Int, level: Int?)
        }

        fileprivate let filter: [String]
        fileprivate var steps: [Step]

        public init(filter: String) {
            self.filter = filter.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            self.steps = [.visit(path: [], level: 0)]
        }

        public var isFinished: Bool { steps.isEmpty }
    }

    /// Up to `limit` more messages of the cursor's walk; fewer only when the walk is finished.
    /// Expired messages met on the way are deleted instead (MQTT-3.3.2-5).
    public func next(_ cursor: inout Cursor, limit: Int, now: NIODeadline = .now()) -> [RetainedMessage] {
        storage.withLockedValue { state in
            var found: [RetainedMessage] = []
            func take(_ message: RetainedMessage?) {
                guard let message else { return }
                if let expiresAt = message.expiresAt, expiresAt <= now {
                    state.set(Self.levels(message.topic), nil)
                } else {
                    found.append(message)
                }
            }
            func names(_ node: Node, atRoot: Bool) -> [String] {
                // A filter starting with a wildcard does not match `$` topics (MQTT-4.7.2-1).
                node.children.keys.filter { !(atRoot && $0.hasPrefix("$")) }.sorted()
            }
            while found.count < limit, let step = cursor.steps.popLast() {
                switch step {
                case .visit(let path, let level):
                    guard let node = state.root.node(at: path) else { continue }
                    guard level < cursor.filter.count else {
                        take(node.message)
                        continue
                    }
                    switch cursor.filter[level] {
                    case "#":
                        // "a/#" matches "a" too (MQTT-4.7.1-2).
                        if !path.isEmpty { take(node.message) }
                        cursor.steps.append(.children(path: path, names: names(node, atRoot: path.isEmpty), next: 0, level: nil))
                    case "+":
                        cursor.steps.append(.children(path: path, names: names(node, atRoot: path.isEmpty), next: 0, level: level + 1))
                    case let name:
                        cursor.steps.append(.visit(path: path + [name], level: level + 1))
                    }
                case .everything(let path):
                    guard let node = state.root.node(at: path) else { continue }
                    take(node.message)
                    if !node.children.isEmpty {
                        cursor.steps.append(.children(path: path, names: node.children.keys.sorted(), next: 0, level: nil))
                    }
                case .children(let path, let names, let next, let level):
                    guard next < names.count else { continue }
                    cursor.steps.append(.children(path: path, names: names, next: next + 1, level: level))
                    let child = path + [names[next]]
                    cursor.steps.append(level.map { .visit(path: child, level: $0) } ?? .everything(path: child))
                }
            }
            return found
        }
    }

    /// A topic or filter split at "/", empty levels kept ("a//b" has three).
    private static func levels(_ topic: String) -> ArraySlice<Substring> {
        topic.split(separator: "/", omittingEmptySubsequences: false)[...]
    }
}
