import MartletMQTT

/// Topic access rules in mosquitto's acl_file format:
///
///     # before any `user` line: rules for anonymous clients
///     topic read public/#
///     user alice
///     topic readwrite alice/#
///     topic deny alice/secret/#
///     pattern write devices/%c/status     # every client, %c = client id, %u = user name
///
/// Access is `read` (receive and subscribe), `write` (publish), `readwrite`, `subscribe`
/// (subscribe only; receiving still needs read) or `deny` (overrides any grant). Once a file is
/// configured, anything no rule grants is refused.
public struct AccessControlList: Sendable, Hashable {
    public enum Operation: Sendable, Hashable {
        /// Receive a message published on the topic.
        case read
        /// Publish to the topic.
        case write
        /// Subscribe to the filter.
        case subscribe
    }

    struct Rule: Sendable, Hashable {
        var grants: Set<Operation>
        var deny: Bool
        var pattern: String
        /// `pattern` lines: %u and %c are substituted per client.
        var substitutes: Bool
    }

    var anonymous: [Rule] = []
    var users: [String: [Rule]] = [:]
    var patterns: [Rule] = []

    public init(parsing text: String, source: String) throws(ConfigurationError) {
        var currentUser: String?
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
            func fail(_ message: String) -> ConfigurationError {
                ConfigurationError(source: source, key: "acl_file", line: n + 1, message: message)
            }
            switch words[0] {
            case "user":
                guard words.count >= 2 else { throw fail("user needs a name") }
                currentUser = String(line.dropFirst(4).trimmingWhitespace())
            case "topic", "pattern":
                // "topic FILTER" alone means readwrite, as in mosquitto.
                let access: Substring
                let filter: Substring
                if words.count == 2 {
                    access = "readwrite"
                    filter = words[1]
                } else if words.count == 3 {
                    access = words[1]
                    filter = words[2].trimmingWhitespace()
                } else {
                    throw fail("expected \(words[0]) [read|write|readwrite|subscribe|deny] FILTER")
                }
                let grants: Set<Operation>
                var deny = false
                switch access {
                case "read": grants = [.read, .subscribe]
                case "write": grants = [.write]
                case "readwrite": grants = [.read, .write, .subscribe]
                case "subscribe": grants = [.subscribe]
                case "deny":
                    grants = []
                    deny = true
                default: throw fail("unknown access \"\(access)\"; expected read, write, readwrite, subscribe or deny")
                }
                do {
                    try Topic.validateFilter(String(filter))
                } catch {
                    throw fail("\"\(filter)\": \(error)")
                }
                let rule = Rule(grants: grants, deny: deny, pattern: String(filter), substitutes: words[0] == "pattern")
                if words[0] == "pattern" {
                    patterns.append(rule)
                } else if let user = currentUser {
                    users[user, default: []].append(rule)
                } else {
                    anonymous.append(rule)
                }
            default:
                throw fail("unknown directive \"\(words[0])\"; expected user, topic or pattern")
            }
        }
    }

    /// Whether `username` (nil: anonymous) connected as `clientID` may do `operation` on
    /// `topic` (a topic name for read and write, a filter for subscribe).
    public func allows(_ operation: Operation, _ topic: String, username: String?, clientID: String) -> Bool {
        var granted = false
        func apply(_ rules: [Rule]) -> Bool {
            for rule in rules {
                var pattern = rule.pattern
                if rule.substitutes {
                    // A name or id containing a wildcard or '/' could widen the pattern: no match.
                    if pattern.contains("%u") {
                        guard let u = username, Self.isSafeLevel(u) else { continue }
                        pattern = pattern.replacingAll("%u", with: u)
                    }
                    if pattern.contains("%c") {
                        guard Self.isSafeLevel(clientID) else { continue }
                        pattern = pattern.replacingAll("%c", with: clientID)
                    }
                }
                let matches = operation == .subscribe
                    ? Topic.covers(pattern: pattern, filter: topic)
                    : Topic.matches(filter: pattern, topic: topic)
                guard matches else { continue }
                if rule.deny { return false }
                if rule.grants.contains(operation) { granted = true }
            }
            return true
        }
        let own = username.map { users[$0] ?? [] } ?? anonymous
        guard apply(own), apply(patterns) else { return false }
        return granted
    }

    static func isSafeLevel(_ s: String) -> Bool {
        !s.isEmpty && !s.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") })
    }
}
