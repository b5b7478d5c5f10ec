import DequeModule
import MartletMQTT
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Acknowledgements of QoS 1/2 PUBLISHes waiting for the cluster to store their messages,
/// in the order the PUBLISHes came; each is sent once it and every one before it is settled.
struct ClusterHeldAcks {
    struct Held {
        var session: Session
        var connectionID: Int
        var packet: MQTTPacket
        /// nil while the cluster has not answered; then whether it stored the message.
        var stored: Bool?
    }

    var held: Deque<Held> = []
    /// The token of `held.first`; tokens are given out in order.
    var firstToken: UInt64 = 1

    var count: Int { held.count }

    mutating func add(_ held: Held) -> UInt64 {
        self.held.append(held)
        return firstToken + UInt64(self.held.count - 1)
    }

    /// Records the cluster's answer for `token`; returns the acknowledgements now due.
    mutating func settle(_ token: UInt64, stored: Bool) -> [Held] {
        guard token >= firstToken, token - firstToken < UInt64(held.count) else { return [] }
        held[Int(token - firstToken)].stored = stored
        var due: [Held] = []
        while let first = held.first, first.stored != nil {
            due.append(held.removeFirst())
            firstToken += 1
        }
        return due
    }
}

/// Helpers of the cluster's side of routing.
enum ClusterLinkSupport {
    static func isNodeLocal(_ clientID: String) -> Bool { clientID.hasPrefix("$bridge/") }

    static func wallMilliseconds() -> Int64 { wallNanoseconds() / 1_000_000 }

    static func wallNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}

/// A cluster node's side of routing: what this node's clients publish goes to the other
/// nodes (QoS 1/2 acknowledged only once the cluster has stored it), and what the other nodes
/// publish is routed here like a message of this node's, without going back out.
extension Router {
    /// Sends a message published here to the other nodes (not `$SYS`, which is this node's).
    func forwardToCluster(_ message: Message) {
        guard let cluster = core.cluster, !message.isNodeLocal else { return }
        cluster.forward(message, acknowledged: nil)
    }

    /// A client's QoS 1/2 message, routed here: it goes to the other nodes, and its
    /// acknowledgement `reply` waits until the cluster has stored it. Returns what to send now.
    func forwardToCluster(_ message: Message, acknowledging reply: MQTTPacket, for session: Session) -> MQTTPacket? {
        guard let cluster = core.cluster, !message.isNodeLocal else { return reply }
        let token = clusterHeld.add(.init(session: session, connectionID: session.connectionID, packet: reply, stored: nil))
        let loop = eventLoop
        let router = self
        cluster.forward(message) { stored in
            loop.execute { router.assumeIsolated { $0.clusterSettled(token, stored: stored) } }
        }
        return nil
    }

    /// The cluster stored (or could not store) the message of held acknowledgement `token`.
    func clusterSettled(_ token: UInt64, stored: Bool) {
        let due = clusterHeld.settle(token, stored: stored)
        guard !due.isEmpty else { return }
        for ack in due {
            if !ack.stored! {
                local.clusterRefused += 1
                if let count = clusterRefusedLog.record(at: eventLoop.now) {
                    logger.warning("QoS 1/2 messages refused: the cluster did not store them (no JetStream quorum?)", metadata: [
                        "count": "\(count)", "client": "\(ack.session.clientID)",
                    ])
                }
            }
            sendHeldAcknowledgement(ack.packet, to: ack.session, connectionID: ack.connectionID,
                                    refusedWith: ack.stored! ? nil : .unspecifiedError)
        }
        flush()
    }

    /// A connection took `session` here: the other nodes release theirs. Its will goes to the
    /// cluster's will bucket (published by another node if this one dies), and a persistent
    /// session's record is saved; a session that is not kept removes any record left of it.
    func claimInCluster(_ session: Session, _ request: ConnectRequest) {
        guard let cluster = core.cluster, !ClusterLinkSupport.isNodeLocal(session.clientID) else { return }
        session.claimedAt = ClusterLinkSupport.wallNanoseconds()
        cluster.claimed(session.clientID, at: session.claimedAt)
        if let will = request.will {
            cluster.willSaved(session.clientID, ClusterWill(will, delay: request.willDelay, persistent: session.isPersistent))
            session.clusterWillSaved = true
        }
        if session.isPersistent {
            saveClusterSession(session)
        } else {
            cluster.sessionRemoved(session.clientID, claimedAt: session.claimedAt)
        }
    }

    func reannounceClaims() {
        guard let cluster = core.cluster else { return }
        for session in sessions.values where session.claimedAt > 0 {
            cluster.claimed(session.clientID, at: session.claimedAt)
        }
    }

