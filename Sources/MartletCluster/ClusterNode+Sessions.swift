import CMartletNATS
import Foundation
import MartletBroker
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore

/// The bucket handles a node reads and writes synchronously, off the event loops. libnats
/// locks inside every call on them; they live as long as the node.
struct Buckets: @unchecked Sendable {
    let sessions: OpaquePointer
    let wills: OpaquePointer
    let nodes: OpaquePointer
}

/// Sessions, wills and node liveness across the cluster.
///
/// - A persistent session's record (`martlet_sessions`) holds its subscriptions and its
///   cursor; a node where its client reconnects reads it and the stored messages since.
/// - Each connection's will is in `martlet_wills` under its node's run until it is published
///   or discarded there.
/// - Each node puts a heartbeat in `martlet_nodes`; when one stops, the first node to create
///   `gone-<run>` publishes that run's wills (after their delays, unless the session was
///   resumed elsewhere meanwhile): once.
extension ClusterNode {
    func openBuckets() throws(ClusterError) {
        var opened: [OpaquePointer] = []
        for name in [Self.sessionsBucket, Self.willsBucket, Self.nodesBucket] {
            guard let bucket = mn_open_bucket(handle.pointer, name) else { throw ClusterError(description: "cannot open the bucket \(name)") }
            opened.append(bucket)
        }
        bucketHandles.withLockedValue { $0 = Buckets(sessions: opened[0], wills: opened[1], nodes: opened[2]) }
    }

    // MARK: Session records

    public func sessionSaved(_ clientID: String, _ record: ClusterSessionRecord) {
        sessionKeys.withLockedValue { _ = $0.insert(ClusterSubjects.key(topic: clientID)) }
        ownership.submit(clientID, .save(record))
    }

    public func sessionRemoved(_ clientID: String, claimedAt: Int64) {
        // Keys no node wrote need no delete (the watch of the bucket's keys tells).
        guard sessionKeys.withLockedValue({ $0.remove(ClusterSubjects.key(topic: clientID)) }) != nil else { return }
        ownership.submit(clientID, .remove(claimedAt: claimedAt))
    }

    /// The sessions bucket as `SessionOwnership` reads and writes it.
    static func sessionStore(_ handle: NATSHandle) -> SessionOwnership.Store {
        SessionOwnership.Store(
            read: { key in
                var value: UnsafeMutableRawPointer?
                var length: Int32 = 0
                var revision: UInt64 = 0
                let status = mn_bucket_read(handle.pointer, sessionsBucket, key, &value, &length, &revision)
                guard status == 0, let value else { return (status, nil, revision) }
                defer { free(value) }
                // An unreadable record is treated as none (written over).
                let record = try? JSONDecoder().decode(ClusterSessionRecord.self, from: Data(bytes: value, count: Int(length)))
                return (record == nil ? 1 : 0, record, revision)
            },
            write: { key, record, expected in
                var revision: UInt64 = 0
                guard let record else {
                    return (mn_bucket_write(handle.pointer, sessionsBucket, key, nil, 0, 1, expected, &revision), revision)
                }
                guard let data = try? JSONEncoder().encode(record) else { return (-1, 0) }
                let status = data.withUnsafeBytes { bytes in
                    mn_bucket_write(handle.pointer, sessionsBucket, key, bytes.baseAddress, Int32(bytes.count), 0, expected, &revision)
                }
                return (status, revision)
            })
    }

    public func willSaved(_ clientID: String, _ will: ClusterWill?) {
        let subject = "$KV.\(Self.willsBucket).\(runID).\(ClusterSubjects.key(topic: clientID))"
        if let will, let data = try? JSONEncoder().encode(will) {
            _ = publish(subject: subject, headers: [], payload: ByteBuffer(bytes: data), stored: true)
        } else {
            _ = publish(subject: subject, headers: [("KV-Operation", "DEL")], payload: ByteBuffer(), stored: true)
        }
    }

    public func loadSession(_ clientID: String, _ done: @escaping @Sendable (ClusterSessionLoad) -> Void) {
        let store = Self.sessionStore(handle)
        let deadline = DispatchTime.now() + .milliseconds(configuration.sessionLoadTimeout)
        let key = ClusterSubjects.key(topic: clientID)
        @Sendable func attempt() {
            let (status, record, _) = store.read(key)
            if status >= 0 {
                done(record.map { .found($0) } ?? .none)
            } else if DispatchTime.now() + .milliseconds(250) < deadline {
                // No answer (JetStream electing a leader, NATS reconnecting): again shortly.
                background.asyncAfter(deadline: .now() + .milliseconds(250), execute: attempt)
            } else {
                done(.unavailable)
            }
        }
        background.async(execute: attempt)
    }

