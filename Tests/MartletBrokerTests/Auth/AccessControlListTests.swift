import MartletAuth
import MartletBroker
import MartletMQTT
import Testing

@Suite struct AccessControlListTests {
    static let rules = """
        # anonymous clients
        topic read public/#

        user alice
        topic readwrite alice/#
        topic deny alice/secret/#
        topic subscribe feeds/+

        user bob
        topic write public/bob
        topic read alice/shared

        pattern readwrite devices/%c/#
        pattern read users/%u/inbox
        """

    enum Who: CaseIterable { case anonymous, alice, bob }
    struct Row: Sendable, CustomStringConvertible {
        var who: Who
        var operation: AccessControlList.Operation
        var topic: String
        var allowed: Bool
        var description: String { "\(who) \(operation) \(topic) → \(allowed)" }
    }

    static let matrix: [Row] = [
        Row(who: .anonymous, operation: .read, topic: "public/news", allowed: true),
        Row(who: .anonymous, operation: .write, topic: "public/news", allowed: false),
        Row(who: .anonymous, operation: .subscribe, topic: "public/#", allowed: true),
        Row(who: .anonymous, operation: .subscribe, topic: "#", allowed: false),
        Row(who: .anonymous, operation: .read, topic: "alice/x", allowed: false),
        Row(who: .alice, operation: .write, topic: "alice/x", allowed: true),
        Row(who: .alice, operation: .read, topic: "alice/x/y", allowed: true),
        Row(who: .alice, operation: .subscribe, topic: "alice/+/y", allowed: true),
        Row(who: .alice, operation: .read, topic: "alice/secret/key", allowed: false),
        Row(who: .alice, operation: .write, topic: "alice/secret", allowed: false),
        Row(who: .alice, operation: .subscribe, topic: "alice/secret/#", allowed: false),
        Row(who: .alice, operation: .read, topic: "public/news", allowed: false),  // user rules replace the anonymous ones
        Row(who: .alice, operation: .subscribe, topic: "feeds/a", allowed: true),
        Row(who: .alice, operation: .read, topic: "feeds/a", allowed: false),  // subscribe alone does not grant read
        Row(who: .alice, operation: .subscribe, topic: "feeds/#", allowed: false),  // wider than the rule
        Row(who: .bob, operation: .write, topic: "public/bob", allowed: true),
        Row(who: .bob, operation: .read, topic: "public/bob", allowed: false),
        Row(who: .bob, operation: .read, topic: "alice/shared", allowed: true),
        Row(who: .bob, operation: .write, topic: "alice/shared", allowed: false),
        // Patterns apply to everyone, with the client id and user name substituted.
        Row(who: .bob, operation: .write, topic: "devices/c-bob/temp", allowed: true),
        Row(who: .bob, operation: .write, topic: "devices/c-alice/temp", allowed: false),
        Row(who: .anonymous, operation: .read, topic: "devices/c-anonymous/cmd", allowed: true),
        Row(who: .alice, operation: .read, topic: "users/alice/inbox", allowed: true),
        Row(who: .alice, operation: .read, topic: "users/bob/inbox", allowed: false),
        Row(who: .anonymous, operation: .read, topic: "users/anonymous/inbox", allowed: false),  // no user name
        Row(who: .bob, operation: .subscribe, topic: "$SYS/#", allowed: false),
    ]

    @Test(arguments: matrix)
    func accessMatrix(_ row: Row) throws {
        let acl = try AccessControlList(parsing: Self.rules, source: "acl")
        let user: String? = row.who == .anonymous ? nil : "\(row.who)"
        #expect(acl.allows(row.operation, row.topic, username: user, clientID: "c-\(user ?? "anonymous")") == row.allowed)
    }

    @Test("a client id or user name with a wildcard or '/' never widens a pattern")
    func substitutionIsSafe() throws {
        let acl = try AccessControlList(parsing: "pattern readwrite devices/%c/#\n", source: "acl")
        #expect(!acl.allows(.subscribe, "devices/#", username: nil, clientID: "#"))
        #expect(!acl.allows(.write, "devices/a/b/x", username: nil, clientID: "a/b"))
    }

    @Test("bad rules name the line")
    func badRules() {
        #expect(throws: ConfigurationError(source: "acl", key: "acl_file", line: 2, message: "unknown access \"rw\"; expected read, write, readwrite, subscribe or deny")) {
            try AccessControlList(parsing: "user a\ntopic rw x\n", source: "acl")
        }
        #expect(throws: ConfigurationError.self) { try AccessControlList(parsing: "topic read a/#/b\n", source: "acl") }
        #expect(throws: ConfigurationError.self) { try AccessControlList(parsing: "allow everything\n", source: "acl") }
    }

    @Test("Topic.covers: a filter inside a pattern")
    func covers() {
        #expect(Topic.covers(pattern: "a/#", filter: "a/b/+"))
        #expect(Topic.covers(pattern: "a/#", filter: "a/#"))
        #expect(Topic.covers(pattern: "a/+", filter: "a/+"))
        #expect(!Topic.covers(pattern: "a/+", filter: "a/#"))
        #expect(!Topic.covers(pattern: "a/b", filter: "a/+"))
        #expect(!Topic.covers(pattern: "#", filter: "$SYS/x"))
        #expect(Topic.covers(pattern: "$SYS/#", filter: "$SYS/x"))
    }
}