    /// Its connection's will is no longer this node's to publish.
    func clearClusterWill(_ session: Session) {
        guard session.clusterWillSaved, let cluster = core.cluster else { return }
        session.clusterWillSaved = false
        cluster.willSaved(session.clientID, nil)
    }

    /// Wall-clock milliseconds before which every QoS 1/2 message for `session` that reached
    /// this node has been acknowledged: the oldest one in flight or queued, else now.
    func clusterCursor(_ session: Session, now: Int64) -> Int64 {
        var cursor = now
        if let from = session.clusterReplayFrom { cursor = min(cursor, from) }
        if let first = session.inflight.flights.first, first.delivery.message.clusterWall > 0 {
            cursor = min(cursor, first.delivery.message.clusterWall)
        }
        if let first = session.outbox.first, first.message.clusterWall > 0 { cursor = min(cursor, first.message.clusterWall) }
        return cursor
    }

    /// Saves a persistent session's record (subscriptions, cursor, online or not).
    func saveClusterSession(_ session: Session) {
        guard let cluster = core.cluster, session.isPersistent, !ClusterLinkSupport.isNodeLocal(session.clientID) else { return }
        let now = ClusterLinkSupport.wallMilliseconds()
        let cursor = clusterCursor(session, now: now)
        session.clusterCursorSaved = cursor
        session.clusterDirty = false
        session.clusterAcknowledged = false
        let subscriptions = session.subscriptions.map {
            ClusterSessionRecord.Subscription(filter: $0.key, options: $0.value.options.byte, identifier: $0.value.identifier)
        }
        var record = ClusterSessionRecord(
            owner: "", claimedAt: session.claimedAt, version: session.version.rawValue, username: session.username, expiryInterval: session.expiryInterval,
            online: session.isOnline, cursor: cursor, subscriptions: subscriptions)
        record.savedAt = now
        cluster.sessionSaved(session.clientID, record)
    }

    /// Once per sweep: a persistent session whose client acknowledged messages, moving its
    /// cursor on by a checkpoint interval, saves its record again. An idle session writes
    /// nothing.
    func checkpointClusterSessions() {
        let now = ClusterLinkSupport.wallMilliseconds()
        let interval = Int64(config.cluster?.checkpointInterval ?? 1000)
        for session in sessions.values where session.isPersistent && (session.clusterDirty || session.clusterAcknowledged) {
            if session.clusterDirty || clusterCursor(session, now: now) - session.clusterCursorSaved >= interval {
                saveClusterSession(session)
            }
        }
    }

    /// Whether a CONNECT must read its session's record from the cluster first: it resumes
    /// (no clean start) a session this node does not hold.
    func needsClusterRecord(_ request: ConnectRequest) -> Bool {
        guard core.cluster != nil, !request.cleanStart, !request.clusterLoaded,
              !ClusterLinkSupport.isNodeLocal(request.clientID) else { return false }
        return core.registry.owner(of: request.clientID) == nil
    }

    func loadClusterRecord(_ request: ConnectRequest, handler: ConnectionRef) {
        let loop = eventLoop
        let router = self
        core.cluster!.loadSession(request.clientID) { load in
            loop.execute {
                router.assumeIsolated { router in
                    var request = request
                    request.clusterLoaded = true
                    switch load {
                    case .found(let record):
                        // A record of another identity is not resumed (as `session_other_identity`).
                        request.clusterRecord = record.username == request.username ? record : nil
                    case .none:
                        break
                    case .unavailable:
                        router.local.clusterSessionsUnavailable += 1
                        router.logger.warning("CONNECT refused: the cluster could not read the session's record", metadata: [
                            "client_id": "\(request.clientID)",
                        ])
                        handler.value.sessionUnavailable()
                        return
                    }
                    router.connect(request, handler: handler)
                }
            }
        }
    }

    /// A session resumed here from another node's record: its subscriptions come back, and
    /// the stored messages from a little before its cursor are read again for it.
    func resumeFromCluster(_ session: Session, _ record: ClusterSessionRecord) {
        for sub in record.subscriptions where SharedSubscription(sub.filter) == nil {
            guard let options = try? SubscriptionOptions.read(sub.options, version: .v5) else { continue }
            session.subscriptions[sub.filter] = StoredSubscription(options: options, identifier: sub.identifier)
            trie.insert(filter: sub.filter, subscriber: session, options: options, identifier: sub.identifier)
        }
        session.clusterReplayFrom = record.cursor - ClusterSessionRecord.replayMargin
        local.clusterResumes += 1
    }