    /// Every current value in `bucket` whose key matches `keys` (a NATS subject pattern);
    /// nil when the bucket could not be read.
    static func entries(of bucket: OpaquePointer, keys: String) -> [(key: String, value: Data)]? {
        let collector = EntryCollector()
        let context = Unmanaged.passRetained(collector).toOpaque()
        defer { Unmanaged<EntryCollector>.fromOpaque(context).release() }
        let status = mn_bucket_entries(bucket, keys, context) { context, key, value, length, _ in
            guard let key else { return }
            let data = value.map { Data(bytes: $0, count: Int(length)) } ?? Data()
            Unmanaged<EntryCollector>.fromOpaque(context!).takeUnretainedValue().entries.withLockedValue { $0.append((String(cString: key), data)) }
        }
        return status == 0 ? collector.entries.withLockedValue { $0 } : nil
    }

    /// Follows the keys of the sessions bucket (without values).
    func followSessionKeys() throws {
        let context = Unmanaged.passRetained(WatchBox(node: self)).toOpaque()
        try check { mn_watch_bucket(handle.pointer, Self.sessionsBucket, 1, context, { context, key, _, _, op in
            guard let key else { return }
            let node = Unmanaged<WatchBox>.fromOpaque(context!).takeUnretainedValue().node
            let name = String(cString: key)
            node.sessionKeys.withLockedValue { if op == 0 { $0.insert(name) } else { $0.remove(name) } }
        }, $0, $1) }
    }

    // MARK: Replay

    public func replay(since: Int64, wanted: @escaping @Sendable (String) -> Bool, _ done: @escaping @Sendable ([Message]?) -> Void) {
        let handle = self.handle
        background.async {
            let collector = ReplayCollector(wanted: wanted)
            let context = Unmanaged.passRetained(collector).toOpaque()
            let status = mn_replay(handle.pointer, Self.stream, "mqtts.>", since, 0, 0, 30_000, context) { context, msg in
                guard let msg else { return }
                Unmanaged<ReplayCollector>.fromOpaque(context!).takeUnretainedValue().add(msg)
            }
            Unmanaged<ReplayCollector>.fromOpaque(context).release()
            done(status == 0 ? collector.messages.withLockedValue { $0 } : nil)
        }
    }

    // MARK: Gaps

    /// A stored message on `subject` whose predecessor there (`previousOnSubject`) is newer
    /// than the last one this node received on it: the ones between were lost on the way
    /// (a NATS server died after the stream stored them). They are read from the stream and
    /// routed here, after the message that showed the gap.
    func checkForGap(subject: String, sequence: UInt64, previousOnSubject: UInt64) {
        let missing: ClosedRange<UInt64>? = lastOnSubject.withLockedValue { last in
            defer {
                if last.count >= 100_000 { last.removeAll() }
                last[subject] = sequence
            }
            guard let seen = last[subject], previousOnSubject > seen else { return nil }
            return (seen + 1)...previousOnSubject
        }
        guard let missing, let topic = ClusterSubjects.topic(subject: subject) else { return }
        statistics.gaps.add(1, ordering: .relaxed)
        logger.warning("stored messages lost on the way to this node: reading them from the stream", metadata: [
            "topic": "\(topic)", "from": "\(missing.lowerBound)", "to": "\(missing.upperBound)",
        ])
        readStream(ClusterSubjects.storedSubject(topic: topic), from: missing.lowerBound, to: missing.upperBound, since: 0) { [self] messages in
            guard let broker = broker.withLockedValue({ $0 }) else { return }
            for (message, _) in messages {
                statistics.gapMessages.add(1, ordering: .relaxed)
                broker.deliverFromCluster(message)
            }
        }
    }

