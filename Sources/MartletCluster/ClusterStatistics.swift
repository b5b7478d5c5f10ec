import Synchronization

/// The node's figures for /metrics.
final class ClusterStatistics: Sendable {
    let forwarded = Atomic<Int>(0)
    let received = Atomic<Int>(0)
    let copiesDropped = Atomic<Int>(0)
    let storeFailures = Atomic<Int>(0)
    let disconnects = Atomic<Int>(0)
    let deadNodes = Atomic<Int>(0)
    let willsPublished = Atomic<Int>(0)
    let gaps = Atomic<Int>(0)
    let gapMessages = Atomic<Int>(0)
    let sessionsLost = Atomic<Int>(0)
    let gapReadFailures = Atomic<Int>(0)
    let sessionsExpired = Atomic<Int>(0)
    let sessionWriteFailures = Atomic<Int>(0)

    func render(connected: Bool, pendingAcks: Int, subjects: Int, sessionsHeld: Int) -> String {
        """
        # HELP martlet_cluster_connected Whether the node's NATS connection is up.
        # TYPE martlet_cluster_connected gauge
        martlet_cluster_connected \(connected ? 1 : 0)
        # HELP martlet_cluster_pending_acks Messages sent to JetStream not acknowledged yet.
        # TYPE martlet_cluster_pending_acks gauge
        martlet_cluster_pending_acks \(pendingAcks)
        # HELP martlet_cluster_subjects NATS subjects this node subscribes for its subscribers.
        # TYPE martlet_cluster_subjects gauge
        martlet_cluster_subjects \(subjects)
        # HELP martlet_cluster_messages_forwarded_total Messages published here sent to the other nodes.
        # TYPE martlet_cluster_messages_forwarded_total counter
        martlet_cluster_messages_forwarded_total \(forwarded.load(ordering: .relaxed))
        # HELP martlet_cluster_copies_dropped_total Copies of one message for overlapping subscriptions, dropped.
        # TYPE martlet_cluster_copies_dropped_total counter
        martlet_cluster_copies_dropped_total \(copiesDropped.load(ordering: .relaxed))
        # HELP martlet_cluster_store_failures_total Messages JetStream did not store (no quorum, timeout).
        # TYPE martlet_cluster_store_failures_total counter
        martlet_cluster_store_failures_total \(storeFailures.load(ordering: .relaxed))
        # HELP martlet_cluster_disconnects_total Times the NATS connection was lost.
        # TYPE martlet_cluster_disconnects_total counter
        martlet_cluster_disconnects_total \(disconnects.load(ordering: .relaxed))
        # HELP martlet_cluster_gaps_total Stored messages found missing on the way to this node (then read from the stream).
        # TYPE martlet_cluster_gaps_total counter
        martlet_cluster_gaps_total \(gaps.load(ordering: .relaxed))
        # HELP martlet_cluster_gap_messages_total Stored messages read from the stream to fill those gaps.
        # TYPE martlet_cluster_gap_messages_total counter
        martlet_cluster_gap_messages_total \(gapMessages.load(ordering: .relaxed))
        # HELP martlet_cluster_sessions_held Persistent sessions' records this node holds (writes by compare-and-set).
        # TYPE martlet_cluster_sessions_held gauge
        martlet_cluster_sessions_held \(sessionsHeld)
        # HELP martlet_cluster_sessions_lost_total Sessions released here because a later connection on another node held their record.
        # TYPE martlet_cluster_sessions_lost_total counter
        martlet_cluster_sessions_lost_total \(sessionsLost.load(ordering: .relaxed))
        # HELP martlet_cluster_session_write_failures_total Session record reads or writes JetStream did not answer (retried).
        # TYPE martlet_cluster_session_write_failures_total counter
        martlet_cluster_session_write_failures_total \(sessionWriteFailures.load(ordering: .relaxed))
        # HELP martlet_cluster_gap_read_failures_total Gaps whose messages could not be read from the stream before they aged out (lost).
        # TYPE martlet_cluster_gap_read_failures_total counter
        martlet_cluster_gap_read_failures_total \(gapReadFailures.load(ordering: .relaxed))
        # HELP martlet_cluster_dead_nodes_total Nodes found dead by this node (it published their wills).
        # TYPE martlet_cluster_dead_nodes_total counter
        martlet_cluster_dead_nodes_total \(deadNodes.load(ordering: .relaxed))
        # HELP martlet_cluster_sessions_expired_total Sessions of dead nodes removed by this node once expired.
        # TYPE martlet_cluster_sessions_expired_total counter
        martlet_cluster_sessions_expired_total \(sessionsExpired.load(ordering: .relaxed))
        # HELP martlet_cluster_wills_published_total Wills of dead nodes' clients published by this node.
        # TYPE martlet_cluster_wills_published_total counter
        martlet_cluster_wills_published_total \(willsPublished.load(ordering: .relaxed))

        """
    }
}