    func replayFromCluster(_ session: Session) {
        guard let cluster = core.cluster, let since = session.clusterReplayFrom else { return }
        let filters = session.subscriptions.keys.filter { SharedSubscription($0) == nil }
        let clientID = session.clientID
        let connectionID = session.connectionID
        let loop = eventLoop
        let router = self
        cluster.replay(since: since, wanted: { topic in filters.contains { Topic.matches(filter: $0, topic: topic) } }) { messages in
            loop.execute { router.assumeIsolated { $0.deliverReplayed(messages, clientID: clientID, connectionID: connectionID, since: since) } }
        }
    }

    /// The stored messages read again for a resumed session: queued for it as its
    /// subscriptions ask (a message it got already comes again; QoS 1 allows that).
    func deliverReplayed(_ messages: [Message]?, clientID: String, connectionID: Int, since: Int64) {
        guard let session = sessions[clientID], session.connectionID == connectionID else { return }
        guard let messages else {
            logger.error("the stored messages of a resumed session could not be read", metadata: ["client_id": "\(clientID)"])
            return
        }
        for var message in messages {
            message.clusterWall = since
            var best: (options: SubscriptionOptions, identifiers: [UInt32])?
            for (filter, sub) in session.subscriptions where SharedSubscription(filter) == nil && Topic.matches(filter: filter, topic: message.topic) {
                if sub.options.noLocal && message.publisherID == clientID { continue }
                if best == nil || sub.options.qos > best!.options.qos { best = (sub.options, best?.identifiers ?? []) }
                if let id = sub.identifier { best!.identifiers.append(id) }
            }
            guard let best, mayRead(message.topic, session) else { continue }
            let delivery = Delivery(message: message, qos: min(best.options.qos, message.qos),
                                    retain: best.options.retainAsPublished && message.retain, subscriptionIdentifiers: best.identifiers)
            deliver(delivery, to: session)
        }
        session.clusterReplayFrom = nil
        session.clusterDirty = true
        local.clusterReplayed += messages.count
        flush()
    }

    /// Another node's connection took `clientID`'s session at `claimedAt`: a connection here
    /// that took it earlier is closed as taken over (v5 DISCONNECT 0x8E; its will follows the
    /// will rules) and the session leaves this node.
    /// A claim older than the one here changes nothing (that node releases instead), so of
    /// two CONNECTs racing on two nodes exactly one connection stays.
    /// A claim older than the one here is answered with this one's again: a node that missed
    /// it (its NATS connection was down) releases its older connection then.
    func releaseToCluster(_ clientID: String, claimedAt: Int64) {
        guard let session = sessions[clientID], session.claimedAt < claimedAt else {
            if let session = sessions[clientID], session.claimedAt > claimedAt {
                core.cluster?.claimed(clientID, at: session.claimedAt)
            }
            core.registry.settle(clientID, owner: sessions[clientID] == nil ? nil : index)
            return
        }
        // Not a clean start: a persistent session goes on on the other node, so a delayed will
        // stays unsent here (MQTT-3.1.3-9); the other node has read its record already.
        let request = ConnectRequest(
            clientID: clientID, version: session.version, cleanStart: false, expiryInterval: 0, receiveMaximum: 1,
            maximumPacketSize: 0, policy: session.policy, username: session.username)
        _ = release(for: request, movingTo: nil)
        local.clusterTakeovers += 1
        core.registry.settle(clientID, owner: nil)
    }

    /// Routes the messages the cluster delivered here: another node's, for this node's
    /// subscribers, or any node's (this one's too) for a share group the cluster picked this
    /// node for. They are not stored as retained here (the cluster's retained bucket feeds
    /// every node's store) and do not go back to the cluster.
    func routeFromCluster() {
        let wall = ClusterLinkSupport.wallMilliseconds()
        for (var message, group) in clusterInbox.take() {
            local.clusterReceived += 1
            message.clusterWall = wall
            if !message.properties.isEmpty, let seconds = message.properties.messageExpiryInterval, seconds > 0 {
                message.expiresAt = eventLoop.now + .seconds(Int64(seconds))
            }
            if let group {
                // The cluster picked this node for the share group: one member of it here.
                guard !message.isExpired(at: eventLoop.now),
                      let pick = core.shared.repick(group: group, excluding: "", strategy: config.sharedSubscriptionStrategy) else {
                    local.countDrop(.sessionEnded)
                    continue
                }
                sendShared(Self.sharedDelivery(message, pick), to: pick, hops: 0)
            } else {
                route(message, retainHere: false, shareGroups: false)
            }
        }
        flush()
    }
}
