import CMartletSQLite
import MartletMQTT
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// The session store in one SQLite file (Debian's libsqlite3), in WAL mode.
///
/// A message sent to many persistent sessions is stored once (`messages`), and each session
/// refers to it (`deliveries`, one row per queued or in-flight copy), as mosquitto 2.1's
/// SQLite plugin does; a message row goes when its last delivery does. With `synchronous =
/// FULL` (`sync: durable`) every commit fsyncs the WAL, so a committed batch survives power
/// loss; with `NORMAL` (`sync: periodic`) the WAL is synced only at checkpoints, so a commit
/// survives the process being killed but not the machine losing power.
public final class SQLiteSessionStore: SessionStore {
    /// The schema this build writes, kept in `PRAGMA user_version`.
    public static let schemaVersion: Int64 = 1

    public let path: String
    private let database: SQLiteDatabase
    private let allocator = ByteBufferAllocator()

    /// Opens (or creates) the store at `path` and checks it: one that cannot be opened, fails
    /// SQLite's quick check or has a schema from a newer build throws `StoreOpenError`.
    public init(path: String, synchronous: Synchronous) throws {
        self.path = path
        let database: SQLiteDatabase
        do {
            database = try SQLiteDatabase(path: path)
        } catch {
            throw StoreOpenError(reason: "cannot open: \(error.message)")
        }
        self.database = database
        do {
            try database.execute("PRAGMA busy_timeout = 5000")
            guard try database.scalarText("PRAGMA journal_mode = WAL")?.lowercased() == "wal" else {
                throw StoreOpenError(reason: "cannot switch to WAL mode")
            }
            try database.execute("PRAGMA synchronous = \(synchronous == .full ? "FULL" : "NORMAL")")
            // The WAL is truncated back to this after a checkpoint, so it does not keep the
            // size of its largest burst.
            try database.execute("PRAGMA journal_size_limit = 67108864")
            let check = try database.scalarText("PRAGMA quick_check") ?? "no answer"
            guard check == "ok" else { throw StoreOpenError(reason: "integrity check failed: \(check)") }
            try migrate()
        } catch let error as StoreOpenError {
            database.close()
            throw error
        } catch let error as SQLiteError {
            database.close()
            throw StoreOpenError(reason: error.message)
        }
    }

    public enum Synchronous: Sendable { case full, normal }

    /// Why a store file was not usable.
    public struct StoreOpenError: Error, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// Creates the tables of an empty file, or brings an older schema up to this one.
    private func migrate() throws {
        let version = try database.scalarInt("PRAGMA user_version") ?? 0
        if version > Self.schemaVersion {
            throw StoreOpenError(reason: "schema version \(version) is newer than this martletd's (\(Self.schemaVersion))")
        }
        // Each step takes the schema from version i to i + 1, in one transaction.
        let steps: [String] = [
            """
            CREATE TABLE sessions(
                client_id TEXT PRIMARY KEY, version INTEGER NOT NULL, expiry_interval INTEGER NOT NULL, username TEXT,
                will_topic TEXT, will_payload BLOB, will_qos INTEGER, will_retain INTEGER, will_properties BLOB,
                will_expires_at INTEGER, will_delay INTEGER NOT NULL DEFAULT 0,
                offline INTEGER NOT NULL DEFAULT 0, expires_at INTEGER, will_at INTEGER);
            CREATE TABLE subscriptions(
                client_id TEXT NOT NULL, filter TEXT NOT NULL, options INTEGER NOT NULL, identifier INTEGER,
                PRIMARY KEY(client_id, filter)) WITHOUT ROWID;
            CREATE TABLE messages(
                id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
                retain INTEGER NOT NULL, properties BLOB, expires_at INTEGER);
            CREATE TABLE deliveries(
                seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL, message_id INTEGER NOT NULL, qos INTEGER NOT NULL,
                retain INTEGER NOT NULL, subscription_ids BLOB, share_group TEXT, packet_id INTEGER, stage INTEGER NOT NULL);
            CREATE INDEX deliveries_by_client ON deliveries(client_id);
            CREATE INDEX deliveries_by_message ON deliveries(message_id);
            CREATE TABLE inbound_qos2(
                client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;
            CREATE TABLE retained(
                topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL, properties BLOB, expires_at INTEGER);
            """,
        ]
        for i in Int(version)..<steps.count {
            try database.execute("BEGIN IMMEDIATE")
            do {
                try database.execute(steps[i])
                try database.execute("PRAGMA user_version = \(i + 1)")
                try database.execute("COMMIT")
            } catch {
                try? database.execute("ROLLBACK")
                throw error
            }
        }
    }

    public func close() {
        database.close()
    }

    public var sizeInBytes: Int {
        var total = 0
        for suffix in ["", "-wal"] {
            var st = stat()
            if stat(path + suffix, &st) == 0 { total += Int(st.st_size) }
        }
        return total
    }

