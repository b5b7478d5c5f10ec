import CMartletNATS
import Foundation
import Logging
import MartletBroker
import NIOConcurrencyHelpers

/// Which persistent sessions' records this node holds in `martlet_sessions`, and the writes
/// waiting for them.
///
/// Every write is a compare-and-set on the revision this node last wrote (or read): a write
/// that finds another revision means another node wrote the record meanwhile. The record is
/// read again, and its `claimedAt` decides: a later claim than this node's connection holds
/// the session, so the write is dropped and the connection here is released (v5 0x8E); an
/// earlier one (a node that has not heard of this node's claim yet) is written over. So of
/// two nodes the one whose client connected last owns the record, whatever order their
/// writes reach JetStream in, and a node cut off from the cluster for a while cannot write
/// over (or delete) the record of a session that moved on without it.
///
/// Writes to one key go one at a time, in order; a newer write waiting replaces an older
/// waiting one (the latest record is what counts).
final class SessionOwnership: Sendable {
    enum Write: Sendable {
        case save(ClusterSessionRecord)
        case remove(claimedAt: Int64)
        /// Reads the record to see whether this node still holds it.
        case verify(claimedAt: Int64)

        var claimedAt: Int64 {
            switch self {
            case .save(let record): record.claimedAt
            case .remove(let claimedAt), .verify(let claimedAt): claimedAt
            }
        }
    }

    struct Hold {
        var clientID: String
        /// The claim of the connection here that the latest write is for.
        var claimedAt: Int64
        /// The record's revision as this node last wrote or read it; nil: read it first.
        var revision: UInt64?
        var busy = false
        var next: Write?
        /// A later claim elsewhere took the session: the hold goes once its write is done.
        var released = false
    }

    /// What the writer does with the record's store, one call at a time per key.
    struct Store: Sendable {
        /// (0 value, 1 none, -1 error; the value; its revision).
        var read: @Sendable (_ key: String) -> (status: Int32, record: ClusterSessionRecord?, revision: UInt64)
        /// (0 written, 1 another revision, -1 error; the new revision).
        var write: @Sendable (_ key: String, _ record: ClusterSessionRecord?, _ expected: UInt64) -> (status: Int32, revision: UInt64)
    }

    private let holds = NIOLockedValueBox<[String: Hold]>([:])
    private let runID: String
    private let store: Store
    /// Blocking reads and writes run here: each key always on the same serial lane, so a
    /// burst (every record read again after a reconnect) keeps at most `lanes` requests to
    /// JetStream in flight instead of a thread per key.
    private let lanes: [DispatchQueue]
    private let logger: Logger
    private let statistics: ClusterStatistics
    /// A later claim holds `clientID`'s session (at that time): release the connection here.
    private let lost: @Sendable (_ clientID: String, _ claimedAt: Int64) -> Void
    private let retryDelay: DispatchTimeInterval

    init(runID: String, store: Store, label: String, lanes: Int = 16, logger: Logger, statistics: ClusterStatistics,
         retryDelay: DispatchTimeInterval = .seconds(1), lost: @escaping @Sendable (String, Int64) -> Void) {
        self.runID = runID
        self.store = store
        self.lanes = (0..<max(1, lanes)).map { DispatchQueue(label: "\(label).\($0)") }
        self.logger = logger
        self.statistics = statistics
        self.retryDelay = retryDelay
        self.lost = lost
    }

    /// How many records this node holds (or is writing).
    var count: Int { holds.withLockedValue { $0.count } }
    /// Whether no write is waiting or under way.
    var isIdle: Bool { holds.withLockedValue { !$0.values.contains { $0.busy } } }

    /// Queues `write` for `clientID`'s record.
    func submit(_ clientID: String, _ write: Write) {
        let key = ClusterSubjects.key(topic: clientID)
        let start: Bool = holds.withLockedValue { holds in
            var hold = holds[key] ?? Hold(clientID: clientID, claimedAt: write.claimedAt)
            // A verification never replaces a write: the write checks the revision itself.
            if case .verify = write, hold.next != nil { return false }
            hold.next = write
            hold.claimedAt = write.claimedAt
            hold.released = false
            defer { holds[key] = hold }
            if hold.busy { return false }
            hold.busy = true
            return true
        }
        if start { lane(key).async { self.drain(clientID, key: key) } }
    }

    /// Another node's connection claimed `clientID`'s session at `claimedAt`: a hold of an
    /// earlier claim here is given up (the session leaves this node; a write under way
    /// finishes, and the other node's compare-and-set then writes over it).
    func release(_ clientID: String, olderThan claimedAt: Int64) {
        let key = ClusterSubjects.key(topic: clientID)
        holds.withLockedValue { holds in
            guard var hold = holds[key], hold.claimedAt < claimedAt else { return }
            if !hold.busy {
                holds[key] = nil
                return
            }
            hold.next = nil
            hold.released = true
            holds[key] = hold
        }
    }

