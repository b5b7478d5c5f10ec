import Foundation
import Logging
import MartletBroker
@testable import MartletCluster
import MartletTestSupport
import NIOConcurrencyHelpers
import Testing

/// Ownership of persistent sessions' records by compare-and-set on their revision, against a
/// real nats-server (Debian's, JetStream on): two nodes write one client id's record in every
/// order, and the record ends with the later claim while the node with the earlier one is
/// told to release its connection.
@Suite(.serialized) struct SessionOwnershipTests {
    /// One nats-server with JetStream on a free loopback port, stopped at the end.
    final class Server: Sendable {
        let process: SpawnedProcess
        let url: String
        let directory: String

        init() throws {
            directory = scratchPath("martlet-ownership")
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let port = Int.random(in: 20_000...29_999)
            url = "nats://127.0.0.1:\(port)"
            let config = "\(directory)/nats.conf"
            try "listen: 127.0.0.1:\(port)\njetstream { store_dir: \"\(directory)/js\" }\n".write(toFile: config, atomically: true, encoding: .utf8)
            process = try SpawnedProcess("/usr/sbin/nats-server", ["-c", config], captureOutput: false)
        }

        func stop() {
            process.kill()
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// A node's writer of records, with the releases it was told to make.
    struct Writer {
        let node: ClusterNode
        let ownership: SessionOwnership
        let released: NIOLockedValueBox<[(String, Int64)]>
    }

    static func writer(_ server: Server, _ name: String) throws -> Writer {
        var configuration = ClusterConfiguration(nodeID: name, servers: [server.url])
        configuration.replicas = 1
        let node = try ClusterNode.join(configuration, logger: Logger(label: "test.\(name)"))
        let released = NIOLockedValueBox<[(String, Int64)]>([])
        let ownership = SessionOwnership(
            runID: node.runID, store: ClusterNode.sessionStore(node.handle), label: name,
            logger: Logger(label: "test.\(name)"), statistics: node.statistics, retryDelay: .milliseconds(50)
        ) { clientID, claimedAt in released.withLockedValue { $0.append((clientID, claimedAt)) } }
        return Writer(node: node, ownership: ownership, released: released)
    }

    static func record(claimedAt: Int64, cursor: Int64 = 0) -> ClusterSessionRecord {
        ClusterSessionRecord(owner: "", claimedAt: claimedAt, version: 5, username: nil, expiryInterval: 3600, online: true,
                             cursor: cursor, subscriptions: [.init(filter: "a/#", options: 1, identifier: nil)])
    }

    /// The record as the bucket has it now.
    static func stored(_ writer: Writer, _ clientID: String) -> ClusterSessionRecord? {
        ClusterNode.sessionStore(writer.node.handle).read(ClusterSubjects.key(topic: clientID)).record
    }

    /// Waits until every queued write of `writers` is done.
    static func settle(_ writers: Writer...) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while writers.contains(where: { !$0.ownership.isIdle }) {
            guard ContinuousClock.now < deadline else { throw Unfinished() }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    struct Unfinished: Error {}

    static func withWriters(_ body: (Writer, Writer) async throws -> Void) async throws {
        let server = try Server()
        defer { server.stop() }
        let a = try writer(server, "a")
        let b = try writer(server, "b")
        defer {
            a.node.close()
            b.node.close()
        }
        try await body(a, b)
    }

    @Test func laterClaimTakesTheRecordAndTheEarlierOwnerReleases() async throws {
        try await Self.withWriters { a, b in
            a.ownership.submit("c1", .save(Self.record(claimedAt: 100)))
            try await Self.settle(a)
            #expect(Self.stored(a, "c1")?.owner == a.node.runID)

            // B's client connected later: B reads A's record (an earlier claim) and writes over it.
            b.ownership.submit("c1", .save(Self.record(claimedAt: 200)))
            try await Self.settle(b)
            #expect(Self.stored(a, "c1")?.owner == b.node.runID)
            #expect(b.released.withLockedValue { $0.isEmpty })

            // A has not heard: its checkpoint finds another revision, reads the record, sees
            // the later claim and releases its connection instead of writing.
            a.ownership.submit("c1", .save(Self.record(claimedAt: 100, cursor: 7)))
            try await Self.settle(a)
            let stored = Self.stored(a, "c1")
            #expect(stored?.owner == b.node.runID)
            #expect(stored?.claimedAt == 200)
            #expect(stored?.cursor == 0)
            #expect(a.released.withLockedValue { $0.map(\.0) } == ["c1"])
            #expect(a.released.withLockedValue { $0.map(\.1) } == [200])
            #expect(a.ownership.count == 0)

            // Nor can A's session expiry delete the record B holds.
            a.ownership.submit("c1", .remove(claimedAt: 100))
            try await Self.settle(a)
            #expect(Self.stored(a, "c1")?.owner == b.node.runID)
        }
    }

    @Test func aLaterConnectionOnTheLosingNodeStillWrites() async throws {
        try await Self.withWriters { a, b in
            for round in 0..<10 {
                let client = "back-\(round)"
                a.ownership.submit(client, .save(Self.record(claimedAt: 100)))
                try await Self.settle(a)
                b.ownership.submit(client, .save(Self.record(claimedAt: 200)))
                try await Self.settle(b)
                // A's stale write finds B's record; meanwhile the client connects to A again.
                a.ownership.submit(client, .save(Self.record(claimedAt: 100, cursor: 1)))
                if round % 2 == 1 { try await Task.sleep(for: .milliseconds(1)) }
                a.ownership.submit(client, .save(Self.record(claimedAt: 300, cursor: 2)))
                try await Self.settle(a)
                let stored = Self.stored(a, client)
                #expect(stored?.owner == a.node.runID && stored?.claimedAt == 300, "round \(round)")
            }
        }
    }

    @Test func anEarlierClaimArrivingLateDoesNotWrite() async throws {
        try await Self.withWriters { a, b in
            b.ownership.submit("c2", .save(Self.record(claimedAt: 200)))
            try await Self.settle(b)
            a.ownership.submit("c2", .save(Self.record(claimedAt: 150)))
            try await Self.settle(a)
            #expect(Self.stored(b, "c2")?.claimedAt == 200)
            #expect(a.released.withLockedValue { $0.count } == 1)
        }
    }

    @Test func theOwnerRemovesItsRecordAndAnotherNodeWritesAfterTheDelete() async throws {
        try await Self.withWriters { a, b in
            a.ownership.submit("c3", .save(Self.record(claimedAt: 100)))
            a.ownership.submit("c3", .save(Self.record(claimedAt: 100, cursor: 5)))
            try await Self.settle(a)
            #expect(Self.stored(a, "c3")?.cursor == 5)
            a.ownership.submit("c3", .remove(claimedAt: 100))
            try await Self.settle(a)
            #expect(Self.stored(a, "c3") == nil)
            #expect(a.ownership.count == 0)
            // The key's last revision is now a delete marker: a compare-and-set against it.
            b.ownership.submit("c3", .save(Self.record(claimedAt: 300)))
            try await Self.settle(b)
            #expect(Self.stored(a, "c3")?.owner == b.node.runID)
        }
    }

    @Test func verifyingAfterAReconnectFindsTheRecordTaken() async throws {
        try await Self.withWriters { a, b in
            a.ownership.submit("c4", .save(Self.record(claimedAt: 100)))
            try await Self.settle(a)
            b.ownership.submit("c4", .save(Self.record(claimedAt: 200)))
            try await Self.settle(b)
            #expect(a.ownership.count == 1)
            a.ownership.verifyAll()
            try await Self.settle(a)
            #expect(a.released.withLockedValue { $0.map(\.1) } == [200])
            #expect(a.ownership.count == 0)
            // B's own verification keeps its hold.
            b.ownership.verifyAll()
            try await Self.settle(b)
            #expect(b.released.withLockedValue { $0.isEmpty })
            #expect(b.ownership.count == 1)
        }
    }

    /// Both nodes keep writing at once, each with a later claim than the other's last: the
    /// record ends with the latest claim, and the node that lost releases.
    @Test func racingWritersEndWithTheLatestClaim() async throws {
        try await Self.withWriters { a, b in
            for round in 0..<20 {
                let client = "race-\(round)"
                let first = Int64(1_000 + round * 10)
                // Who claims last alternates.
                let (early, late) = round % 2 == 0 ? (a, b) : (b, a)
                async let one: Void = { for i in 0..<5 { early.ownership.submit(client, .save(Self.record(claimedAt: first, cursor: Int64(i)))) } }()
                async let two: Void = { for i in 0..<5 { late.ownership.submit(client, .save(Self.record(claimedAt: first + 1, cursor: Int64(i)))) } }()
                _ = await (one, two)
                try await Self.settle(a, b)
                let stored = Self.stored(a, client)
                #expect(stored?.owner == late.node.runID, "round \(round)")
                #expect(stored?.claimedAt == first + 1, "round \(round)")
                #expect(late.released.withLockedValue { r in !r.contains { $0.0 == client } }, "round \(round)")
            }
        }
    }
}