    public func maintain() throws {
        try database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    // MARK: Writing

    public func apply(_ records: [StoreRecord]) throws {
        // Deliveries queued and done within the batch never reach the file, and a queued
        // delivery's later stages are folded into its insert.
        var records = records
        var insertedAt: [Int64: Int] = [:]
        var skip = [Bool](repeating: false, count: records.count)
        for i in records.indices {
            switch records[i] {
            case .queued(let d):
                insertedAt[d.seq] = i
            case .stage(let seq, let id, let stage):
                guard let at = insertedAt[seq], case .queued(var d) = records[at] else { continue }
                d.packetIdentifier = id
                d.stage = stage
                records[at] = .queued(d)
                skip[i] = true
            case .removed(let seq, _):
                guard let at = insertedAt.removeValue(forKey: seq) else { continue }
                skip[at] = true
                skip[i] = true
            default:
                continue
            }
        }
        // A message whose deliveries in this batch were all cancelled is not written at all
        // (one with no delivery in the batch is: a later batch may refer to it).
        var referenced = Set<Int64>()
        var cancelled = Set<Int64>()
        for i in records.indices {
            if case .queued(let d) = records[i] {
                if skip[i] { cancelled.insert(d.messageID) } else { referenced.insert(d.messageID) }
            }
        }
        let unwritten = cancelled.subtracting(referenced)
        var released = Set<Int64>()
        try database.execute("BEGIN IMMEDIATE")
        do {
            for i in records.indices where !skip[i] {
                try write(records[i], unwritten: unwritten, released: &released)
            }
            for id in released {
                try database.statement("DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = ?1)")
                    .bind(1, id).run()
            }
            try database.execute("COMMIT")
        } catch {
            try? database.execute("ROLLBACK")
            throw error
        }
    }

    private func write(_ record: StoreRecord, unwritten: Set<Int64>, released: inout Set<Int64>) throws {
        switch record {
        case .session(let h):
            let s = try database.statement("""
                INSERT OR REPLACE INTO sessions(client_id, version, expiry_interval, username, will_topic, will_payload, will_qos,
                    will_retain, will_properties, will_expires_at, will_delay, offline, expires_at, will_at)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, NULL, NULL)
                """)
            s.bind(1, h.clientID).bind(2, Int64(h.version.rawValue)).bind(3, Int64(h.expiryInterval)).bind(4, h.username)
            try bindWill(h.will, to: s, from: 5)
            try s.bind(11, Int64(h.willDelay)).run()
        case .offline(let clientID, let expiryInterval, let expiresAt, let will, let willAt):
            let s = try database.statement("""
                UPDATE sessions SET offline = 1, expiry_interval = ?2, expires_at = ?3, will_at = ?4, will_topic = ?5,
                    will_payload = ?6, will_qos = ?7, will_retain = ?8, will_properties = ?9, will_expires_at = ?10
                WHERE client_id = ?1
                """)
            s.bind(1, clientID).bind(2, Int64(expiryInterval)).bind(3, expiresAt).bind(4, willAt)
            try bindWill(will, to: s, from: 5)
            try s.run()
        case .willGone(let clientID):
            try database.statement("UPDATE sessions SET will_topic = NULL, will_payload = NULL, will_at = NULL WHERE client_id = ?1")
                .bind(1, clientID).run()
        case .sessionEnded(let clientID):
            let ids = try database.statement("SELECT DISTINCT message_id FROM deliveries WHERE client_id = ?1").bind(1, clientID)
            while try ids.step() { released.insert(ids.int(0)) }
            for table in ["deliveries", "subscriptions", "inbound_qos2", "sessions"] {
                try database.statement("DELETE FROM \(table) WHERE client_id = ?1").bind(1, clientID).run()
            }
        case .subscribed(let clientID, let filter, let options, let identifier):
            try database.statement("INSERT OR REPLACE INTO subscriptions(client_id, filter, options, identifier) VALUES (?1, ?2, ?3, ?4)")
                .bind(1, clientID).bind(2, filter).bind(3, Int64(options)).bind(4, identifier.map { Int64($0) }).run()
        case .unsubscribed(let clientID, let filter):
            try database.statement("DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2").bind(1, clientID).bind(2, filter).run()
        case .message(let id, let m):
            guard !unwritten.contains(id) else { return }
            let s = try database.statement("""
                INSERT OR IGNORE INTO messages(id, topic, payload, qos, retain, properties, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                """)
            try s.bind(1, id).bind(2, m.topic).bind(3, m.payload).bind(4, Int64(m.qos.rawValue)).bind(5, m.retain ? 1 : 0)
                .bind(6, try encode(m.properties)).bind(7, m.expiresAt).run()
        case .queued(let d):
            var ids: ByteBuffer?
            if !d.subscriptionIdentifiers.isEmpty {
                var b = allocator.buffer(capacity: 4 * d.subscriptionIdentifiers.count)
                for id in d.subscriptionIdentifiers { b.writeInteger(id) }
                ids = b
            }
            try database.statement("""
                INSERT OR REPLACE INTO deliveries(seq, client_id, message_id, qos, retain, subscription_ids, share_group, packet_id, stage)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                """)
                .bind(1, d.seq).bind(2, d.clientID).bind(3, d.messageID).bind(4, Int64(d.qos.rawValue)).bind(5, d.retain ? 1 : 0)
                .bind(6, ids).bind(7, d.group).bind(8, d.packetIdentifier.map { Int64($0) }).bind(9, d.stage.rawValue).run()
        case .stage(let seq, let id, let stage):
            try database.statement("UPDATE deliveries SET packet_id = ?2, stage = ?3 WHERE seq = ?1")
                .bind(1, seq).bind(2, Int64(id)).bind(3, stage.rawValue).run()
        case .removed(let seq, let messageID):
            try database.statement("DELETE FROM deliveries WHERE seq = ?1").bind(1, seq).run()
            released.insert(messageID)
        case .inboundQoS2(let clientID, let id, let added):
            let sql = added
                ? "INSERT OR IGNORE INTO inbound_qos2(client_id, packet_id) VALUES (?1, ?2)"
                : "DELETE FROM inbound_qos2 WHERE client_id = ?1 AND packet_id = ?2"
            try database.statement(sql).bind(1, clientID).bind(2, Int64(id)).run()
        case .retained(let topic, let m):
            guard let m else {
                try database.statement("DELETE FROM retained WHERE topic = ?1").bind(1, topic).run()
                return
            }
            try database.statement("INSERT OR REPLACE INTO retained(topic, payload, qos, properties, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)")
                .bind(1, topic).bind(2, m.payload).bind(3, Int64(m.qos.rawValue)).bind(4, try encode(m.properties)).bind(5, m.expiresAt).run()
        }
    }

    private func bindWill(_ will: StoredMessage?, to s: SQLiteStatement, from first: Int32) throws {
        guard let will else {
            for i in first..<(first + 6) { s.bind(i, nil as Int64?) }
            return
        }
        s.bind(first, will.topic).bind(first + 1, will.payload).bind(first + 2, Int64(will.qos.rawValue))
            .bind(first + 3, will.retain ? 1 : 0).bind(first + 4, try encode(will.properties)).bind(first + 5, will.expiresAt)
    }

    private func encode(_ properties: Properties) throws -> ByteBuffer? {
        guard !properties.isEmpty else { return nil }
        var buffer = allocator.buffer(capacity: 32)
        try properties.write(to: &buffer)
        return buffer
    }

    private func decode(_ buffer: ByteBuffer?) -> Properties {
        guard var buffer else { return [] }
        return (try? Properties.read(from: &buffer, context: .publish)) ?? []
    }

    // MARK: Loading

    public func load(now: Int64) throws -> StoredState {
        var state = StoredState()
        var index: [String: Int] = [:]
        var expired: [String] = []
        let sessions = try database.statement("""
            SELECT client_id, version, expiry_interval, username, will_topic, will_payload, will_qos, will_retain, will_properties,
                   will_expires_at, will_delay, offline, expires_at, will_at FROM sessions
            """)
        while try sessions.step() {
            let clientID = sessions.text(0) ?? ""
            let offline = sessions.int(11) != 0
            let expiresAt = sessions.optionalInt(12)
            if offline, let expiresAt, expiresAt <= now {
                expired.append(clientID)
                continue
            }
            var will: StoredMessage?
            if let topic = sessions.text(4), let payload = sessions.blob(5, allocator: allocator) {
                will = StoredMessage(
                    topic: topic, payload: payload, qos: QoS(rawValue: UInt8(truncatingIfNeeded: sessions.int(6))) ?? .atMostOnce,
                    retain: sessions.int(7) != 0, properties: decode(sessions.blob(8, allocator: allocator)),
                    expiresAt: sessions.optionalInt(9))
            }
            let header = StoredSessionHeader(
                clientID: clientID, version: ProtocolVersion(rawValue: UInt8(truncatingIfNeeded: sessions.int(1))) ?? .v3_1_1,
                expiryInterval: UInt32(truncatingIfNeeded: sessions.int(2)), username: sessions.text(3), will: will,
                willDelay: UInt32(truncatingIfNeeded: sessions.int(10)))
            index[clientID] = state.sessions.count
            state.sessions.append(StoredState.Session(
                header: header, offline: offline ? .init(expiresAt: expiresAt, will: will, willAt: sessions.optionalInt(13)) : nil,
                subscriptions: [], deliveries: [], inboundQoS2: []))
        }
        let subscriptions = try database.statement("SELECT client_id, filter, options, identifier FROM subscriptions")
        while try subscriptions.step() {
            guard let i = index[subscriptions.text(0) ?? ""], let filter = subscriptions.text(1),
                  let options = try? SubscriptionOptions.read(UInt8(truncatingIfNeeded: subscriptions.int(2)), version: .v5) else { continue }
            state.sessions[i].subscriptions.append((filter, options, subscriptions.optionalInt(3).map { UInt32(truncatingIfNeeded: $0) }))
        }
        var gone: [(seq: Int64, message: Int64)] = []
        let deliveries = try database.statement("""
            SELECT d.seq, d.client_id, d.message_id, d.qos, d.retain, d.subscription_ids, d.share_group, d.packet_id, d.stage,
                   m.topic, m.payload, m.qos, m.retain, m.properties, m.expires_at
            FROM deliveries d JOIN messages m ON m.id = d.message_id ORDER BY d.seq
            """)
        while try deliveries.step() {
            let seq = deliveries.int(0)
            let messageID = deliveries.int(2)
            guard let i = index[deliveries.text(1) ?? ""], let topic = deliveries.text(9),
                  let payload = deliveries.blob(10, allocator: allocator) else {
                gone.append((seq, messageID))
                continue
            }
            let expiresAt = deliveries.optionalInt(14)
            let stage = StoredStage(rawValue: deliveries.int(8)) ?? .queued
            if let expiresAt, expiresAt <= now, stage == .queued {
                // Waited past its Message Expiry Interval (MQTT-3.3.2-5).
                gone.append((seq, messageID))
                state.expiredMessages += 1
                continue
            }
            var ids: [UInt32] = []
            if var b = deliveries.blob(5, allocator: allocator) {
                while let id = b.readInteger(as: UInt32.self) { ids.append(id) }
            }
            let message = StoredMessage(
                topic: topic, payload: payload, qos: QoS(rawValue: UInt8(truncatingIfNeeded: deliveries.int(11))) ?? .atLeastOnce,
                retain: deliveries.int(12) != 0, properties: decode(deliveries.blob(13, allocator: allocator)), expiresAt: expiresAt)
            let delivery = StoredDelivery(
                seq: seq, clientID: deliveries.text(1) ?? "", messageID: messageID,
                qos: QoS(rawValue: UInt8(truncatingIfNeeded: deliveries.int(3))) ?? .atLeastOnce, retain: deliveries.int(4) != 0,
                subscriptionIdentifiers: ids, group: deliveries.text(6),
                packetIdentifier: deliveries.optionalInt(7).map { UInt16(truncatingIfNeeded: $0) }, stage: stage)
            state.sessions[i].deliveries.append((delivery, message))
        }
        let inbound = try database.statement("SELECT client_id, packet_id FROM inbound_qos2")
        while try inbound.step() {
            guard let i = index[inbound.text(0) ?? ""] else { continue }
            state.sessions[i].inboundQoS2.append(UInt16(truncatingIfNeeded: inbound.int(1)))
        }
        var expiredRetained: [String] = []
        let retained = try database.statement("SELECT topic, payload, qos, properties, expires_at FROM retained")
        while try retained.step() {
            guard let topic = retained.text(0), let payload = retained.blob(1, allocator: allocator) else { continue }
            let expiresAt = retained.optionalInt(4)
            if let expiresAt, expiresAt <= now {
                expiredRetained.append(topic)
                continue
            }
            state.retained.append(StoredMessage(
                topic: topic, payload: payload, qos: QoS(rawValue: UInt8(truncatingIfNeeded: retained.int(2))) ?? .atMostOnce,
                retain: true, properties: decode(retained.blob(3, allocator: allocator)), expiresAt: expiresAt))
        }
        // Messages no delivery refers to any more (none should be left; this keeps it so).
        try database.execute("DELETE FROM messages WHERE NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = messages.id)")
        state.nextMessageID = (try database.scalarInt("SELECT max(id) FROM messages") ?? 0) + 1
        state.nextSequence = (try database.scalarInt("SELECT max(seq) FROM deliveries") ?? 0) + 1
        state.nextNegativeMessageID = max(1, 1 - (try database.scalarInt("SELECT min(id) FROM messages") ?? 0))
        state.expiredSessions = expired.count
        // What expired while the broker was down is deleted now, in one transaction.
        if !expired.isEmpty || !gone.isEmpty || !expiredRetained.isEmpty {
            var records: [StoreRecord] = expired.map { .sessionEnded(clientID: $0) }
            records += gone.map { .removed(seq: $0.seq, messageID: $0.message) }
            records += expiredRetained.map { .retained(topic: $0, nil) }
            try apply(records)
        }
        return state
    }
}
