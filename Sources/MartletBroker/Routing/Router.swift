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
/// synchronously with `assumeIsolated`: no suspension and no thread hop per message.
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
    private var publishedSubscribedCount = 0

    var peers: [Router] = []
    var trie = SubscriptionTrie<Session>()
    var sessions: [String: Session] = [:]
    /// Every open connection on this loop, for the keepalive / connect-timeout sweep.
    private var connections: [Int: ConnectionRef] = [:]
    private var nextConnectionID = 1
    private var sweepTask: RepeatedTask?

    /// Messages waiting to be handed to each peer at the end of the read burst, and their bytes.
    private var outgoingBatches: [[Message]] = []
    private var outgoingBytes: [Int] = []
    /// Connections written to since the last flush.
    private var dirty: [ConnectionRef] = []

    private var routeStamp: UInt64 = 0
    /// The number of the last message this router routed (`Message.sequence`).
    var routeSequence: UInt64 = 0
    /// Sessions moving to another loop, still matched here (see `SessionMove`).
    var movingOut: [String: Session] = [:]
    /// Copies matched here for sessions moving to each peer, handed over at flush.
    var forwardBatches: [[(clientID: String, delivery: Delivery)]] = []
    var hasForwards = false
    private var matches: [Match] = []
    private let allocator = ByteBufferAllocator()
    var logger: Logger

    /// Totals gathered locally and folded into the broker-wide ones once per sweep.
    var local = BrokerCounters.Snapshot()
    /// Publishers whose socket is not being read (inbound flow control).
    private var paused: [ConnectionRef] = []
    /// This loop's lagging sessions, watched for stalls at each sweep.
    private var laggingList: [Session] = []
    /// Routing the current PUBLISH queued it for a lagging subscriber (or for a loop that has
    /// one, or past the unrouted bound): its publisher should stop being read now.
    private var publisherMustWait = false
    /// The PUBLISH just received was one QoS 2 message more than the Receive Maximum.
    private var receiveMaximumExceeded = false
    /// The session whose PUBLISH is being routed: it is not held back by its own outbox (its
    /// held acknowledgements would keep that outbox from draining).
    private var publishing: Session?
    /// A batch for another loop is handed over once it holds this many messages, without
    /// waiting for the end of the read burst (so lagging there is seen here promptly).
    static let batchHandOver = 128
    /// Sessions whose outbox refused a message under the `disconnect` policy.
    private var overLimit: [Session] = []
    /// Sessions with drops not logged yet, and when drops were last logged.
    private var unloggedDroppers: [Session] = []
    private var lastDropLog = NIODeadline.uptimeNanoseconds(0)
    static let dropLogInterval = TimeAmount.seconds(5)
    /// Pauses, refused retained messages and authentication failures are logged at most once
    /// per interval too, with how many there were.
    private var pauseLog = RateLimitedLog(every: dropLogInterval)
    private var retainedRefusedLog = RateLimitedLog(every: dropLogInterval)
    private var authFailureLog = RateLimitedLog(every: dropLogInterval)
    /// Wills waiting for their Will Delay Interval, by client id, with their timers (kept
    /// here rather than in every session: few sessions ever have one).
    private var pendingWills: [String: (will: Message, timer: Scheduled<Void>)] = [:]
    /// The live configuration (limits change on reload), refreshed once per sweep.
    var config: BrokerConfiguration
    /// The password file and ACL, refreshed from the broker's once per sweep (so a reload
    /// reaches every loop within one sweep interval) and at each CONNECT.
    private var security = SecurityState()
    /// The last message copied out of a larger read buffer (see `compacted`), and the payload
    /// it was copied from (kept, so that its address cannot be reused by another buffer).
    private var compactedMessage: (message: Message, original: ByteBuffer)?

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
        var logger = core.logger
        logger[metadataKey: "loop"] = "\(index)"
        self.logger = logger
    }

    package func start(peers: [Router]) {
        self.peers = peers
        self.outgoingBatches = Array(repeating: [], count: peers.count)
        self.outgoingBytes = Array(repeating: 0, count: peers.count)
        self.forwardBatches = Array(repeating: [], count: peers.count)
        let interval = config.keepaliveSweepInterval
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
        return id
    }

    func unregister(_ id: Int) {
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

    private func collectTraffic(_ handler: any RoutedConnection) {
        let (received, sent) = handler.takeTraffic()
        local.bytesReceived += received
        local.bytesSent += sent
    }

    private func sweep() {
        let now = eventLoop.now
        for (_, handler) in connections {
            handler.value.checkTimers(now: now)
            collectTraffic(handler.value)
        }
        security = core.security.withLockedValue { $0 }
        config = core.live.withLockedValue { $0 }
        checkSlowConsumers(now: now)
        checkStalls(now: now)
        checkResume()
        logDrops(now: now)
        flush()
        if local != BrokerCounters.Snapshot() {
            core.counters.add(local)
            local = BrokerCounters.Snapshot()
        }
    }

    // MARK: CONNECT and session ownership

    struct ConnectRequest: Sendable, Equatable {
        var clientID: String
        var version: ProtocolVersion
        var cleanStart: Bool
        var expiryInterval: UInt32
        var receiveMaximum: Int
        var maximumPacketSize: Int
        var policy: SlowConsumerPolicy
        var username: String?
    }

    enum AuthenticationStep {
        case done(Authenticator.Outcome)
        /// The password has to be derived and compared: `Authenticator.verify`, off the loop,
        /// then `authenticated`.
        case verify(Authenticator)
    }

    /// Checks CONNECT credentials as far as it can without deriving a key.
    func authenticate(username: String?, password: [UInt8]?, allowAnonymous: Bool, identityIsUsername: Bool) -> AuthenticationStep {
        security = core.security.withLockedValue { $0 }
        guard let outcome = security.authenticator.quickCheck(
            username: username, password: password, allowAnonymous: allowAnonymous, identityIsUsername: identityIsUsername)
        else { return .verify(security.authenticator) }
        authenticated(outcome, username: username)
        return .done(outcome)
    }

    /// The outcome of an authentication: failures are counted and logged at most every 5 s.
    func authenticated(_ outcome: Authenticator.Outcome, username: String?) {
        if outcome != .accepted {
            local.authFailures += 1
            if let count = authFailureLog.record(at: eventLoop.now) {
                logger.warning("authentication failures", metadata: ["count": "\(count)", "last_user": "\(username ?? "(anonymous)")"])
            }
        }
    }

    /// Whether a client may publish to `topic` (a PUBLISH, or a will checked at CONNECT).
    /// `$SYS` is the broker's own: a client publishes there only where an ACL rule names it
    /// (a leading wildcard never matches it), as in mosquitto.
    func mayWrite(_ topic: String, username: String?, clientID: String) -> Bool {
        security.acl?.allows(.write, topic, username: username, clientID: clientID) ?? !Self.isSysTopic(topic)
    }

    static func isSysTopic(_ topic: String) -> Bool {
        topic.utf8.first == UInt8(ascii: "$") && (topic == "$SYS" || topic.hasPrefix("$SYS/"))
    }

    /// Whether the session may receive a message on `topic` (always, without an ACL).
    func mayRead(_ topic: String, _ session: Session) -> Bool {
        guard let acl = security.acl else { return true }
        if session.readAllowedGeneration != security.generation {
            session.readAllowed = [:]
            session.readAllowedGeneration = security.generation
        }
        if let known = session.readAllowed[topic] { return known }
        let allowed = acl.allows(.read, topic, username: session.username, clientID: session.clientID)
        if session.readAllowed.count >= 1024 { session.readAllowed.removeAll(keepingCapacity: true) }
        session.readAllowed[topic] = allowed
        return allowed
    }

    /// A connection past CONNECT is gone (closed, dropped, or DISCONNECT with a v5 Session
    /// Expiry Interval that replaces CONNECT's, MQTT 5 3.14.2.2.2).
    func connectionLost(_ lost: ConnectionStateMachine.Lost, connectionID: Int) {
        if let expiry = lost.expiryInterval {
            updateExpiry(clientID: lost.clientID, connectionID: connectionID, expiryInterval: expiry)
        }
        connectionLost(clientID: lost.clientID, connectionID: connectionID, will: lost.will, willDelay: lost.willDelay)
    }

    /// The connection of `clientID` is gone. `will` is published unless the client sent
    /// DISCONNECT: at once, or with a v5 Will Delay Interval when the Will Delay Interval
    /// passes or the session ends, whichever comes first (MQTT 5 3.1.3.2.2).
    func connectionLost(clientID: String, connectionID: Int, will: Message?, willDelay: UInt32 = 0) {
        guard let session = sessions[clientID], session.connectionID == connectionID, session.isOnline else {
            if let will { publish(will) }
            flush()
            return
        }
        setConnection(session, nil)
        if session.isPersistent {
            if let will {
                if willDelay > 0 { scheduleWill(will, in: min(willDelay, session.expiryInterval), for: session) } else { publish(will) }
            }
            scheduleExpiry(session)
        } else {
            if let will { publish(will) }
            endSession(session)
        }
        flush()
    }

    private func scheduleWill(_ will: Message, in seconds: UInt32, for session: Session) {
        let clientID = session.clientID
        let generation = session.connectionID
        let timer = eventLoop.scheduleTask(in: .seconds(Int64(seconds))) { [self] in
            self.assumeIsolated { router in
                guard let s = router.sessions[clientID], !s.isOnline, s.connectionID == generation,
                      let will = router.takePendingWill(s) else { return }
                router.publish(will)
                router.flush()
            }
        }
        pendingWills[clientID]?.timer.cancel()
        pendingWills[clientID] = (will, timer)
    }

    /// The will waiting for its delay, if any; its timer is cancelled.
    func takePendingWill(_ session: Session) -> Message? {
        guard !pendingWills.isEmpty, let pending = pendingWills.removeValue(forKey: session.clientID) else { return nil }
        pending.timer.cancel()
        return pending.will
    }

    /// v5 DISCONNECT may change the session expiry interval (MQTT 5 3.14.2.2.2).
    func updateExpiry(clientID: String, connectionID: Int, expiryInterval: UInt32) {
        guard let session = sessions[clientID], session.connectionID == connectionID else { return }
        session.expiryInterval = expiryInterval
    }

    func scheduleExpiry(_ session: Session) {
        session.expiryTask?.cancel()
        session.expiryTask = nil
        guard session.expiryInterval != Session.neverExpires else { return }
        let clientID = session.clientID
        let generation = session.connectionID
        session.expiryTask = eventLoop.scheduleTask(in: .seconds(Int64(session.expiryInterval))) { [self] in
            self.assumeIsolated { router in
                guard let s = router.sessions[clientID], !s.isOnline, s.connectionID == generation else { return }
                router.endSession(s)
            }
        }
    }

    func endSession(_ session: Session) {
        // A will still waiting for its delay goes out when the session ends.
        if let will = takePendingWill(session) { publish(will) }
        discardOutbox(session, countAs: .sessionEnded)
        for filter in session.subscriptions.keys { trie.remove(filter: filter, subscriber: session) }
        sessions.removeValue(forKey: session.clientID)
        core.registry.release(session.clientID, router: index)
    }

    // MARK: Packets from a connected client

    /// What routing a client's PUBLISH came to, for its connection's state machine.
    struct PublishVerdict: Sendable, Equatable {
        /// PUBACK or PUBREC, sent after anything routing wrote.
        var reply: MQTTPacket?
        /// The message was queued for a lagging subscriber (or for a loop that has one, or
        /// past the unrouted bound): its publisher should stop being read now.
        var publisherMustWait = false
        /// One QoS 2 message more than the Receive Maximum: not routed.
        var receiveMaximumExceeded = false
    }

    /// What the session made of an acknowledgement, SUBSCRIBE or UNSUBSCRIBE.
    struct Answer: Sendable, Equatable {
        var reply: MQTTPacket?
        /// After the SUBACK, the retained messages of the new subscriptions (`sendRetained`).
        var sendRetained = false
    }

    func received(_ publish: PublishPacket, clientID: String, connectionID: Int) -> PublishVerdict {
        guard let session = sessions[clientID], session.connectionID == connectionID, session.isOnline else { return PublishVerdict() }
        publisherMustWait = false
        receiveMaximumExceeded = false
        publishing = session
        let reply = receivedPublish(publish, from: session)
        publishing = nil
        return PublishVerdict(reply: reply, publisherMustWait: publisherMustWait, receiveMaximumExceeded: receiveMaximumExceeded)
    }

    func received(_ packet: MQTTPacket, clientID: String, connectionID: Int) -> Answer {
        guard let session = sessions[clientID], session.connectionID == connectionID, session.isOnline else { return Answer() }
        switch packet {
        case .puback(let ack):
            if session.inflight.acknowledge(ack.packetIdentifier) {
                flightClosed(session)
            }
        case .pubrec(let rec):
            switch session.inflight.received(pubrec: rec.packetIdentifier, failed: rec.reasonCode.isFailure) {
            case .release, .releasedAlready:
                return Answer(reply: .pubrel(PubRelPacket(packetIdentifier: rec.packetIdentifier)))
            case .ended:
                flightClosed(session)
            case .unknown:
                return Answer(reply: .pubrel(PubRelPacket(packetIdentifier: rec.packetIdentifier, reasonCode: .packetIdentifierNotFound)))
            }
        case .pubcomp(let comp):
            if session.inflight.complete(comp.packetIdentifier) {
                flightClosed(session)
            }
        case .pubrel(let rel):
            let known = session.inboundQoS2.remove(rel.packetIdentifier) != nil
            return Answer(reply: .pubcomp(PubCompPacket(packetIdentifier: rel.packetIdentifier, reasonCode: known ? .success : .packetIdentifierNotFound)))
        case .subscribe(let subscribe):
            return receivedSubscribe(subscribe, from: session)
        case .unsubscribe(let unsubscribe):
            var codes: [ReasonCode] = []
            for filter in unsubscribe.topicFilters {
                let existed = session.subscriptions.removeValue(forKey: filter) != nil
                if existed { trie.remove(filter: filter, subscriber: session) }
                codes.append(existed ? .success : .noSubscriptionExisted)
            }
            return Answer(reply: .unsuback(UnsubAckPacket(packetIdentifier: unsubscribe.packetIdentifier, reasonCodes: session.version == .v5 ? codes : [])))
        default:
            break
        }
        return Answer()
    }

    /// SUBACK is out: the session's retained feed starts.
    func sendRetained(clientID: String, connectionID: Int) {
        guard let session = sessions[clientID], session.connectionID == connectionID else { return }
        drain(session)
    }

    private func receivedPublish(_ publish: PublishPacket, from session: Session) -> MQTTPacket? {
        local.messagesReceived += 1
        if !mayWrite(publish.topic, username: session.username, clientID: session.clientID) {
            // Not routed. v5 says why in the acknowledgement; 3.1.1 cannot, so the flow
            // completes as if delivered (as mosquitto does) and the refusal is counted.
            local.publishDenied += 1
            let code: ReasonCode = session.version == .v5 ? .notAuthorized : .success
            switch publish.delivery {
            case .atMostOnce: return nil
            case .atLeastOnce(let id): return .puback(PubAckPacket(packetIdentifier: id, reasonCode: code))
            case .exactlyOnce(let id): return .pubrec(PubRecPacket(packetIdentifier: id, reasonCode: code))
            }
        }
        var properties = publish.properties
        if !properties.isEmpty { properties.removeAll([.topicAlias, .subscriptionIdentifier]) }
        let message = Message(
            topic: publish.topic, payload: publish.payload, qos: publish.qos, retain: publish.retain,
            properties: properties, publisherID: session.clientID)
        switch publish.delivery {
        case .atMostOnce:
            self.publish(message)
            return nil
        case .atLeastOnce(let id):
            self.publish(message)
            return .puback(PubAckPacket(packetIdentifier: id))
        case .exactlyOnce(let id):
            if session.version == .v5, session.inboundQoS2.count >= config.receiveMaximum, !session.inboundQoS2.contains(id) {
                // One more than the Receive Maximum we advertised (MQTT 5 3.3.4): not routed,
                // and the connection closes with 0x93.
                receiveMaximumExceeded = true
                return nil
            }
            // A resent PUBLISH before PUBREL is acknowledged again but not delivered twice (MQTT-4.3.3-2).
            if session.inboundQoS2.insert(id).inserted {
                self.publish(message)
            }
            return .pubrec(PubRecPacket(packetIdentifier: id))
        }
    }

    private func receivedSubscribe(_ subscribe: SubscribePacket, from session: Session) -> Answer {
        let v5 = session.version == .v5
        let identifier = subscribe.properties.subscriptionIdentifiers.first
        var codes: [ReasonCode] = []
        var walks: [RetainedFeed.Walk] = []
        let limits = config
        for var sub in subscribe.subscriptions {
            // Granted at most max_qos (MQTT-3.2.2-9: the server's Maximum QoS).
            if sub.options.qos > limits.maximumQoS { sub.options.qos = limits.maximumQoS }
            do {
                try Topic.validateFilter(sub.topicFilter)
            } catch {
                codes.append(v5 ? .topicFilterInvalid : .subscribeFailure)
                continue
            }
            if !Topic.isWithin(sub.topicFilter, maximumLength: limits.maximumTopicLength, maximumLevels: limits.maximumTopicLevels) {
                codes.append(v5 ? .topicFilterInvalid : .subscribeFailure)
                continue
            }
            if SharedSubscription(sub.topicFilter) != nil {
                codes.append(v5 ? .sharedSubscriptionsNotSupported : .subscribeFailure)
                continue
            }
            if let acl = security.acl, !acl.allows(.subscribe, sub.topicFilter, username: session.username, clientID: session.clientID) {
                local.subscribeDenied += 1
                codes.append(v5 ? .notAuthorized : .subscribeFailure)
                continue
            }
            if limits.maximumSubscriptionsPerClient > 0 && session.subscriptions[sub.topicFilter] == nil
                && session.subscriptions.count >= limits.maximumSubscriptionsPerClient {
                codes.append(v5 ? .quotaExceeded : .subscribeFailure)
                continue
            }
            let existed = trie.insert(filter: sub.topicFilter, subscriber: session, options: sub.options, identifier: identifier)
            session.subscriptions[sub.topicFilter] = StoredSubscription(options: sub.options, identifier: identifier)
            codes.append(ReasonCode(sub.options.qos.rawValue))
            switch sub.options.retainHandling {
            case .sendOnSubscribe:
                walks.append(.init(cursor: .init(filter: sub.topicFilter), grantedQoS: sub.options.qos, identifier: identifier))
            case .sendIfNew where !existed:
                walks.append(.init(cursor: .init(filter: sub.topicFilter), grantedQoS: sub.options.qos, identifier: identifier))
            default:
                break
            }
        }
        // Other loops see the new interest now, not at this loop's next flush: a message they
        // route from here on reaches the subscription, and the SUBACK only follows.
        publishSubscribedCount()
        let suback = MQTTPacket.suback(SubAckPacket(packetIdentifier: subscribe.packetIdentifier, reasonCodes: codes))
        guard !walks.isEmpty else { return Answer(reply: suback) }
        // Retained messages follow the SUBACK, flagged RETAIN=1 (MQTT-3.3.1-8), sent as the
        // socket drains (MQTT-3.3.1-6: none dropped however many match).
        if session.retainedFeed == nil { session.retainedFeed = RetainedFeed(walks: []) }
        session.retainedFeed!.walks.append(contentsOf: walks)
        return Answer(reply: suback, sendRetained: true)
    }

    /// Retained messages read from the store per step of a feed.
    static let retainedReadBatch = 64
    /// Messages one drain sends from a feed before yielding the loop to other work (the rest
    /// follows in a task of its own, or when the socket drains).
    static let retainedDrainBudget = 1024

    /// Sends a session's retained feed while the socket is writable and the inflight window
    /// has room; returns whether the feed is finished.
    private func drainRetained(_ session: Session, _ connection: ConnectionRef) -> Bool {
        guard var feed = session.retainedFeed else { return true }
        // Taken out while it is worked on, so its queues are not copied on write.
        session.retainedFeed = nil
        let handler = connection.value
        var budget = Self.retainedDrainBudget
        var blocked = false
        while budget > 0, handler.isWritable, !feed.walks.isEmpty {
            guard let next = feed.walks[0].ready.first else {
                if feed.walks[0].cursor.isFinished {
                    feed.walks.removeFirst()
                    continue
                }
                let grantedQoS = feed.walks[0].grantedQoS
                let identifiers = feed.walks[0].identifier.map { [$0] } ?? []
                for message in core.retained.next(&feed.walks[0].cursor, limit: Self.retainedReadBatch, now: eventLoop.now) where mayRead(message.topic, session) {
                    let m = Message(topic: message.topic, payload: message.payload, qos: message.qos, retain: true,
                                    properties: message.properties, expiresAt: message.expiresAt)
                    feed.walks[0].ready.append(Delivery(message: m, qos: min(message.qos, grantedQoS), retain: true,
                                                        subscriptionIdentifiers: identifiers))
                }
                continue
            }
            if next.qos != .atMostOnce && session.inflight.count >= session.inflightWindow {
                blocked = true
                break
            }
            feed.walks[0].ready.removeFirst()
            budget -= 1
            if next.message.isExpired(at: eventLoop.now) {
                drop(.expired, session)
            } else if next.qos == .atMostOnce {
                writePublish(next, to: session, packetIdentifier: nil, dup: false)
            } else {
                sendInflight(next, to: session)
            }
        }
        while feed.walks.first?.isFinished == true { feed.walks.removeFirst() }
        if feed.walks.isEmpty { return true }
        session.retainedFeed = feed
        if !blocked && budget == 0 && handler.isWritable {
            // Still writable: the rest goes on after what else waits on this loop.
            let clientID = session.clientID
            let connectionID = session.connectionID
            eventLoop.execute { [self] in
                self.assumeIsolated { $0.becameWritable(clientID: clientID, connectionID: connectionID) }
            }
        }
        return false
    }

    // MARK: Routing

    /// Routes a message published on this loop: local subscribers now, other loops at flush.
    func publish(_ message: Message) {
        // An interval of 0 is taken as no expiry, as mosquitto does (the property is forwarded
        // as it came); otherwise the message would expire before reaching anyone.
        if message.expiresAt == nil, !message.properties.isEmpty, let seconds = message.properties.messageExpiryInterval, seconds > 0 {
            var stamped = message
            stamped.expiresAt = eventLoop.now + .seconds(Int64(seconds))
            route(stamped)
        } else {
            route(message)
        }
    }

    private func route(_ message: Message) {
        var message = message
        routeSequence &+= 1
        message.origin = index
        message.sequence = routeSequence
        if message.retain { retain(message) }
        deliverLocally(message)
        if peers.count > 1 {
            let cost = message.payload.readableBytes + message.topic.utf8.count + 64
            let pacing = config.pausePublishersForSlowSubscribers
            for i in peers.indices where i != index && peers[i].subscribedCount.load(ordering: .acquiring) > 0 {
                outgoingBatches[i].append(message)
                outgoingBytes[i] += cost
                if pacing {
                    if peers[i].laggingSessions.load(ordering: .relaxed) > 0 { publisherMustWait = true }
                    if outgoingBatches[i].count >= Self.batchHandOver { handOver(i) }
                }
            }
            if pacing && unroutedMessages.load(ordering: .relaxed) > unroutedMessageBound { publisherMustWait = true }
        }
    }

    /// Stores a retained message within `max_retained_messages` (the broker's own `$SYS`
    /// topics are outside it); a refusal is counted and logged at most every 5 s.
    private func retain(_ message: Message) {
        let limit = message.topic.hasPrefix("$SYS/") ? 0 : config.maximumRetainedMessages
        let stored = core.retained.store(
            RetainedMessage(topic: message.topic, payload: message.payload, qos: message.qos, properties: message.properties,
                            expiresAt: message.expiresAt),
            limit: limit)
        guard !stored else { return }
        local.retainedRefused += 1
        if let count = retainedRefusedLog.record(at: eventLoop.now) {
            logger.warning("retained messages not stored: max_retained_messages topics held", metadata: [
                "count": "\(count)", "limit": "\(limit)", "last_topic": "\(message.topic)",
            ])
        }
    }

    /// With pacing, how many messages this loop may have handed to others and not yet routed.
    private var unroutedMessageBound: Int {
        config.pausePublishersForSlowSubscribers ? max(2 * Self.batchHandOver, config.maximumQueuedMessages / 4) : .max
    }

    /// A batch handed over by another loop.
    func deliverBatch(_ batch: [Message]) {
        for message in batch { deliverLocally(message) }
        flushConnections()
    }

    private func deliverLocally(_ message: Message) {
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
                let bytes = shared.buffer(for: delivery, version: match.session.version, allocator: allocator, now: eventLoop.now)
                if bytes.readableBytes > match.session.maximumPacketSize {
                    drop(.tooLarge, match.session)
                    continue
                }
                connection.value.write(bytes)
                markDirty(connection)
                local.messagesSent += 1
            } else {
                deliver(delivery, to: match.session)
            }
        }
    }

    /// Goes out now when the client is online, nothing is queued before it, the socket is
    /// writable and (QoS 1/2) the inflight window has room; otherwise waits in the outbox.
    /// QoS 0 is not queued for an offline session (MQTT-3.1.2-5 leaves it optional).
    func deliver(_ delivery: Delivery, to session: Session) {
        guard let connection = session.connection else {
            if delivery.qos != .atMostOnce { enqueue(delivery, to: session) }
            return
        }
        if session.hasBacklog && connection.value.isWritable { drain(session) }
        let canSend = !session.hasBacklog && connection.value.isWritable
        if canSend && delivery.qos == .atMostOnce {
            writePublish(delivery, to: session, packetIdentifier: nil, dup: false)
        } else if canSend && session.inflight.count < session.inflightWindow {
            sendInflight(delivery, to: session)
        } else {
            enqueue(delivery, to: session)
        }
    }

    private func sendInflight(_ delivery: Delivery, to session: Session) {
        let id = session.inflight.send(delivery)
        core.counters.inflightMessages.add(1, ordering: .relaxed)
        writePublish(delivery, to: session, packetIdentifier: id, dup: false)
    }

    /// Moves messages from the outbox to the socket while it is writable, in order; a QoS 1/2
    /// message at the head waits for the inflight window (and so does everything behind it).
    func drain(_ session: Session) {
        guard let connection = session.connection else { return }
        let handler = connection.value
        if session.retainedFeed != nil && !drainRetained(session, connection) { return }
        var moved = 0
        var bytes = 0
        while handler.isWritable, let next = session.outbox.first {
            let expired = next.message.isExpired(at: eventLoop.now)
            if !expired && next.qos != .atMostOnce && session.inflight.count >= session.inflightWindow { break }
            _ = session.outbox.popFirst()
            moved += 1
            bytes += next.cost
            if expired {
                // Waited past its Message Expiry Interval: not sent (MQTT-3.3.2-5).
                drop(.expired, session)
            } else if next.qos == .atMostOnce {
                writePublish(next, to: session, packetIdentifier: nil, dup: false)
            } else {
                sendInflight(next, to: session)
            }
        }
        if moved > 0 {
            accountQueued(session, bytes: -bytes, messages: -moved)
            if session.fullSince != nil && hasRoom(session, for: 0) { session.fullSince = nil }
            session.drained &+= moved
            if (session.lagging || session.stalled) && isBelowLagEnd(session) { endLag(session) }
        }
    }

    /// A flow of the session closed: the gauge follows and the window has room again.
    private func flightClosed(_ session: Session) {
        core.counters.inflightMessages.subtract(1, ordering: .relaxed)
        drain(session)
    }

    /// A flow given up before its message was sent (too large, not authorized).
    private func abandonFlight(_ session: Session, _ packetIdentifier: UInt16?) {
        if let id = packetIdentifier, session.inflight.abandon(id) {
            core.counters.inflightMessages.subtract(1, ordering: .relaxed)
        }
    }

    /// The connection's socket drained below the low-water mark.
    func becameWritable(clientID: String, connectionID: Int) {
        guard let session = sessions[clientID], session.connectionID == connectionID else { return }
        drain(session)
        flush()
    }

    // MARK: Outbox limits

    private func hasRoom(_ session: Session, for cost: Int) -> Bool {
        let limits = config
        return session.outbox.hasRoom(for: cost, messages: limits.maximumQueuedMessages, bytes: limits.maximumQueuedBytes)
    }

    private func totalHasRoom(for cost: Int) -> Bool {
        core.counters.queuedBytes.load(ordering: .relaxed) + cost <= config.maximumQueuedBytesTotal
    }

    /// Queues a delivery, applying the limits: QoS 0 makes room for QoS 1/2 first, then the
    /// session's slow-consumer policy decides. Every message not queued is counted.
    private func enqueue(_ delivery: Delivery, to session: Session) {
        if session.isOnline && config.pausePublishersForSlowSubscribers { noteBacklog(session) }
        var delivery = delivery
        delivery.message = compacted(delivery.message)
        let cost = delivery.cost
        if delivery.qos != .atMostOnce {
            while session.outbox.qos0Count > 0 && !(hasRoom(session, for: cost) && totalHasRoom(for: cost)) {
                evict(from: session, qos0Only: true)
            }
        }
        if !totalHasRoom(for: cost) && delivery.qos == .atMostOnce {
            drop(.totalLimit, session)
            return
        }
        if !(hasRoom(session, for: cost) && totalHasRoom(for: cost)) {
            let reason: DropReason = hasRoom(session, for: cost) ? .totalLimit : .queueFull
            switch session.policy {
            case .dropOld:
                while !session.outbox.isEmpty && !(hasRoom(session, for: cost) && totalHasRoom(for: cost)) {
                    evict(from: session, qos0Only: false)
                }
                if !(hasRoom(session, for: cost) && totalHasRoom(for: cost)) {
                    drop(reason, session)
                    return
                }
            case .dropNew:
                drop(reason, session)
                return
            case .disconnect:
                drop(reason, session)
                if session.fullSince == nil && session.isOnline {
                    session.fullSince = eventLoop.now
                    overLimit.append(session)
                }
                return
            }
        }
        session.outbox.append(delivery)
        accountQueued(session, bytes: cost, messages: 1)
    }

    /// Removes the oldest queued message (the oldest QoS 0 one with `qos0Only`).
    private func evict(from session: Session, qos0Only: Bool) {
        guard let evicted = session.outbox.evictOldest(qos0Only: qos0Only) else { return }
        accountQueued(session, bytes: -evicted.cost, messages: -1)
        drop(.evicted, session)
    }

    func drop(_ reason: DropReason, _ session: Session, count: Int = 1) {
        session.drops[reason] += count
        local.countDrop(reason, count)
        if session.unloggedDrops == 0 { unloggedDroppers.append(session) }
        session.unloggedDrops += count
    }

    /// Empties the outbox out of the accounting (and the inflight gauge); `countAs` counts
    /// its messages as dropped.
    func discardOutbox(_ session: Session, countAs reason: DropReason?) {
        endLag(session)
        if !session.inflight.isEmpty { core.counters.inflightMessages.subtract(session.inflight.count, ordering: .relaxed) }
        guard !session.outbox.isEmpty else { return }
        if let reason { drop(reason, session, count: session.outbox.count) }
        let removed = session.outbox.removeAll()
        accountQueued(session, bytes: -removed.bytes, messages: -removed.messages)
    }

    /// Moves the broker-wide gauges with what a session's outbox gained or lost. Online bytes
    /// falling below the low-water mark wake the publishers every loop paused.
    func accountQueued(_ session: Session, bytes: Int, messages: Int) {
        core.counters.queuedBytes.add(bytes, ordering: .relaxed)
        core.counters.queuedMessages.add(messages, ordering: .relaxed)
        if session.isOnline { adjustOnlineBytes(bytes) }
    }

    private func adjustOnlineBytes(_ bytes: Int) {
        guard bytes != 0 else { return }
        let now = core.counters.queuedBytesOnline.add(bytes, ordering: .relaxed).newValue
        let low = config.inboundLowWaterBytes
        if bytes < 0 && now < low && now - bytes >= low {
            for peer in peers {
                peer.eventLoop.execute { peer.assumeIsolated { $0.checkResume() } }
            }
        }
    }

    /// Attaches or detaches a connection; the outbox moves between online and offline bytes.
    func setConnection(_ session: Session, _ connection: ConnectionRef?) {
        let wasOnline = session.isOnline
        session.connection = connection
        if connection == nil { endLag(session) }
        if wasOnline != session.isOnline {
            adjustOnlineBytes(session.isOnline ? session.outbox.bytes : -session.outbox.bytes)
        }
    }

    /// A payload that is a small slice of a large read buffer would keep the whole buffer
    /// alive in an outbox; such a message is copied once per route before it is queued.
    private func compacted(_ message: Message) -> Message {
        let payload = message.payload
        guard payload.storageCapacity > 2 * payload.readableBytes + 1024 else { return message }
        // The same message queued for another subscriber a moment ago: the same bytes of the
        // same buffer (compared by address, not byte by byte).
        if let c = compactedMessage, c.message.topic == message.topic, Self.identity(of: c.original) == Self.identity(of: payload) {
            return c.message
        }
        var copy = message
        var fresh = allocator.buffer(capacity: payload.readableBytes)
        fresh.writeImmutableBuffer(payload)
        copy.payload = fresh
        compactedMessage = (copy, payload)
        return copy
    }

    /// Where a buffer's readable bytes are, and how many: equal for two views of the same bytes.
    private static func identity(of buffer: ByteBuffer) -> (address: UInt, count: Int) {
        buffer.withUnsafeReadableBytes { (UInt(bitPattern: $0.baseAddress), $0.count) }
    }

    // MARK: Slow consumers and flow control

    /// A message is about to be queued for `session` (online): past half its limits the
    /// session lags, and the publisher being routed waits.
    private func noteBacklog(_ session: Session) {
        guard !session.stalled else { return }
        if !session.lagging {
            let limits = config
            guard limits.maximumQueuedMessages >= 4,
                  session.outbox.count * 2 >= limits.maximumQueuedMessages || session.outbox.bytes * 2 >= limits.maximumQueuedBytes
            else { return }
            setLagging(session, true)
        }
        if session !== publishing { publisherMustWait = true }
    }

    /// The session neither lags nor is stalled any more (drained, offline, gone).
    func endLag(_ session: Session) {
        session.stalled = false
        setLagging(session, false)
    }

    private func isBelowLagEnd(_ session: Session) -> Bool {
        session.outbox.count * 4 <= config.maximumQueuedMessages && session.outbox.bytes * 4 <= config.maximumQueuedBytes
    }

    private func setLagging(_ session: Session, _ lagging: Bool) {
        guard session.lagging != lagging else { return }
        session.lagging = lagging
        if lagging {
            session.drainedAtCheck = session.drained
            session.progressAt = eventLoop.now
            session.laggingSince = session.progressAt
            laggingList.append(session)
            laggingSessions.add(1, ordering: .relaxed)
            core.counters.laggingSubscribers.add(1, ordering: .relaxed)
        } else {
            laggingList.removeAll { $0 === session }
            laggingSessions.subtract(1, ordering: .relaxed)
            if core.counters.laggingSubscribers.subtract(1, ordering: .relaxed).newValue == 0 {
                // Not re-entrantly: this runs inside drain, in the middle of a route.
                for peer in peers {
                    peer.eventLoop.execute { peer.assumeIsolated { $0.checkResume() } }
                }
            }
        }
    }

    /// A lagging session that took nothing off its outbox for `subscriber_stall_timeout`, or
    /// stayed lagging for ten times that, stops holding publishers back (so no publisher is
    /// held long enough for its own keepalive to give up); its outbox then follows the
    /// slow-consumer policy.
    private func checkStalls(now: NIODeadline) {
        guard !laggingList.isEmpty else { return }
        let timeout = config.subscriberStallTimeout
        var stalled: [(Session, String)] = []
        for session in laggingList {
            if now - session.laggingSince >= timeout * 10 {
                stalled.append((session, "lagging for ten stall timeouts"))
            } else if session.drained != session.drainedAtCheck {
                session.drainedAtCheck = session.drained
                session.progressAt = now
            } else if now - session.progressAt >= timeout {
                stalled.append((session, "nothing taken off its outbox for the stall timeout"))
            }
        }
        for (session, why) in stalled {
            session.stalled = true
            setLagging(session, false)
            local.subscriberStalls += 1
            logger.warning("subscriber stalled: no longer holding publishers back", metadata: [
                "client_id": "\(session.clientID)", "reason": "\(why)",
                "queued": "\(session.outbox.count)", "queued_bytes": "\(session.outbox.bytes)",
            ])
        }
    }

    /// `disconnect` policy: a consumer whose outbox stayed full past the grace time is closed.
    private func checkSlowConsumers(now: NIODeadline) {
        guard !overLimit.isEmpty else { return }
        let grace = config.slowConsumerGrace
        var closing: [ConnectionRef] = []
        overLimit.removeAll { session in
            guard let since = session.fullSince, let connection = session.connection else {
                session.fullSince = nil
                return true
            }
            guard now - since >= grace else { return false }
            session.fullSince = nil
            logger.warning("slow consumer disconnected", metadata: [
                "client_id": "\(session.clientID)", "queued": "\(session.outbox.count)", "queued_bytes": "\(session.outbox.bytes)",
            ])
            local.slowConsumerDisconnects += 1
            closing.append(connection)
            return true
        }
        for connection in closing { connection.value.close(reason: .slowConsumer) }
    }

    /// Whether a connection that just published should stop being read.
    var inboundShouldPause: Bool {
        core.counters.queuedBytesOnline.load(ordering: .relaxed) > config.inboundHighWaterBytes
            || unroutedBytes.load(ordering: .relaxed) > config.maximumUnroutedBytes
            || unroutedMessages.load(ordering: .relaxed) > unroutedMessageBound
    }

    func paused(_ handler: ConnectionRef) {
        if let count = pauseLog.record(at: eventLoop.now) {
            logger.info("inbound flow control: pausing publishers", metadata: [
                "queued_bytes_online": "\(core.counters.queuedBytesOnline.load(ordering: .relaxed))",
                "unrouted_bytes": "\(unroutedBytes.load(ordering: .relaxed))",
                "pauses_since_last_log": "\(count)",
            ])
        }
        paused.append(handler)
        local.inboundPauses += 1
        core.counters.pausedConnections.add(1, ordering: .relaxed)
    }

    /// Resumes every paused publisher of this loop once both marks are below their low water.
    func checkResume() {
        guard !paused.isEmpty else { return }
        let config = config
        guard core.counters.queuedBytesOnline.load(ordering: .relaxed) < config.inboundLowWaterBytes,
              unroutedBytes.load(ordering: .relaxed) <= config.maximumUnroutedBytes / 2,
              unroutedMessages.load(ordering: .relaxed) <= unroutedMessageBound / 2,
              !config.pausePublishersForSlowSubscribers || core.counters.laggingSubscribers.load(ordering: .relaxed) == 0
        else { return }
        let resumed = paused
        paused = []
        core.counters.pausedConnections.subtract(resumed.count, ordering: .relaxed)
        local.inboundResumes += resumed.count
        logger.debug("inbound flow control: resuming publishers", metadata: ["count": "\(resumed.count)"])
        for handler in resumed { handler.value.resumeInbound() }
    }

    /// A paused connection that closes leaves the list.
    private func forgetPaused(_ connectionID: Int) {
        guard !paused.isEmpty else { return }
        let before = paused.count
        paused.removeAll { $0.value.connectionID == connectionID }
        if paused.count != before { core.counters.pausedConnections.subtract(before - paused.count, ordering: .relaxed) }
    }

    private func logDrops(now: NIODeadline) {
        guard !unloggedDroppers.isEmpty, now - lastDropLog >= Self.dropLogInterval else { return }
        lastDropLog = now
        for session in unloggedDroppers.prefix(20) {
            logger.warning("messages dropped", metadata: [
                "client_id": "\(session.clientID)", "dropped": "\(session.unloggedDrops)",
                "queue_full": "\(session.drops[.queueFull])", "evicted": "\(session.drops[.evicted])",
                "total_limit": "\(session.drops[.totalLimit])", "too_large": "\(session.drops[.tooLarge])",
                "expired": "\(session.drops[.expired])", "not_authorized": "\(session.drops[.notAuthorized])",
            ])
        }
        if unloggedDroppers.count > 20 {
            logger.warning("messages dropped for more clients", metadata: ["clients": "\(unloggedDroppers.count - 20)"])
        }
        for session in unloggedDroppers { session.unloggedDrops = 0 }
        unloggedDroppers.removeAll()
    }

    /// Payloads at least this large go out as their own buffer behind a separately encoded
    /// header (one writev, no copy); smaller ones are copied into one buffer with the header.
    static let separatePayloadBytes = 2048

    func writePublish(_ delivery: Delivery, to session: Session, packetIdentifier: UInt16?, dup: Bool) {
        guard let connection = session.connection else { return }
        if security.acl != nil && !mayRead(delivery.message.topic, session) {
            // Checked again as it leaves: it may have been queued, resumed or retained under
            // another ACL, or for an identity that no longer holds the session.
            drop(.notAuthorized, session)
            abandonFlight(session, packetIdentifier)
            return
        }
        let packet = SharedEncoding.publishPacket(delivery, version: session.version, packetIdentifier: packetIdentifier, dup: dup, now: eventLoop.now)
        let separate = packet.payload.readableBytes >= Self.separatePayloadBytes
        var buffer = allocator.buffer(capacity: 0)
        do {
            if separate {
                try packet.writeHeader(to: &buffer, version: session.version)
            } else {
                try MQTTPacket.write(packet, to: &buffer, version: session.version)
            }
        } catch {
            logger.error("cannot encode PUBLISH", metadata: ["error": "\(error)"])
            return
        }
        if buffer.readableBytes + (separate ? packet.payload.readableBytes : 0) > session.maximumPacketSize {
            drop(.tooLarge, session)
            abandonFlight(session, packetIdentifier)
            return
        }
        connection.value.write(buffer)
        if separate { connection.value.write(packet.payload) }
        markDirty(connection)
        local.messagesSent += 1
    }

    /// A PUBREL resent when a session resumes (MQTT-4.4.0-1).
    func writePubRel(_ packetIdentifier: UInt16, to session: Session) {
        guard let connection = session.connection else { return }
        let packet = MQTTPacket.pubrel(PubRelPacket(packetIdentifier: packetIdentifier))
        var buffer = allocator.buffer(capacity: packet.encodedLength(version: session.version))
        try? packet.write(to: &buffer, version: session.version)  // cannot fail: a packet id and no properties
        connection.value.write(buffer)
        markDirty(connection)
    }

    // MARK: Flushing

    func markDirty(_ connection: ConnectionRef) {
        if connection.value.markDirty() { dirty.append(connection) }
    }

    func flushConnections() {
        // By index: a flush can close a connection, whose handling may mark others dirty.
        var i = 0
        while i < dirty.count {
            dirty[i].value.flushIfDirty()
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
    }

    /// Hands the batch for peer `i` over. Its bytes and messages count as this loop's
    /// unrouted work until the peer routed it; crossing half the bounds wakes paused publishers.
    private func handOver(_ i: Int) {
        let batch = outgoingBatches[i]
        let bytes = outgoingBytes[i]
        outgoingBatches[i] = []
        outgoingBytes[i] = 0
        unroutedBytes.add(bytes, ordering: .relaxed)
        unroutedMessages.add(batch.count, ordering: .relaxed)
        let peer = peers[i]
        let origin = self
        let resumeBelow = config.maximumUnroutedBytes / 2
        let resumeBelowMessages = unroutedMessageBound / 2
        peer.eventLoop.execute {
            peer.assumeIsolated { $0.deliverBatch(batch) }
            let left = origin.unroutedBytes.subtract(bytes, ordering: .relaxed).newValue
            let leftMessages = origin.unroutedMessages.subtract(batch.count, ordering: .relaxed).newValue
            if (left <= resumeBelow && left + bytes > resumeBelow)
                || (leftMessages <= resumeBelowMessages && leftMessages + batch.count > resumeBelowMessages) {
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

/// Encodes a QoS 0 message once per wire format (3.1/3.1.1 share one, v5 has properties)
/// and RETAIN flag during one route, so every subscriber of the same kind receives the
/// same bytes. Four optional slots rather than a collection: nothing allocated but the bytes.
struct SharedEncoding {
    private var v3: ByteBuffer?
    private var v3Retained: ByteBuffer?
    private var v5: ByteBuffer?
    private var v5Retained: ByteBuffer?

    mutating func buffer(for delivery: Delivery, version: ProtocolVersion, allocator: ByteBufferAllocator,
                         now: @autoclosure () -> NIODeadline) -> ByteBuffer {
        switch (version == .v5, delivery.retain) {
        case (false, false): return Self.cached(&v3, delivery, version, allocator, now)
        case (false, true): return Self.cached(&v3Retained, delivery, version, allocator, now)
        case (true, false): return Self.cached(&v5, delivery, version, allocator, now)
        case (true, true): return Self.cached(&v5Retained, delivery, version, allocator, now)
        }
    }

    private static func cached(_ slot: inout ByteBuffer?, _ delivery: Delivery, _ version: ProtocolVersion, _ allocator: ByteBufferAllocator,
                               _ now: () -> NIODeadline) -> ByteBuffer {
        if let buffer = slot { return buffer }
        let packet = publishPacket(delivery, version: version, packetIdentifier: nil, dup: false, now: now())
        var buffer = allocator.buffer(capacity: packet.bodyLength(version: version) + 5)
        // Cannot fail: the topic was validated on the way in and QoS 0 needs no packet id.
        try? MQTTPacket.write(packet, to: &buffer, version: version)
        slot = buffer
        return buffer
    }

    static func publishPacket(_ delivery: Delivery, version: ProtocolVersion, packetIdentifier: UInt16?, dup: Bool,
                              now: @autoclosure () -> NIODeadline) -> PublishPacket {
        var properties = version == .v5 ? delivery.message.properties : Properties()
        if version == .v5 {
            if let expiresAt = delivery.message.expiresAt {
                // The interval received minus the time the message waited here (MQTT-3.3.2-6),
                // rounded up so a message sent at once keeps its interval.
                let left = max(0, (expiresAt - now()).nanoseconds)
                properties.messageExpiryInterval = UInt32(clamping: max(1, (left + 999_999_999) / 1_000_000_000))
            }
            for id in delivery.subscriptionIdentifiers {
                properties.elements.append(Property(.subscriptionIdentifier, .variableByteInteger(id)))
            }
        }
        return PublishPacket(
            topic: delivery.message.topic, payload: delivery.message.payload, qos: delivery.qos,
            retain: delivery.retain, dup: dup, packetIdentifier: packetIdentifier, properties: properties)
    }
}
