import Foundation
import Logging
import MartletAuth
@testable import MartletBroker
import MartletMQTT
import MartletTestSupport
import NIOCore
import Testing

/// The SQLite session store on real files: what is written comes back, a message is stored
/// once, rows go when they are done, expired things are left out at load, and unusable files
/// are moved aside.
@Suite struct SQLiteSessionStoreTests {
    func freshPath() -> String {
        let dir = scratchPath("store")
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir + "/store.db"
    }

    func message(_ topic: String, _ payload: String, qos: QoS = .atLeastOnce, expiresAt: Int64? = nil,
                 properties: Properties = []) -> StoredMessage {
        StoredMessage(topic: topic, payload: ByteBuffer(string: payload), qos: qos, retain: false, properties: properties, expiresAt: expiresAt)
    }

    func delivery(_ seq: Int64, _ clientID: String, message: Int64, stage: StoredStage = .queued, packetID: UInt16? = nil,
                  ids: [UInt32] = []) -> StoredDelivery {
        StoredDelivery(seq: seq, clientID: clientID, messageID: message, qos: .atLeastOnce, retain: false,
                       subscriptionIdentifiers: ids, group: nil, packetIdentifier: packetID, stage: stage)
    }

    func header(_ clientID: String, will: StoredMessage? = nil) -> StoredSessionHeader {
        StoredSessionHeader(clientID: clientID, version: .v5, expiryInterval: 3600, username: "user-\(clientID)", will: will, willDelay: 5)
    }

