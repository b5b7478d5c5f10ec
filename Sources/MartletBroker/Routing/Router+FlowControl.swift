import MartletMQTT
import NIOCore

/// Publisher pacing: lagging subscribers and full cross-loop hand-overs pause the
/// publishers that feed them, stalled subscribers stop holding them back. The thresholds are
/// `LagTracker`'s; this is where the router applies them.
extension Router {
    /// A message is about to be queued for `session` (online): past half its limits the
    /// session lags, and the publisher being routed waits.
    func noteBacklog(_ session: Session) {
        guard !session.stalled else { return }
        if !session.lagging {
            guard LagTracker.startsLagging(queued: session.outbox.count, bytes: session.outbox.bytes, config) else { return }
            setLagging(session, true)
        }
        if session !== publishing { publisherMustWait = true }
    }

    /// The session neither lags nor is stalled any more (drained, offline, gone).
    func endLag(_ session: Session) {
        session.stalled = false
        setLagging(session, false)
    }

    func isBelowLagEnd(_ session: Session) -> Bool {
        LagTracker.endsLag(queued: session.outbox.count, bytes: session.outbox.bytes, config)
    }

    func setLagging(_ session: Session, _ lagging: Bool) {
        guard session.lagging != lagging else { return }
        session.lagging = lagging
        if session.sharedGroups > 0 { updateSharedBusy(session) }
        if lagging {
            lag.startLagging(session, now: eventLoop.now)
            laggingSessions.add(1, ordering: .relaxed)
            core.counters.laggingSubscribers.add(1, ordering: .relaxed)
        } else {
            lag.stopLagging(session)
            laggingSessions.subtract(1, ordering: .relaxed)
            if core.counters.laggingSubscribers.subtract(1, ordering: .relaxed).newValue == 0 {
                // Not re-entrantly: this runs inside drain, in the middle of a route.
                for peer in peers {
                    peer.eventLoop.execute { peer.assumeIsolated { $0.checkResume() } }
                }
            }
        }
    }

    /// Stalled lagging sessions stop holding publishers back (so no publisher is held long
    /// enough for its own keepalive to give up); their outboxes then follow the slow-consumer
    /// policy.
    func checkStalls(now: NIODeadline) {
        guard !lag.lagging.isEmpty else { return }
        for (session, why) in lag.stalls(now: now, timeout: config.subscriberStallTimeout) {
            session.stalled = true
            setLagging(session, false)
            local.subscriberStalls += 1
            logger.warning("subscriber stalled: no longer holding publishers back", metadata: [
                "client_id": "\(session.clientID)", "reason": "\(why)",
                "queued": "\(session.outbox.count)", "queued_bytes": "\(session.outbox.bytes)",
            ])
        }
    }

    var marks: LagTracker.Marks {
        LagTracker.Marks(
            queuedBytesOnline: core.counters.queuedBytesOnline.load(ordering: .relaxed),
            unroutedBytes: unroutedBytes.load(ordering: .relaxed),
            unroutedMessages: unroutedMessages.load(ordering: .relaxed),
            laggingSubscribers: core.counters.laggingSubscribers.load(ordering: .relaxed))
    }

    /// Whether a connection that just published should stop being read.
    var inboundShouldPause: Bool { LagTracker.shouldPause(marks, config) }

    func paused(_ handler: ConnectionRef) {
        if let count = pauseLog.record(at: eventLoop.now) {
            logger.info("inbound flow control: pausing publishers", metadata: [
                "queued_bytes_online": "\(core.counters.queuedBytesOnline.load(ordering: .relaxed))",
                "unrouted_bytes": "\(unroutedBytes.load(ordering: .relaxed))",
                "pauses_since_last_log": "\(count)",
            ])
        }
        lag.pause(handler)
        local.inboundPauses += 1
        core.counters.pausedConnections.add(1, ordering: .relaxed)
    }

    /// Resumes every paused publisher of this loop once the marks allow it.
    func checkResume() {
        guard !lag.paused.isEmpty, LagTracker.mayResume(marks, config) else { return }
        let resumed = lag.resumeAll()
        core.counters.pausedConnections.subtract(resumed.count, ordering: .relaxed)
        local.inboundResumes += resumed.count
        logger.debug("inbound flow control: resuming publishers", metadata: ["count": "\(resumed.count)"])
        for handler in resumed { handler.value.resumeInbound() }
    }

    /// A paused connection that closes leaves the list.
    func forgetPaused(_ connectionID: Int) {
        let forgotten = lag.forget(connectionID: connectionID)
        if forgotten > 0 { core.counters.pausedConnections.subtract(forgotten, ordering: .relaxed) }
    }
}
