import Dispatch
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The one thread that writes the session store. Every router hands it the records of a
/// read burst (`submit`); it commits whatever has gathered as one transaction — while one
/// commit syncs, the next batch fills, so thousands of messages share one fsync — and then
/// tells the routers that asked (`Barrier`) that their records are on disk, which releases
/// the acknowledgements they hold (`sync: durable`). Disk I/O never runs on an event loop.
///
/// `@unchecked Sendable`: `store` is touched only by the writer thread once `start` ran (and
/// by `stop` after that thread ended); everything else is atomics or behind `queue`'s mutex.
final class StoreWriter: @unchecked Sendable {
    typealias Sync = BrokerConfiguration.Persistence.Sync

    /// A router waiting to hear that what it submitted before this is committed.
    struct Barrier: Sendable {
        var router: Router
        var group: UInt64
    }

    private struct Queue {
        var records: [StoreRecord] = []
        var barriers: [Barrier] = []
        var stopping = false
    }

    let sync: Sync
    let commitInterval: TimeAmount
    /// `max_pending_records` (periodic): past it, acknowledgements wait for the commit.
    let maximumPendingRecords: Int
    private let store: any SessionStore
    private let logger: Logger
    private let queue = Mutex(Queue())
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let thread = NIOThreadPool(numberOfThreads: 1)

    /// Where new stored deliveries' numbers and messages' ids come from.
    let nextSequence: Synchronization.Atomic<Int64>
    let nextMessageID: Synchronization.Atomic<Int64>