    /// Rows of a table, counted with Debian's sqlite3 shell (a second connection).
    func count(_ path: String, _ table: String) throws -> Int {
        let p = try SpawnedProcess("/usr/bin/sqlite3", [path, "SELECT count(*) FROM \(table)"])
        while p.isRunning { usleep(1000) }
        return Int(p.output().stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    @Test("Sessions, subscriptions, deliveries (in order, with their stage), QoS 2 ids and retained messages come back after a reopen; a message two sessions share is stored once")
    func roundTrip() throws {
        let path = freshPath()
        let now = Router.wallClock()
        var properties = Properties()
        properties.appendUserProperty("k", "v")
        properties.contentType = "text/plain"
        do {
            let store = try SQLiteSessionStore(path: path, synchronous: .full)
            try store.apply([
                .session(header("a", will: message("wills/a", "bye"))),
                .session(header("b")),
                .subscribed(clientID: "a", filter: "t/#", options: SubscriptionOptions(qos: .exactlyOnce, noLocal: true).byte, identifier: 7),
                .subscribed(clientID: "b", filter: "$share/g/t/+", options: SubscriptionOptions(qos: .atLeastOnce).byte, identifier: nil),
                .message(id: 10, message("t/1", "first", properties: properties)),
                .queued(delivery(100, "a", message: 10, ids: [7])),
                .queued(delivery(101, "b", message: 10)),
                .message(id: 11, message("t/2", "second")),
                .queued(delivery(102, "a", message: 11)),
                .inboundQoS2(clientID: "a", packetIdentifier: 42, added: true),
                .retained(topic: "r/1", message("r/1", "kept", qos: .atMostOnce)),
            ])
            try store.apply([
                .stage(seq: 100, packetIdentifier: 3, .awaitingPubAck),
                .offline(clientID: "b", expiryInterval: 60, expiresAt: now + 60_000, will: nil, willAt: nil),
            ])
            store.close()
        }
        #expect(try count(path, "messages") == 2)
        #expect(try count(path, "deliveries") == 3)
        let store = try SQLiteSessionStore(path: path, synchronous: .full)
        defer { store.close() }
        let state = try store.load(now: now)
        #expect(state.sessions.count == 2)
        let a = try #require(state.sessions.first { $0.header.clientID == "a" })
        let b = try #require(state.sessions.first { $0.header.clientID == "b" })
        #expect(a.header == header("a", will: message("wills/a", "bye")))
        #expect(a.offline == nil)
        #expect(b.offline?.expiresAt == now + 60_000)
        #expect(a.subscriptions.map(\.filter) == ["t/#"])
        #expect(a.subscriptions.first?.options == SubscriptionOptions(qos: .exactlyOnce, noLocal: true))
        #expect(a.subscriptions.first?.identifier == 7)
        #expect(b.subscriptions.map(\.filter) == ["$share/g/t/+"])
        #expect(a.deliveries.map(\.0.seq) == [100, 102])
        #expect(a.deliveries[0].0 == delivery(100, "a", message: 10, stage: .awaitingPubAck, packetID: 3, ids: [7]))
        #expect(a.deliveries[0].1 == message("t/1", "first", properties: properties))
        #expect(b.deliveries.map(\.1.payload) == [ByteBuffer(string: "first")])
        #expect(a.inboundQoS2 == [42])
        #expect(state.retained.map(\.topic) == ["r/1"])
        #expect(state.retained.first?.retain == true)
        #expect(state.nextSequence == 103)
        #expect(state.nextMessageID == 12)
    }

    @Test("A message row goes with its last delivery; an ended session takes its rows and the messages only it held")
    func rowsGoWhenDone() throws {
        let path = freshPath()
        let store = try SQLiteSessionStore(path: path, synchronous: .normal)
        defer { store.close() }
        try store.apply([
            .session(header("a")), .session(header("b")),
            .subscribed(clientID: "a", filter: "x", options: 1, identifier: nil),
            .message(id: 1, message("x", "shared")), .queued(delivery(1, "a", message: 1)), .queued(delivery(2, "b", message: 1)),
            .message(id: 2, message("x", "a only")), .queued(delivery(3, "a", message: 2)),
            .inboundQoS2(clientID: "a", packetIdentifier: 9, added: true),
        ])
        try store.apply([.removed(seq: 1, messageID: 1)])
        #expect(try count(path, "messages") == 2)  // b still holds message 1
        try store.apply([.removed(seq: 2, messageID: 1)])
        #expect(try count(path, "messages") == 1)
        try store.apply([.sessionEnded(clientID: "a")])
        #expect(try count(path, "messages") == 0)
        #expect(try count(path, "deliveries") == 0)
        #expect(try count(path, "subscriptions") == 0)
        #expect(try count(path, "inbound_qos2") == 0)
        #expect(try count(path, "sessions") == 1)
    }

    @Test("Within one batch, a delivery queued and acknowledged never reaches the file (nor its message); later stages fold into the insert")
    func batchesCoalesce() throws {
        let path = freshPath()
        let store = try SQLiteSessionStore(path: path, synchronous: .full)
        defer { store.close() }
        try store.apply([
            .session(header("a")),
            .message(id: 1, message("x", "gone at once")), .queued(delivery(1, "a", message: 1)),
            .stage(seq: 1, packetIdentifier: 5, .awaitingPubAck), .removed(seq: 1, messageID: 1),
            .message(id: 2, message("x", "in flight")), .queued(delivery(2, "a", message: 2)),
            .stage(seq: 2, packetIdentifier: 6, .awaitingPubRec), .stage(seq: 2, packetIdentifier: 6, .awaitingPubComp),
        ])
        #expect(try count(path, "messages") == 1)
        let state = try store.load(now: Router.wallClock())
        #expect(state.sessions.first?.deliveries.map(\.0) == [delivery(2, "a", message: 2, stage: .awaitingPubComp, packetID: 6)])
    }

    @Test("At load, expiry runs on the wall clock: an offline session past its deadline, a queued message past its expiry and an expired retained message are left out and deleted; an in-flight one stays")
    func expiredAtLoad() throws {
        let path = freshPath()
        let now = Router.wallClock()
        let store = try SQLiteSessionStore(path: path, synchronous: .full)
        try store.apply([
            .session(header("gone")), .offline(clientID: "gone", expiryInterval: 10, expiresAt: now - 1, will: nil, willAt: nil),
            .session(header("kept")), .offline(clientID: "kept", expiryInterval: 10, expiresAt: now + 10_000, will: nil, willAt: nil),
            .message(id: 1, message("x", "stale", expiresAt: now - 1)), .queued(delivery(1, "kept", message: 1)),
            .message(id: 2, message("x", "sent already", expiresAt: now - 1)),
            .queued(delivery(2, "kept", message: 2, stage: .awaitingPubAck, packetID: 1)),
            .message(id: 3, message("x", "fresh", expiresAt: now + 10_000)), .queued(delivery(3, "kept", message: 3)),
            .retained(topic: "r/old", message("r/old", "old", expiresAt: now - 1)),
            .retained(topic: "r/new", message("r/new", "new")),
        ])
        let state = try store.load(now: now)
        store.close()
        #expect(state.sessions.map(\.header.clientID) == ["kept"])
        #expect(state.expiredSessions == 1 && state.expiredMessages == 1)
        #expect(state.sessions[0].deliveries.map(\.0.seq) == [2, 3])
        #expect(state.retained.map(\.topic) == ["r/new"])
        #expect(try count(path, "sessions") == 1)
        #expect(try count(path, "messages") == 2)
        #expect(try count(path, "retained") == 1)
    }

    @Test("The schema version is stored; a file from a newer schema is refused with the reason")
    func schemaVersion() throws {
        let path = freshPath()
        try SQLiteSessionStore(path: path, synchronous: .full).close()
        let read = try SpawnedProcess("/usr/bin/sqlite3", [path, "PRAGMA user_version"])
        while read.isRunning { usleep(1000) }
        #expect(read.output().stdout == "\(SQLiteSessionStore.schemaVersion)\n")
        let bump = try SpawnedProcess("/usr/bin/sqlite3", [path, "PRAGMA user_version = 99"])
        while bump.isRunning { usleep(1000) }
        #expect(throws: SQLiteSessionStore.StoreOpenError.self) { try SQLiteSessionStore(path: path, synchronous: .full) }
        do {
            _ = try SQLiteSessionStore(path: path, synchronous: .full)
        } catch {
            #expect("\(error)".contains("schema version 99 is newer"))
        }
    }

    @Test("A file that is not a database, or a truncated one, is moved aside (FILE.corrupt-<time>, bytes untouched) and the broker gets an empty store")
    func unusableFilesAreMovedAside() throws {
        for damage in ["garbage", "truncated"] {
            let path = freshPath()
            if damage == "garbage" {
                try Data(repeating: 0x5A, count: 8192).write(to: URL(fileURLWithPath: path))
            } else {
                let store = try SQLiteSessionStore(path: path, synchronous: .full)
                try store.apply((1...2000).flatMap { i -> [StoreRecord] in
                    [.session(header("c\(i)")), .subscribed(clientID: "c\(i)", filter: "t/\(i)", options: 1, identifier: nil)]
                })
                store.close()
                let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
                let size = try handle.seekToEnd()
                try handle.truncate(atOffset: size / 2)
                try handle.close()
            }
            let before = try Data(contentsOf: URL(fileURLWithPath: path))
            let (store, state) = try MQTTBroker.openStore(.init(path: path), logger: Logger(label: "test"))
            store.close()
            #expect(state.sessions.isEmpty, "\(damage)")
            let dir = (path as NSString).deletingLastPathComponent
            let aside = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("store.db.corrupt-") && !$0.hasSuffix("-wal") && !$0.hasSuffix("-shm") }
            #expect(aside.count == 1, "\(damage): \(aside)")
            if let name = aside.first {
                #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name)) == before, "\(damage): the bad file was changed")
            }
            let again = try SQLiteSessionStore(path: path, synchronous: .full)
            again.close()
        }
    }

    @Test("A store that cannot be created at all (its directory is missing) stops the start with the key and the reason")
    func uncreatableStoreIsAConfigurationError() throws {
        let path = scratchPath("no-such-dir") + "/store.db"
        #expect(throws: ConfigurationError.self) { _ = try MQTTBroker.openStore(.init(path: path), logger: Logger(label: "test")) }
    }
}