    /// The NATS connection came back after being down since `since` (wall-clock ms): stored
    /// messages republished meanwhile never reached this node. A later message on the same
    /// topic shows such a gap; for the last ones on their topics nothing would. So the
    /// stream is read from a little before the connection went down, and what this node's
    /// subscriptions need and it has not received (by stream sequence, per subject) is
    /// routed here.
    func catchUp(since: Int64) {
        let interest = interestSubjects
        readStream("mqtts.>", from: 0, to: 0, since: since - ClusterSessionRecord.replayMargin) { [self] messages in
            guard let broker = broker.withLockedValue({ $0 }) else { return }
            for (message, sequence) in messages {
                let subject = ClusterSubjects.subject(topic: message.topic, stored: true)
                guard interest.contains(where: { ClusterSubjects.matches(pattern: $0, subject: subject) }) else { continue }
                let fresh = lastOnSubject.withLockedValue { last in
                    if let seen = last[subject], sequence <= seen { return false }
                    last[subject] = sequence
                    return true
                }
                guard fresh else { continue }
                statistics.gapMessages.add(1, ordering: .relaxed)
                broker.deliverFromCluster(message)
            }
        }
    }

    /// Reads the stored messages on `subject` from sequence `from` to `to` (0: from wall-clock
    /// ms `since`, to the last one now), other nodes' only, off the event loops, and hands
    /// them to `deliver` in stream order. A gap often shows while the stream elects a new
    /// leader (the server that died led it), when reading fails: it is tried again until it
    /// works or the messages have aged out of the stream (then counted and logged as lost).
    func readStream(_ subject: String, from: UInt64, to: UInt64, since: Int64,
                    _ deliver: @escaping @Sendable ([(Message, UInt64)]) -> Void) {
        let handle = self.handle
        let runID = self.runID
        let deadline = DispatchTime.now() + .seconds(configuration.streamMaximumAge)
        @Sendable func read(attempt: Int) {
            // This node's own messages were routed here when they came.
            let collector = ReplayCollector(wanted: { _ in true }, skipping: runID)
            let context = Unmanaged.passRetained(collector).toOpaque()
            let status = mn_replay(handle.pointer, Self.stream, subject, since, from, to, 10_000, context) { context, msg in
                guard let msg else { return }
                Unmanaged<ReplayCollector>.fromOpaque(context!).takeUnretainedValue().add(msg)
            }
            Unmanaged<ReplayCollector>.fromOpaque(context).release()
            if status == 0 {
                deliver(collector.sequenced.withLockedValue { $0 })
                return
            }
            let delay = DispatchTimeInterval.milliseconds(min(5_000, 100 << min(attempt, 6)))
            if DispatchTime.now() + delay < deadline {
                background.asyncAfter(deadline: .now() + delay) { read(attempt: attempt + 1) }
            } else {
                statistics.gapReadFailures.add(1, ordering: .relaxed)
                logger.error("stored messages lost on the way could not be read from the stream", metadata: [
                    "subject": "\(subject)", "from": "\(from)", "to": "\(to)",
                ])
            }
        }
        background.async { read(attempt: 0) }
    }

    // MARK: Liveness and the wills of dead nodes

    /// Puts this run's heartbeat every `heartbeat_interval_ms` and looks for runs that
    /// stopped putting theirs.
    func startHeartbeats() {
        let interval = configuration.heartbeatInterval
        let thread = Thread { [self] in
            while true {
                beat()
                Thread.sleep(forTimeInterval: Double(interval) / 1000)
            }
        }
        thread.name = "martlet-heartbeat"
        thread.start()
    }

    private func beat() {
        let now = Self.wallClock()
        let buckets = self.buckets
        _ = publish(subject: "$KV.\(Self.nodesBucket).\(runID)", headers: [], payload: ByteBuffer(string: String(now)), stored: true)
        guard let beats = Self.entries(of: buckets.nodes, keys: ">") else { return }
        for (run, value) in beats where run != runID && !run.hasPrefix("gone-") {
            guard let last = Int64(String(decoding: value, as: UTF8.self)), now - last > Int64(configuration.nodeTimeout) else { continue }
            // Whoever creates the marker first takes care of the run; the others see it exists.
            guard mn_bucket_create(buckets.nodes, "gone-\(run)", "1", 1) == 0 else { continue }
            logger.warning("a cluster node stopped; publishing its wills", metadata: ["run": "\(run)", "silent_ms": "\(now - last)"])
            statistics.deadNodes.add(1, ordering: .relaxed)
            takeOverWills(of: run)
            expireSessions(of: run, goneAt: now)
            _ = mn_bucket_delete(buckets.nodes, run)
        }
    }

