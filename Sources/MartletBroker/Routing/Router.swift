import DequeModule
import Logging
import MartletAuth
import MartletMQTT
import NIOCore
import Synchronization

/// The routing engine of one event loop: the sessions that live on it, their
/// subscription trie, QoS flows, and the batched hand-off of messages to the other loops.
///
/// Its executor is the event loop itself, so a channel handler on the same loop calls it
/// synchronously with `onLoop` (`assumeIsolated` without its allocations): no suspension
/// and no thread hop per message.
/// Other loops reach it with one `execute` per read burst, carrying a batch.
package actor Router {
    nonisolated let eventLoop: any EventLoop
    nonisolated let index: Int
    nonisolated let core: BrokerCore

    package nonisolated var unownedExecutor: UnownedSerialExecutor {
        customExecutor?.asUnownedSerialExecutor() ?? eventLoop.executor.asUnownedSerialExecutor()
    }
    /// Set only by the routing microbenchmarks' probe (MartletBenchSupport), whose embedded
    /// event loop cannot be an executor; the broker always runs on its loop's executor.
    private nonisolated let customExecutor: (any SerialExecutor)?

    /// Bytes this loop has handed to other loops that they have not routed yet.
    nonisolated let unroutedBytes = Atomic<Int>(0)
    /// The same in messages: with `pause_publishers_for_slow_subscribers` it is bounded
    /// tighter than the bytes, so a loop whose subscriber starts lagging receives at most
    /// that many more before the publishers feeding it stop.
    nonisolated let unroutedMessages = Atomic<Int>(0)
    /// Lagging sessions on this loop (other loops pause publishers that send here).
    nonisolated let laggingSessions = Atomic<Int>(0)
    /// Subscriptions in this loop's trie, published at each flush (before any SUBACK or
    /// CONNACK of that flush leaves), so other loops skip handing messages to a loop that
    /// has no subscriber at all.
    nonisolated let subscribedCount = Atomic<Int>(0)
    var publishedSubscribedCount = 0

    var peers: [Router] = []
    /// The session store's side on this loop (nil: no persistence).
    var store: RouterStore?
    /// Stored sessions on this loop: a loop that hands one a QoS 1/2 message holds the
    /// acknowledgement until that loop's records are committed (`sync: durable`).
    nonisolated let persistentSessions = Atomic<Int>(0)
    var trie = SubscriptionTrie<Session>()
    var sessions: [String: Session] = [:]
    /// Every open connection on this loop.
    var connections: [Int: ConnectionRef] = [:]
    /// When each connection's timers (keepalive, connect timeout, write stall) are due: the
    /// sweep looks only at those.
    var timers = TimerWheel(origin: .uptimeNanoseconds(0), interval: .milliseconds(500))
    var nextConnectionID = 1
    var sweepTask: RepeatedTask?

    /// Messages waiting to be handed to each peer at the end of the read burst, and their bytes.
    var outgoingBatches: [[Message]] = []
    var outgoingBytes: [Int] = []
    /// Connections written to since the last flush.
    var dirty: [ConnectionRef] = []

    var routeStamp: UInt64 = 0
    /// The last message routed here matched a subscription on this loop or a share group, or
    /// went to a loop that has subscriptions: without any of these, a v5 publisher is told
    /// 0x10 No matching subscribers.
    var routeReached = false
    /// The number of the last message this router routed (`Message.sequence`).
    var routeSequence: UInt64 = 0
    /// Sessions moving to another loop, still matched here (see `SessionMove`).
    var movingOut: [String: Session] = [:]
    /// Copies matched here for sessions moving to each peer, handed over at flush.
    var forwardBatches: [[(clientID: String, delivery: Delivery)]] = []
    var hasForwards = false
    var matches: [Match] = []
    /// Messages from the other nodes of a cluster, routed here.
    nonisolated let clusterInbox = ClusterInbox()
    /// Acknowledgements waiting for the cluster to store their messages, in arrival order.
    var clusterHeld = ClusterHeldAcks()
    let allocator = ByteBufferAllocator()
    var logger: Logger

    /// Totals gathered locally and folded into the broker-wide ones once per sweep.
    var local = BrokerCounters.Snapshot()
    /// Lagging sessions and paused publishers of this loop (publisher pacing).
    var lag = LagTracker()
    /// Routing the current PUBLISH queued it for a lagging subscriber (or for a loop that has
    /// one, or past the unrouted bound): its publisher should stop being read now.
    var publisherMustWait = false
    /// The PUBLISH just received was one QoS 2 message more than the Receive Maximum.
    var receiveMaximumExceeded = false
    /// The session whose PUBLISH is being routed: it is not held back by its own outbox (its
    /// held acknowledgements would keep that outbox from draining).
    var publishing: Session?
    /// With pacing, the largest batch for another loop before it is handed over without
    /// waiting for the end of the read burst (`LagTracker.handOverBatch`: smaller for small queues).
    static let batchHandOver = 128
    /// Sessions whose outbox refused a message under the `disconnect` policy.
    var overLimit: [Session] = []
    /// How often drops, pauses, refused retained messages and failed logins are logged at most.
    static let dropLogInterval = TimeAmount.seconds(5)
    /// Sessions with drops not logged yet (logged at most every `dropLogInterval`).
    var dropLog = DropLog(every: dropLogInterval)
    /// Pauses, refused retained messages and authentication failures are logged at most once
    /// per interval too, with how many there were.
    var pauseLog = RateLimitedLog(every: dropLogInterval)
    var retainedRefusedLog = RateLimitedLog(every: dropLogInterval)
    var clusterRefusedLog = RateLimitedLog(every: dropLogInterval)
    var authFailureLog = RateLimitedLog(every: dropLogInterval)
    /// Wills waiting for their delay, and offline sessions waiting to expire.
    var wills = WillScheduler()
    var expiries = SessionExpiry()
    /// The live configuration (limits change on reload), refreshed once per sweep.
    var config: BrokerConfiguration
    /// The password file and ACL, refreshed from the broker's once per sweep (so a reload
    /// reaches every loop within one sweep interval) and at each CONNECT.
    var security = SecurityState()
    /// The last message copied out of a larger read buffer (see `compacted`), and the payload
    /// it was copied from (kept, so that its address cannot be reused by another buffer).
    var compactedMessage: (message: Message, original: ByteBuffer)?

    struct Match {
        var session: Session
        var maximumQoS: QoS
        var retainAsPublished: Bool
        var identifiers: [UInt32]
    }

    package init(index: Int, eventLoop: any EventLoop, core: BrokerCore, customExecutor: (any SerialExecutor)? = nil) {
        self.customExecutor = customExecutor
        self.index = index
        self.eventLoop = eventLoop
        self.core = core
        self.config = core.configuration
        self.trie.observer = core.cluster
        var logger = core.logger
        logger[metadataKey: "loop"] = "\(index)"
        self.logger = logger
    }

    func start(peers: [Router], writer: StoreWriter?, messageIDBase: Int64) {
        if let writer {
            store = RouterStore(writer: writer, messageIDBase: messageIDBase, waitForPeer: Array(repeating: false, count: peers.count),
                                storedFor: Array(repeating: false, count: peers.count))
        }
        start(peers: peers)
    }

    package func start(peers: [Router]) {
        self.peers = peers
        self.outgoingBatches = Array(repeating: [], count: peers.count)
        self.outgoingBytes = Array(repeating: 0, count: peers.count)
        self.forwardBatches = Array(repeating: [], count: peers.count)
        let interval = config.keepaliveSweepInterval
        timers = TimerWheel(origin: eventLoop.now, interval: interval)
        sweepTask = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [self] _ in
            self.assumeIsolated { $0.sweep() }
        }
    }

    func stop() {
        sweepTask?.cancel()
        sweepTask = nil
        for (_, handler) in connections { handler.value.close(reason: .serverShuttingDown) }
        flush()
    }

    // MARK: Connections

    func register(_ handler: ConnectionRef) -> Int {
        let id = nextConnectionID
        nextConnectionID += 1
        connections[id] = handler
        timers.schedule(id, at: handler.value.nextTimerDeadline)
        return id
    }

    /// Connection `id`'s timer deadlines may have moved earlier: it is watched from then.
    func timersChanged(_ id: Int) {
        guard let handler = connections[id] else { return }
        timers.schedule(id, at: handler.value.nextTimerDeadline)
    }

    func unregister(_ id: Int) {
        timers.remove(id)
        if let handler = connections.removeValue(forKey: id) {
            collectTraffic(handler.value)
        }
        forgetPaused(id)
    }

    var connectionCount: Int { connections.count }

    /// Adds one to a total (connection events, timeouts); folded in at the next sweep.
    func count(_ counter: WritableKeyPath<BrokerCounters.Snapshot, Int>) {
        local[keyPath: counter] += 1
    }

    func collectTraffic(_ handler: any RoutedConnection) {
        let (received, sent) = handler.takeTraffic()
        addTraffic(received: received, sent: sent)
    }

    func addTraffic(received: Int, sent: Int) {
        local.bytesReceived += received
        local.bytesSent += sent
    }

    func sweep() {
        let now = eventLoop.now
        // Only connections whose deadline may have come; traffic is collected as it happens
        // (end of each read burst, each flush, the connection's end).
        for id in timers.due(now: now) {
            guard let handler = connections[id] else { continue }
            handler.value.checkTimers(now: now)
            if connections[id] != nil { timers.schedule(id, at: handler.value.nextTimerDeadline) }
        }
        security = core.security.withLockedValue { $0 }
        config = core.live.withLockedValue { $0 }
        checkSlowConsumers(now: now)
        checkStalls(now: now)
        checkResume()
        if core.cluster != nil { checkpointClusterSessions() }
        logDrops(now: now)
        flush()
        if local != BrokerCounters.Snapshot() {
            core.counters.add(local)
            local = BrokerCounters.Snapshot()
        }
    }

    // MARK: CONNECT and session ownership

    // MARK: Packets from a connected client

    // MARK: Routing

    /// Routes a message published on this node (and, in a cluster, sends it to the other
    /// nodes unless `forward` is false: a client's QoS 1/2 message goes there with its
    /// acknowledgement, `forwardToCluster(_:acknowledging:for:)`).
    func publish(_ message: Message, forward: Bool = true) {
        if core.cluster != nil {
            if forward { forwardToCluster(message) }
            var stamped = message
            stamped.clusterWall = ClusterLinkSupport.wallMilliseconds()
            // Share groups get it through the cluster, which picks one node per group (this
            // one included); this node's own topics stay here.
            publishStamped(stamped, shareGroups: message.isNodeLocal)
            return
        }
        publishStamped(message, shareGroups: true)
    }

    private func publishStamped(_ message: Message, shareGroups: Bool) {
        // An interval of 0 is taken as no expiry, as mosquitto does (the property is forwarded
        // as it came); otherwise the message would expire before reaching anyone.
        if message.expiresAt == nil, !message.properties.isEmpty, let seconds = message.properties.messageExpiryInterval, seconds > 0 {
            var stamped = message
            stamped.expiresAt = eventLoop.now + .seconds(Int64(seconds))
            route(stamped, shareGroups: shareGroups)
        } else {
            route(message, shareGroups: shareGroups)
        }
    }

    /// Routes `message` to this node's subscribers (and, with `shareGroups`, to one member of
    /// each matching share group); `retainHere`: stores it as retained if it is.
    func route(_ message: Message, retainHere: Bool = true, shareGroups: Bool = true) {
        var message = message
        routeSequence &+= 1
        message.origin = index
        message.sequence = routeSequence
        if message.retain && retainHere { retain(message) }
        deliverLocally(message)
        routeReached = !matches.isEmpty
        if shareGroups && !core.shared.isEmpty && routeShared(message) { routeReached = true }
        if peers.count > 1 {
            let cost = message.payload.readableBytes + message.topic.utf8.count + 64
            let pacing = config.pausePublishersForSlowSubscribers
            for i in peers.indices where i != index && peers[i].subscribedCount.load(ordering: .acquiring) > 0 {
                routeReached = true  // (as far as this loop can tell)
                if message.qos != .atMostOnce, store?.holdsAcknowledgements == true, peers[i].persistentSessions.load(ordering: .relaxed) > 0 {
                    store!.waitForPeer[i] = true
                    store!.touched = true
                }
                outgoingBatches[i].append(message)
                outgoingBytes[i] += cost
                if pacing {
                    if peers[i].laggingSessions.load(ordering: .relaxed) > 0 { publisherMustWait = true }
                    if outgoingBatches[i].count >= LagTracker.handOverBatch(config) { handOver(i) }
                }
            }
            if pacing && unroutedMessages.load(ordering: .relaxed) > LagTracker.unroutedMessageBound(config) { publisherMustWait = true }
        }
    }

    /// Stores a retained message within `max_retained_messages` (the broker's own `$SYS`
    /// topics are outside it); a refusal is counted and logged at most every 5 s.
    func retain(_ message: Message) {
        let sys = message.topic.hasPrefix("$SYS/")
        let limit = sys ? 0 : config.maximumRetainedMessages
        let stored = core.retained.store(
            RetainedMessage(topic: message.topic, payload: message.payload, qos: message.qos, properties: message.properties,
                            expiresAt: message.expiresAt),
            limit: limit)
        if stored && store != nil && !sys {
            // `$SYS` is the broker's own and is not stored.
            record(.retained(topic: message.topic, message.payload.readableBytes == 0 ? nil : self.stored(message, retain: true)))
            store!.touched = true
        }
        guard !stored else { return }
        local.retainedRefused += 1
        if let count = retainedRefusedLog.record(at: eventLoop.now) {
            logger.warning("retained messages not stored: max_retained_messages topics held", metadata: [
                "count": "\(count)", "limit": "\(limit)", "last_topic": "\(message.topic)",
            ])
        }
    }

    /// A batch handed over by another loop.
    func deliverBatch(_ batch: [Message]) {
        for message in batch { deliverLocally(message) }
        flushConnections()
        flushStore()
    }

    func deliverLocally(_ message: Message) {
        routeStamp &+= 1
        let stamp = routeStamp
        matches.removeAll(keepingCapacity: true)
        let checkRead = security.acl != nil
        trie.forEachMatch(topic: message.topic) { entry in
            let session = entry.subscriber
            if entry.options.noLocal && session.clientID == message.publisherID { return }
            if checkRead && session.matchStamp != stamp && !mayRead(message.topic, session) { return }
            if session.matchStamp == stamp {
                // Overlapping subscriptions: one copy at the highest QoS (MQTT-3.3.5-1).
                let i = session.matchIndex
                matches[i].maximumQoS = max(matches[i].maximumQoS, entry.options.qos)
                matches[i].retainAsPublished = matches[i].retainAsPublished || entry.options.retainAsPublished
                if let id = entry.identifier { matches[i].identifiers.append(id) }
            } else {
                session.matchStamp = stamp
                session.matchIndex = matches.count
                matches.append(Match(
                    session: session, maximumQoS: entry.options.qos, retainAsPublished: entry.options.retainAsPublished,
                    identifiers: entry.identifier.map { [$0] } ?? []))
            }
        }
        if matches.isEmpty { return }
        if message.isExpired(at: eventLoop.now) {
            // Expired on its way here (another loop's batch): sent to no one (MQTT-3.3.2-5).
            for match in matches { drop(.expired, match.session) }
            return
        }
        var shared = SharedEncoding()
        for match in matches {
            let qos = min(message.qos, match.maximumQoS)
            // RETAIN is cleared on normal forwarding unless v5 retain-as-published (MQTT-3.3.1-9).
            let retain = match.retainAsPublished && message.retain
            let delivery = Delivery(message: message, qos: qos, retain: retain, subscriptionIdentifiers: match.identifiers)
            if let move = match.session.move {
                moving(delivery, move, match.session)
                continue
            }
            if qos == .atMostOnce && match.identifiers.isEmpty {
                guard let connection = match.session.connection else { continue }
                // A writable socket takes what waits first (the writability event that would
                // drain it may sit behind other work on this loop).
                if match.session.hasBacklog && connection.value.isWritable { drain(match.session) }
                guard !match.session.hasBacklog && connection.value.isWritable else {
                    enqueue(delivery, to: match.session)
                    continue
                }
                // With topic aliases, subscribers at the same point of their alias tables
                // share bytes too.
                let aliases = match.session.outAliases
                let use = aliases?.use(for: message.topic) ?? .none
                let bytes = aliases == nil
                    ? shared.buffer(for: delivery, version: match.session.version, allocator: allocator, now: eventLoop.now)
                    : shared.aliased(delivery, use, allocator: allocator, now: eventLoop.now)
                if bytes.readableBytes > match.session.maximumPacketSize {
                    drop(.tooLarge, match.session)
                    continue
                }
                connection.value.write(bytes)
                markDirty(connection)
                local.messagesSent += 1
                aliases?.commit(use, for: message.topic)
            } else {
                deliver(delivery, to: match.session)
            }
        }
    }

    // MARK: Outbox limits

    // MARK: Slow consumers and flow control

    // MARK: Flushing

    func markDirty(_ connection: ConnectionRef) {
        if connection.value.markDirty() { dirty.append(connection) }
    }

    func flushConnections() {
        // By index: a flush can close a connection, whose handling may mark others dirty.
        var i = 0
        while i < dirty.count {
            dirty[i].value.flushIfDirty()
            collectTraffic(dirty[i].value)
            i += 1
        }
        dirty.removeAll(keepingCapacity: true)
    }

    /// Lets the other loops see this trie's subscription count (they skip a loop with none).
    func publishSubscribedCount() {
        if trie.count != publishedSubscribedCount {
            publishedSubscribedCount = trie.count
            subscribedCount.store(trie.count, ordering: .releasing)
        }
    }

    /// End of a read burst: flush every connection written to, then hand each other loop its
    /// batch. The batch's bytes count as this loop's unrouted work until the peer routed it.
    func flush() {
        publishSubscribedCount()
        flushConnections()
        for i in outgoingBatches.indices where !outgoingBatches[i].isEmpty {
            handOver(i)
        }
        if hasForwards { handOverForwards() }
        flushStore()
    }

    /// Hands the batch for peer `i` over.
    func handOver(_ i: Int) {
        let batch = outgoingBatches[i]
        let bytes = outgoingBytes[i]
        outgoingBatches[i] = []
        outgoingBytes[i] = 0
        handOff(to: i, messages: batch.count, bytes: bytes) { $0.deliverBatch(batch) }
    }

    /// Runs `work` on peer `i`'s router. Its `messages` and `bytes` count as this loop's
    /// unrouted work until the peer has done it; falling below half the bounds then wakes
    /// this loop's paused publishers.
    func handOff(to i: Int, messages: Int, bytes: Int, _ work: @escaping @Sendable (isolated Router) -> Void) {
        unroutedBytes.add(bytes, ordering: .relaxed)
        unroutedMessages.add(messages, ordering: .relaxed)
        let peer = peers[i]
        let origin = self
        let resumeBelow = config.maximumUnroutedBytes / 2
        let resumeBelowMessages = LagTracker.unroutedMessageBound(config) / 2
        peer.eventLoop.execute {
            peer.onLoop(work) { router, work in work(router) }
            let left = origin.unroutedBytes.subtract(bytes, ordering: .relaxed).newValue
            let leftMessages = origin.unroutedMessages.subtract(messages, ordering: .relaxed).newValue
            if (left <= resumeBelow && left + bytes > resumeBelow)
                || (leftMessages <= resumeBelowMessages && leftMessages + messages > resumeBelowMessages) {
                origin.eventLoop.execute { origin.assumeIsolated { $0.checkResume() } }
            }
        }
    }

    // MARK: Introspection for tests and $SYS

    var sessionCount: Int { sessions.count }

    /// What one session lost and holds, for operators and tests.
    func sessionReport(_ clientID: String) -> SessionReport? {
        guard let session = sessions[clientID] else { return nil }
        var drops: [DropReason: Int] = [:]
        for reason in DropReason.allCases { drops[reason] = session.drops[reason] }
        return SessionReport(online: session.isOnline, dropped: drops, queuedMessages: session.outbox.count,
                             queuedBytes: session.outbox.bytes, inflight: session.inflight.count)
    }
    var subscriptionCount: Int { trie.count }
}