    /// The last commit failed (a full disk): new persistent messages are refused until one succeeds.
    let failing = Synchronization.Atomic<Bool>(false)
    // Figures for /metrics.
    let commits = Synchronization.Atomic<Int>(0)
    let commitFailures = Synchronization.Atomic<Int>(0)
    let recordsCommitted = Synchronization.Atomic<Int>(0)
    let recordsPending = Synchronization.Atomic<Int>(0)
    let sizeInBytes = Synchronization.Atomic<Int>(0)
    /// Commit durations: counts per bucket of `latencyBuckets` (and one above), and the sum.
    static let latencyBuckets: [Double] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]
    private let latency = Mutex((counts: [Int](repeating: 0, count: 11), sumMicroseconds: 0))

    init(store: any SessionStore, sync: Sync, commitInterval: TimeAmount, maximumPendingRecords: Int = 1_000_000,
         nextSequence: Int64, nextMessageID: Int64, logger: Logger) {
        self.store = store
        self.sync = sync
        self.commitInterval = commitInterval
        self.maximumPendingRecords = maximumPendingRecords
        self.nextSequence = Synchronization.Atomic(nextSequence)
        self.nextMessageID = Synchronization.Atomic(nextMessageID)
        self.logger = logger
        sizeInBytes.store(store.sizeInBytes, ordering: .relaxed)
    }

    func start() {
        thread.start()
        thread.submit { [self] _ in run() }
    }

    /// Commits what is queued, then stops the thread and closes the store.
    func stop() {
        let already = queue.withLock { q in
            defer { q.stopping = true }
            return q.stopping
        }
        guard !already else { return }
        wake.signal()
        finished.wait()
        try? store.maintain()
        store.close()
        try? thread.syncShutdownGracefully()
    }

    /// Queues records (and a barrier to answer once they and everything before are committed).
    func submit(_ records: [StoreRecord], barrier: Barrier? = nil) {
        let signal = queue.withLock { q -> Bool in
            let wasEmpty = q.records.isEmpty && q.barriers.isEmpty
            q.records.append(contentsOf: records)
            if let barrier { q.barriers.append(barrier) }
            return wasEmpty
        }
        recordsPending.add(records.count, ordering: .relaxed)
        if signal { wake.signal() }
    }

    private func run() {
        var lastCommit = NIODeadline.uptimeNanoseconds(0)
        var idleMaintained = true
        while true {
            if sync == .periodic {
                // One commit per interval, whatever arrives meanwhile (a stop cuts it short).
                let due = DispatchTime.now() + .nanoseconds(Int(commitInterval.nanoseconds))
                while DispatchTime.now() < due && !queue.withLock({ $0.stopping }) {
                    _ = wake.wait(timeout: due)
                }
            }
            // After a second without work the WAL is checkpointed and truncated (`maintain`).
            let timeout: DispatchTime = sync == .periodic ? .now() : idleMaintained ? .distantFuture : .now() + .seconds(1)
            let woken = wake.wait(timeout: timeout) == .success
            if sync == .durable {
                // Commits are at least `commit_interval_ms` apart: what arrives meanwhile
                // joins the next one.
                let next = lastCommit + commitInterval
                let now = NIODeadline.now()
                if woken && next > now { usleep(UInt32((next - now).nanoseconds / 1000)) }
            }
            let (records, barriers, stopping) = queue.withLock { q in
                defer {
                    q.records.removeAll(keepingCapacity: true)
                    q.barriers.removeAll()
                }
                return (q.records, q.barriers, q.stopping)
            }
            if records.isEmpty && barriers.isEmpty {
                if stopping { break }
                if !woken && !idleMaintained {
                    // Idle: give the WAL back to the file system.
                    try? store.maintain()
                    sizeInBytes.store(store.sizeInBytes, ordering: .relaxed)
                    idleMaintained = true
                }
                continue
            }
            idleMaintained = false
            var ok = true
            // A barrier behind records that failed earlier fails too, unless they commit now.
            if !records.isEmpty || !retry.isEmpty {
                lastCommit = .now()
                ok = commit(records)
            }
            let committed = ok
            for barrier in barriers {
                let router = barrier.router
                let group = barrier.group
                router.eventLoop.execute { router.assumeIsolated { $0.storeCommitted(group: group, ok: committed) } }
            }
            if stopping && queue.withLock({ $0.records.isEmpty }) { break }
        }
        finished.signal()
    }

    /// Failed batches are kept and tried again with the next one (the store rolled them
    /// back), so the file never misses a change that later ones build on.
    private var retry: [StoreRecord] = []

    private func commit(_ records: [StoreRecord]) -> Bool {
        let batch = retry.isEmpty ? records : retry + records
        let started = NIODeadline.now()
        do {
            try store.apply(batch)
        } catch {
            retry = batch
            commitFailures.add(1, ordering: .relaxed)
            if !failing.exchange(true, ordering: .relaxed) {
                logger.error("session store commit failed: persistent QoS 1/2 messages are refused until it works again", metadata: [
                    "error": "\(error)", "records": "\(batch.count)",
                ])
            }
            return false
        }
        retry = []
        let seconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        let bucket = Self.latencyBuckets.firstIndex { seconds <= $0 } ?? Self.latencyBuckets.count
        latency.withLock {
            $0.counts[bucket] += 1
            $0.sumMicroseconds += Int(seconds * 1e6)
        }
        commits.add(1, ordering: .relaxed)
        recordsCommitted.add(batch.count, ordering: .relaxed)
        recordsPending.subtract(batch.count, ordering: .relaxed)
        if commits.load(ordering: .relaxed) % 64 == 1 { sizeInBytes.store(store.sizeInBytes, ordering: .relaxed) }
        if failing.exchange(false, ordering: .relaxed) {
            logger.notice("session store commits work again", metadata: ["records": "\(batch.count)"])
        }
        return true
    }

    /// The store's figures in Prometheus text format.
    func renderMetrics() -> [UInt8] {
        var text = """
            # HELP martlet_store_bytes Bytes of the session store on disk (database and WAL).
            # TYPE martlet_store_bytes gauge
            martlet_store_bytes \(sizeInBytes.load(ordering: .relaxed))
            # HELP martlet_store_records_pending Changes handed to the store's writer and not committed yet.
            # TYPE martlet_store_records_pending gauge
            martlet_store_records_pending \(recordsPending.load(ordering: .relaxed))
            # HELP martlet_store_commits_total Transactions committed to the session store.
            # TYPE martlet_store_commits_total counter
            martlet_store_commits_total \(commits.load(ordering: .relaxed))
            # HELP martlet_store_commit_failures_total Commits that failed (a full disk); their changes are retried.
            # TYPE martlet_store_commit_failures_total counter
            martlet_store_commit_failures_total \(commitFailures.load(ordering: .relaxed))
            # HELP martlet_store_records_committed_total Changes committed to the session store.
            # TYPE martlet_store_records_committed_total counter
            martlet_store_records_committed_total \(recordsCommitted.load(ordering: .relaxed))
            # HELP martlet_store_commit_seconds Time one commit (with its sync) took.
            # TYPE martlet_store_commit_seconds histogram

            """
        let (counts, sum) = latency.withLock { ($0.counts, $0.sumMicroseconds) }
        var cumulative = 0
        for (i, bound) in Self.latencyBuckets.enumerated() {
            cumulative += counts[i]
            text += "martlet_store_commit_seconds_bucket{le=\"\(bound)\"} \(cumulative)\n"
        }
        cumulative += counts[Self.latencyBuckets.count]
        text += "martlet_store_commit_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
        text += "martlet_store_commit_seconds_sum \(Double(sum) / 1e6)\n"
        text += "martlet_store_commit_seconds_count \(cumulative)\n"
        return Array(text.utf8)
    }
}
