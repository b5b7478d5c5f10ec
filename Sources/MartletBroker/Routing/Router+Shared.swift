import MartletMQTT
import NIOCore

/// Shared subscriptions (MQTT 5 4.8.2): the loop that routes a message picks one member of
/// each matching group (`SharedSubscriptions`) and hands the copy to the member's loop; a
/// member that goes offline hands its unacknowledged copies to another member.
extension Router {
    /// A copy hops at most this often between loops looking for a member that can take it
    /// (the member it was picked for left meanwhile).
    static let sharedHops = 3

    /// One member of every group that matches a message routed on this loop; returns whether
    /// any group did.
    func routeShared(_ message: Message) -> Bool {
        guard !message.isExpired(at: eventLoop.now) else { return false }
        let picks = core.shared.pick(topic: message.topic, strategy: config.sharedSubscriptionStrategy)
        for pick in picks {
            sendShared(Self.sharedDelivery(message, pick), to: pick, hops: 0)
        }
        if config.pausePublishersForSlowSubscribers && unroutedMessages.load(ordering: .relaxed) > LagTracker.unroutedMessageBound(config) {
            publisherMustWait = true
        }
        return !picks.isEmpty
    }

    static func sharedDelivery(_ message: Message, _ pick: SharedSubscriptions.Pick) -> Delivery {
        Delivery(message: message, qos: min(message.qos, pick.options.qos),
                 retain: pick.options.retainAsPublished && message.retain,
                 subscriptionIdentifiers: pick.identifier.map { [$0] } ?? [], group: pick.group)
    }

    /// To the member's loop: now if it is this one, with the flush's forwards otherwise.
    func sendShared(_ delivery: Delivery, to pick: SharedSubscriptions.Pick, hops: Int) {
        if pick.router == index || !peers.indices.contains(pick.router) {
            deliverShared(delivery, to: pick.clientID, hops: hops)
        } else {
            let i = pick.router
            forwardBatches[i].append((pick.clientID, delivery))
            hasForwards = true
            // Paced like routing batches: a loop with a lagging session holds the publisher,
            // and a full batch goes now rather than at the end of the read burst.
            if config.pausePublishersForSlowSubscribers {
                if peers[i].laggingSessions.load(ordering: .relaxed) > 0 { publisherMustWait = true }
                if forwardBatches[i].count >= LagTracker.handOverBatch(config) { handOverForwards(i) }
            }
        }
    }

    /// A group's copy for a member on this loop; another member gets it if this one left or
    /// may not read the topic.
    func deliverShared(_ delivery: Delivery, to clientID: String, hops: Int) {
        guard let group = delivery.group else { return }
        if let session = sessions[clientID], session.subscriptions[group] != nil,
           security.acl == nil || mayRead(delivery.message.topic, session) {
            deliver(delivery, to: session)
        } else if let session = movingOut[clientID], let move = session.move {
            // Moving to another loop: it follows the session there.
            forwardBatches[move.target].append((clientID, delivery))
            hasForwards = true
        } else if hops < Self.sharedHops,
                  let pick = core.shared.repick(group: group, excluding: clientID, strategy: config.sharedSubscriptionStrategy) {
            sendShared(Self.sharedDelivery(delivery.message, pick), to: pick, hops: hops + 1)
        } else {
            // No member left to take it.
            local.countDrop(.sessionEnded)
        }
    }

    /// The session stopped taking messages (offline or ended): its groups hear so, and the
    /// copies it got from them and has not acknowledged go to other members (a copy whose
    /// PUBREC came is the client's already). Without another member they stay with it.
    func handOverShared(_ session: Session, ending: Bool) {
        guard session.sharedGroups > 0 else { return }
        let clientID = session.clientID
        core.shared.update(clientID, online: false)
        let strategy = config.sharedSubscriptionStrategy
        var moved: [(Delivery, SharedSubscriptions.Pick)] = []
        let flights = session.inflight.remove { flight in
            guard flight.stage != .awaitingPubComp, let group = flight.delivery.group,
                  let pick = core.shared.repick(group: group, excluding: clientID, strategy: strategy, onlineOnly: !ending) else { return false }
            moved.append((flight.delivery, pick))
            return true
        }
        if !flights.isEmpty { core.counters.inflightMessages.subtract(flights.count, ordering: .relaxed) }
        let queued = session.outbox.remove { delivery in
            guard let group = delivery.group,
                  let pick = core.shared.repick(group: group, excluding: clientID, strategy: strategy, onlineOnly: !ending) else { return false }
            moved.append((delivery, pick))
            return true
        }
        if !queued.isEmpty {
            accountQueued(session, bytes: -queued.reduce(0) { $0 + $1.cost }, messages: -queued.count)
        }
        for (delivery, _) in moved { storeRemoved(delivery, session) }
        for (delivery, pick) in moved { sendShared(Self.sharedDelivery(delivery.message, pick), to: pick, hops: 1) }
        if ending { leaveShareGroups(session) }
    }

    /// The session's share groups lose it (unsubscribed, or the session ended).
    func leaveShareGroups(_ session: Session) {
        guard session.sharedGroups > 0 else { return }
        for filter in session.subscriptions.keys {
            guard let share = SharedSubscription(filter) else { continue }
            core.shared.unsubscribe(filter, filter: String(share.filter), clientID: session.clientID)
        }
        session.sharedGroups = 0
    }

    /// Lagging or a full in-flight window makes a member busy for `balanced` and `sticky`.
    func updateSharedBusy(_ session: Session) {
        guard session.sharedGroups > 0 else { return }
        let busy = session.lagging || session.inflight.count >= session.inflightWindow
        guard busy != session.sharedBusy else { return }
        session.sharedBusy = busy
        core.shared.update(session.clientID, busy: busy)
    }
}