    /// The NATS connection came back: every record held is read again (a node that took one
    /// meanwhile shows there).
    func verifyAll() {
        for (clientID, claimedAt) in holds.withLockedValue({ $0.values.map { ($0.clientID, $0.claimedAt) } }) {
            submit(clientID, .verify(claimedAt: claimedAt))
        }
    }

    private func drain(_ clientID: String, key: String) {
        var conflicts = 0
        while true {
            let taken: (Write, UInt64?)? = holds.withLockedValue { holds in
                guard var hold = holds[key] else { return nil }
                guard let write = hold.next else {
                    hold.busy = false
                    // A hold without a known revision is nothing to keep.
                    holds[key] = hold.revision == nil || hold.released ? nil : hold
                    return nil
                }
                hold.next = nil
                holds[key] = hold
                return (write, hold.revision)
            }
            guard let (write, known) = taken else { return }
            var expected = known
            if expected == nil || write.isVerify {
                let (status, record, revision) = store.read(key)
                if status < 0 {
                    retry(write, clientID: clientID, key: key, error: "cannot read the session record")
                    return
                }
                if let record, record.owner != runID, Self.later(record, than: write.claimedAt, runID: runID) {
                    // A write queued meanwhile for a still later connection here goes on.
                    let newer = holds.withLockedValue { holds -> Bool in
                        guard let next = holds[key]?.next, !Self.later(record, than: next.claimedAt, runID: runID) else {
                            holds[key] = nil
                            return false
                        }
                        holds[key]!.revision = nil
                        return true
                    }
                    statistics.sessionsLost.add(1, ordering: .relaxed)
                    logger.warning("a later connection on another node holds this session: its connection here is released", metadata: [
                        "client_id": "\(clientID)", "owner": "\(record.owner)",
                    ])
                    lost(clientID, record.claimedAt)
                    if newer { continue }
                    return
                }
                expected = revision
                if write.isVerify || (record == nil && write.isRemove) {
                    // Nothing to write: the record is this node's (or gone).
                    setRevision(key, record == nil ? nil : revision)
                    continue
                }
            }
            let record: ClusterSessionRecord?
            if case .save(var saved) = write {
                saved.owner = runID
                record = saved
            } else {
                record = nil
            }
            let (status, revision) = store.write(key, record, expected!)
            switch status {
            case 0:
                setRevision(key, record == nil ? nil : revision)
                conflicts = 0
            case 1:
                // Another node wrote it: read it again and decide by the claims.
                conflicts += 1
                if conflicts > 16 {
                    statistics.sessionWriteFailures.add(1, ordering: .relaxed)
                    logger.error("the session record keeps changing under this node's writes: not written", metadata: ["client_id": "\(clientID)"])
                    holds.withLockedValue { $0[key] = nil }
                    return
                }
                requeue(write, key: key)
            default:
                retry(write, clientID: clientID, key: key, error: "cannot write the session record")
                return
            }
        }
    }

    private func lane(_ key: String) -> DispatchQueue {
        lanes[Int(UInt(bitPattern: key.hashValue) % UInt(lanes.count))]
    }

    /// Whether `record` holds a later claim than `claimedAt` (ties go to the greater run).
    static func later(_ record: ClusterSessionRecord, than claimedAt: Int64, runID: String) -> Bool {
        record.claimedAt > claimedAt || (record.claimedAt == claimedAt && record.owner > runID)
    }

    private func setRevision(_ key: String, _ revision: UInt64?) {
        holds.withLockedValue { holds in
            guard holds[key] != nil else { return }
            holds[key]!.revision = revision
        }
    }

    /// Puts `write` back unless a newer one waits, with the revision to be read again.
    private func requeue(_ write: Write, key: String) {
        holds.withLockedValue { holds in
            guard holds[key] != nil else { return }
            holds[key]!.revision = nil
            if holds[key]!.next == nil { holds[key]!.next = write }
        }
    }

    /// JetStream did not answer (no quorum, NATS down): the write may or may not be stored,
    /// so the revision is read again when it is tried next, after `retryDelay`.
    private func retry(_ write: Write, clientID: String, key: String, error: String) {
        statistics.sessionWriteFailures.add(1, ordering: .relaxed)
        logger.debug("\(error): retrying", metadata: ["client_id": "\(clientID)"])
        requeue(write, key: key)
        lane(key).asyncAfter(deadline: .now() + retryDelay) { self.drain(clientID, key: key) }
    }
}

extension SessionOwnership.Write {
    var isVerify: Bool { if case .verify = self { true } else { false } }
    var isRemove: Bool { if case .remove = self { true } else { false } }
}