    /// Publishes the wills `run` left, each after its delay; a persistent session resumed on
    /// another node by then keeps its will unsent (MQTT-3.1.3-9).
    private func takeOverWills(of run: String) {
        let buckets = self.buckets
        let sessions = Self.sessionStore(handle)
        for (key, data) in Self.entries(of: buckets.wills, keys: "\(run).>") ?? [] {
            guard let will = try? JSONDecoder().decode(ClusterWill.self, from: data),
                  let clientID = ClusterSubjects.topic(key: String(key.dropFirst(run.count + 1))) else { continue }
            background.asyncAfter(deadline: .now() + .seconds(Int(will.delay))) { [self] in
                if will.persistent && will.delay > 0, let record = sessions.read(ClusterSubjects.key(topic: clientID)).record, record.owner != run {
                    logger.info("will of a dead node's client not sent: its session was resumed", metadata: ["client_id": "\(clientID)"])
                } else if let broker = broker.withLockedValue({ $0 }) {
                    broker.publishFromCluster(will.message(clientID: clientID))
                    statistics.willsPublished.add(1, ordering: .relaxed)
                }
                _ = mn_bucket_delete(buckets.wills, key)
            }
        }
    }
}

extension ClusterNode {
    /// The persistent sessions `run` held when it died expire where it would have expired
    /// them: each record still held by `run` once its expiry interval has passed (from the
    /// death for a session that was online, from its disconnect for one that was not) is
    /// removed, by compare-and-set, so a session resumed elsewhere meanwhile keeps its
    /// record. (If this node dies too before then, the record stays until a client resumes
    /// or ends it.)
    func expireSessions(of run: String, goneAt: Int64) {
        let store = Self.sessionStore(handle)
        for (key, data) in Self.entries(of: buckets.sessions, keys: ">") ?? [] {
            guard let record = try? JSONDecoder().decode(ClusterSessionRecord.self, from: data),
                  record.owner == run, record.expiryInterval != UInt32.max else { continue }
            let since = record.online ? goneAt : min(goneAt, record.savedAt)
            let expiresAt = since + Int64(record.expiryInterval) * 1000
            background.asyncAfter(deadline: .now() + .milliseconds(Int(max(0, expiresAt - Self.wallClock())))) { [self] in
                let (status, current, revision) = store.read(key)
                guard status == 0, let current, current.owner == run else { return }
                if store.write(key, nil, revision).status == 0 {
                    statistics.sessionsExpired.add(1, ordering: .relaxed)
                    logger.info("a dead node's session expired", metadata: ["client_id": "\(ClusterSubjects.topic(key: key) ?? key)", "run": "\(run)"])
                }
            }
        }
    }
}

/// Messages read back from the stream for one resumed session.
final class ReplayCollector: Sendable {
    let wanted: @Sendable (String) -> Bool
    /// Messages of this writer (a node's run) are left out.
    let skipping: String?
    let messages = NIOLockedValueBox<[Message]>([])
    /// With `skipping`: the messages and their stream sequence numbers.
    let sequenced = NIOLockedValueBox<[(Message, UInt64)]>([])

    init(wanted: @escaping @Sendable (String) -> Bool, skipping: String? = nil) {
        self.wanted = wanted
        self.skipping = skipping
    }

    func add(_ msg: OpaquePointer) {
        defer { natsMsg_Destroy(msg) }
        if let skipping {
            var value: UnsafePointer<CChar>?
            if natsMsgHeader_Get(msg, "Martlet-Node", &value) == NATS_OK, let value, String(cString: value) == skipping { return }
        }
        guard let message = ClusterNode.message(msg), wanted(message.topic) else { return }
        if skipping != nil {
            var meta: UnsafeMutablePointer<jsMsgMetaData>?
            var sequence: UInt64 = 0
            if natsMsg_GetMetaData(&meta, msg) == NATS_OK, let meta {
                sequence = meta.pointee.Sequence.Stream
                jsMsgMetaData_Destroy(meta)
            }
            sequenced.withLockedValue { $0.append((message, sequence)) }
        } else {
            messages.withLockedValue { $0.append(message) }
        }
    }
}

/// Key-value entries read by one synchronous call.
final class EntryCollector: Sendable {
    let entries = NIOLockedValueBox<[(key: String, value: Data)]>([])
}
