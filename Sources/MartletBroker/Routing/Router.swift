import DequeModule
import Logging
import MartletMQTT
import NIOCore

/// The routing engine of one event loop: the sessions that live on it, their
/// subscription trie, QoS flows, and the batched hand-off of messages to the other loops.
///
/// Its executor is the event loop itself, so a channel handler on the same loop calls it
/// synchronously with `assumeIsolated`: no suspension and no thread hop per message.
/// Other loops reach it with one `execute` per read burst, carrying a batch.
actor Router {
    nonisolated let eventLoop: any EventLoop
    nonisolated let index: Int
    nonisolated let core: BrokerCore

    nonisolated var unownedExecutor: UnownedSerialExecutor {
        eventLoop.executor.asUnownedSerialExecutor()
    }

    private var peers: [Router] = []
    private var trie = SubscriptionTrie<Session>()
    private var sessions: [String: Session] = [:]
    /// Every open connection on this loop, for the keepalive / connect-timeout sweep.
    private var connections: [Int: NIOLoopBound<MQTTConnectionHandler>] = [:]
    private var nextConnectionID = 1
    private var sweepTask: RepeatedTask?

    /// Messages waiting to be handed to each peer at the end of the read burst.
    private var outgoingBatches: [[Message]] = []
    /// Connections written to since the last flush.
    private var dirty: [NIOLoopBound<MQTTConnectionHandler>] = []

    private var routeStamp: UInt64 = 0
    private var matches: [Match] = []
    private let allocator = ByteBufferAllocator()
    private var logger: Logger

    /// Counters gathered locally and folded into the broker-wide ones once per sweep.
    private var received = 0
    private var sent = 0

    struct Match {
        var session: Session
        var maximumQoS: QoS
        var retainAsPublished: Bool
        var identifiers: [UInt32]
    }

    init(index: Int, eventLoop: any EventLoop, core: BrokerCore) {
        self.index = index
        self.eventLoop = eventLoop
        self.core = core
        var logger = core.logger
        logger[metadataKey: "loop"] = "\(index)"
        self.logger = logger
    }

    func start(peers: [Router]) {
        self.peers = peers
        self.outgoingBatches = Array(repeating: [], count: peers.count)
        let interval = core.configuration.keepaliveSweepInterval
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

    func register(_ handler: NIOLoopBound<MQTTConnectionHandler>) -> Int {
        let id = nextConnectionID
        nextConnectionID += 1
        connections[id] = handler
        return id
    }

    func unregister(_ id: Int) {
        connections.removeValue(forKey: id)
    }

    var connectionCount: Int { connections.count }

    private func sweep() {
        let now = NIODeadline.now()
        for (_, handler) in connections { handler.value.checkTimers(now: now) }
        flush()
        let r = received
        let s = sent
        received = 0
        sent = 0
        if r > 0 || s > 0 {
            core.counters.update {
                $0.messagesReceived += r
                $0.messagesSent += s
            }
        }
    }

    // MARK: CONNECT and session ownership

    struct ConnectRequest: Sendable {
        var clientID: String
        var version: ProtocolVersion
        var cleanStart: Bool
        var expiryInterval: UInt32
        var receiveMaximum: Int
        var maximumPacketSize: Int
    }

    /// Attaches the connection to the client id's session, taking it over from wherever it lives.
    func connect(_ request: ConnectRequest, handler: NIOLoopBound<MQTTConnectionHandler>) {
        let previous = core.registry.claim(request.clientID, router: index)
        if previous == nil || previous == index {
            let state = detachSession(request.clientID, discard: request.cleanStart)
            finishConnect(request, handler: handler, state: state)
            return
        }
        let owner = peers[previous!]
        owner.eventLoop.execute {
            let state = owner.assumeIsolated { $0.detachSession(request.clientID, discard: request.cleanStart) }
            self.eventLoop.execute {
                self.assumeIsolated { $0.finishConnect(request, handler: handler, state: state) }
            }
        }
    }

    /// Takes a session off this loop: its connection is closed as taken over (its will is
    /// published) and its subscriptions leave this trie. Returns its state unless discarded.
    func detachSession(_ clientID: String, discard: Bool) -> SessionState?? {
        guard let session = sessions.removeValue(forKey: clientID) else { return .none }
        session.expiryTask?.cancel()
        if let connection = session.connection {
            session.connection = nil
            if let will = connection.value.takeOver() {
                publish(will)
            }
        }
        for filter in session.subscriptions.keys { trie.remove(filter: filter, subscriber: session) }
        flush()
        return .some(discard ? nil : session.state)
    }

    private func finishConnect(_ request: ConnectRequest, handler: NIOLoopBound<MQTTConnectionHandler>, state: SessionState??) {
        let session = Session(
            clientID: request.clientID, version: request.version, expiryInterval: request.expiryInterval,
            inflightWindow: max(1, min(core.configuration.maximumInflight, request.receiveMaximum)))
        session.maximumPacketSize = request.maximumPacketSize
        var sessionPresent = false
        if !request.cleanStart, case .some(.some(let restored)) = state {
            session.restore(restored)
            sessionPresent = true
            for (filter, sub) in session.subscriptions {
                trie.insert(filter: filter, subscriber: session, options: sub.options, identifier: sub.identifier)
            }
        }
        guard handler.value.isAwaitingSession, core.registry.owner(of: request.clientID) == index else {
            // The client went away (or another connection claimed the id) while the session moved.
            if session.isPersistent && core.registry.owner(of: request.clientID) == index {
                sessions[request.clientID] = session
                scheduleExpiry(session)
            } else if core.registry.owner(of: request.clientID) == index {
                core.registry.release(request.clientID, router: index)
            }
            handler.value.close(reason: .sessionTakenOver)
            flush()
            return
        }
        sessions[request.clientID] = session
        session.connection = handler
        session.connectionID = handler.value.connectionID
        handler.value.sessionAttached(sessionPresent: sessionPresent)
        markDirty(handler)
        // Unacknowledged messages are resent first, with DUP, in their original order (MQTT-4.4.0-1).
        for flight in session.inflight {
            switch flight.stage {
            case .awaitingPubAck, .awaitingPubRec:
                writePublish(flight.delivery, to: session, packetIdentifier: flight.packetIdentifier, dup: true)
            case .awaitingPubComp:
                write(.pubrel(PubRelPacket(packetIdentifier: flight.packetIdentifier)), to: session)
            }
        }
        drainPending(session)
        handler.value.replayBufferedPackets()
        flush()
    }

    /// The connection of `clientID` is gone. `will` is published unless the client sent DISCONNECT.
    func connectionLost(clientID: String, connectionID: Int, will: Message?) {
        if let will { publish(will) }
        guard let session = sessions[clientID], session.connectionID == connectionID, session.isOnline else {
            flush()
            return
        }
        session.connection = nil
        if session.isPersistent {
            scheduleExpiry(session)
        } else {
            endSession(session)
        }
        flush()
    }

    /// v5 DISCONNECT may change the session expiry interval (MQTT 5 3.14.2.2.2).
    func updateExpiry(clientID: String, connectionID: Int, expiryInterval: UInt32) {
        guard let session = sessions[clientID], session.connectionID == connectionID else { return }
        session.expiryInterval = expiryInterval
    }

    private func scheduleExpiry(_ session: Session) {
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

    private func endSession(_ session: Session) {
        for filter in session.subscriptions.keys { trie.remove(filter: filter, subscriber: session) }
        sessions.removeValue(forKey: session.clientID)
        core.registry.release(session.clientID, router: index)
    }

    // MARK: Packets from a connected client

    func received(_ packet: MQTTPacket, clientID: String, connectionID: Int) {
        guard let session = sessions[clientID], session.connectionID == connectionID, session.isOnline else { return }
        switch packet {
        case .publish(let publish):
            receivedPublish(publish, from: session)
        case .puback(let ack):
            if let i = session.inflight.firstIndex(where: { $0.packetIdentifier == ack.packetIdentifier && $0.stage == .awaitingPubAck }) {
                session.inflight.remove(at: i)
                drainPending(session)
            }
        case .pubrec(let rec):
            if let i = session.inflight.firstIndex(where: { $0.packetIdentifier == rec.packetIdentifier && $0.stage == .awaitingPubRec }) {
                if rec.reasonCode.isFailure {
                    // A v5 failure PUBREC ends the flow (MQTT 5 4.3.3).
                    session.inflight.remove(at: i)
                    drainPending(session)
                } else {
                    session.inflight[i].stage = .awaitingPubComp
                    write(.pubrel(PubRelPacket(packetIdentifier: rec.packetIdentifier)), to: session)
                }
            } else if session.inflight.contains(where: { $0.packetIdentifier == rec.packetIdentifier && $0.stage == .awaitingPubComp }) {
                write(.pubrel(PubRelPacket(packetIdentifier: rec.packetIdentifier)), to: session)
            } else {
                write(.pubrel(PubRelPacket(packetIdentifier: rec.packetIdentifier, reasonCode: .packetIdentifierNotFound)), to: session)
            }
        case .pubcomp(let comp):
            if let i = session.inflight.firstIndex(where: { $0.packetIdentifier == comp.packetIdentifier && $0.stage == .awaitingPubComp }) {
                session.inflight.remove(at: i)
                drainPending(session)
            }
        case .pubrel(let rel):
            let known = session.inboundQoS2.remove(rel.packetIdentifier) != nil
            write(.pubcomp(PubCompPacket(packetIdentifier: rel.packetIdentifier, reasonCode: known ? .success : .packetIdentifierNotFound)), to: session)
        case .subscribe(let subscribe):
            receivedSubscribe(subscribe, from: session)
        case .unsubscribe(let unsubscribe):
            var codes: [ReasonCode] = []
            for filter in unsubscribe.topicFilters {
                let existed = session.subscriptions.removeValue(forKey: filter) != nil
                if existed { trie.remove(filter: filter, subscriber: session) }
                codes.append(existed ? .success : .noSubscriptionExisted)
            }
            write(.unsuback(UnsubAckPacket(packetIdentifier: unsubscribe.packetIdentifier, reasonCodes: session.version == .v5 ? codes : [])), to: session)
        default:
            break
        }
    }

    private func receivedPublish(_ publish: PublishPacket, from session: Session) {
        received += 1
        var properties = publish.properties
        if !properties.isEmpty { properties.removeAll([.topicAlias, .subscriptionIdentifier]) }
        let message = Message(
            topic: publish.topic, payload: publish.payload, qos: publish.qos, retain: publish.retain,
            properties: properties, publisherID: session.clientID)
        switch publish.qos {
        case .atMostOnce:
            self.publish(message)
        case .atLeastOnce:
            self.publish(message)
            write(.puback(PubAckPacket(packetIdentifier: publish.packetIdentifier!)), to: session)
        case .exactlyOnce:
            let id = publish.packetIdentifier!
            // A resent PUBLISH before PUBREL is acknowledged again but not delivered twice (MQTT-4.3.3-2).
            if session.inboundQoS2.insert(id).inserted {
                self.publish(message)
            }
            write(.pubrec(PubRecPacket(packetIdentifier: id)), to: session)
        }
    }

    private func receivedSubscribe(_ subscribe: SubscribePacket, from session: Session) {
        let v5 = session.version == .v5
        let identifier = subscribe.properties.subscriptionIdentifiers.first
        var codes: [ReasonCode] = []
        var retained: [(RetainedMessage, QoS)] = []
        for sub in subscribe.subscriptions {
            do {
                try Topic.validateFilter(sub.topicFilter)
            } catch {
                codes.append(v5 ? .topicFilterInvalid : .subscribeFailure)
                continue
            }
            if SharedSubscription(sub.topicFilter) != nil {
                codes.append(v5 ? .sharedSubscriptionsNotSupported : .subscribeFailure)
                continue
            }
            let existed = trie.insert(filter: sub.topicFilter, subscriber: session, options: sub.options, identifier: identifier)
            session.subscriptions[sub.topicFilter] = StoredSubscription(options: sub.options, identifier: identifier)
            codes.append(ReasonCode(sub.options.qos.rawValue))
            switch sub.options.retainHandling {
            case .sendOnSubscribe:
                retained += core.retained.matching(sub.topicFilter).map { ($0, sub.options.qos) }
            case .sendIfNew where !existed:
                retained += core.retained.matching(sub.topicFilter).map { ($0, sub.options.qos) }
            default:
                break
            }
        }
        write(.suback(SubAckPacket(packetIdentifier: subscribe.packetIdentifier, reasonCodes: codes)), to: session)
        // Retained messages follow the SUBACK, flagged RETAIN=1 (MQTT-3.3.1-8).
        for (message, grantedQoS) in retained {
            let m = Message(topic: message.topic, payload: message.payload, qos: message.qos, retain: true, properties: message.properties)
            deliver(Delivery(message: m, qos: min(message.qos, grantedQoS), retain: true, subscriptionIdentifiers: identifier.map { [$0] } ?? []), to: session)
        }
    }

    // MARK: Routing

    /// Routes a message published on this loop: local subscribers now, other loops at flush.
    func publish(_ message: Message) {
        if message.retain {
            core.retained.store(RetainedMessage(topic: message.topic, payload: message.payload, qos: message.qos, properties: message.properties))
        }
        deliverLocally(message)
        for i in peers.indices where i != index {
            outgoingBatches[i].append(message)
        }
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
        trie.forEachMatch(topic: message.topic) { entry in
            let session = entry.subscriber
            if entry.options.noLocal && session.clientID == message.publisherID { return }
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
        var shared = SharedEncoding()
        for match in matches {
            let qos = min(message.qos, match.maximumQoS)
            // RETAIN is cleared on normal forwarding unless v5 retain-as-published (MQTT-3.3.1-9).
            let retain = match.retainAsPublished && message.retain
            let delivery = Delivery(message: message, qos: qos, retain: retain, subscriptionIdentifiers: match.identifiers)
            if qos == .atMostOnce && match.identifiers.isEmpty {
                guard let connection = match.session.connection else { continue }
                let bytes = shared.buffer(for: delivery, version: match.session.version, allocator: allocator)
                if bytes.readableBytes > match.session.maximumPacketSize {
                    match.session.droppedTooLarge += 1
                    continue
                }
                connection.value.write(bytes)
                markDirty(connection)
                sent += 1
            } else {
                deliver(delivery, to: match.session)
            }
        }
    }

    /// QoS 0 goes out now if online; QoS 1/2 enter the inflight window or wait in order.
    private func deliver(_ delivery: Delivery, to session: Session) {
        if delivery.qos == .atMostOnce {
            guard session.isOnline else { return }  // QoS 0 is not queued for offline sessions
            writePublish(delivery, to: session, packetIdentifier: nil, dup: false)
            return
        }
        if session.isOnline && session.pending.isEmpty && session.inflight.count < session.inflightWindow {
            sendInflight(delivery, to: session)
        } else if session.pending.count < core.configuration.maximumQueuedMessages {
            session.pending.append(delivery)
        } else {
            session.droppedQueueFull += 1
            core.counters.update { $0.droppedQueueFull += 1 }
            if session.droppedQueueFull == 1 || session.droppedQueueFull % 1000 == 0 {
                logger.warning("queue full, message dropped", metadata: [
                    "client_id": "\(session.clientID)", "dropped": "\(session.droppedQueueFull)",
                ])
            }
        }
    }

    private func sendInflight(_ delivery: Delivery, to session: Session) {
        let id = session.allocatePacketIdentifier()
        session.inflight.append(OutgoingFlight(
            packetIdentifier: id, delivery: delivery,
            stage: delivery.qos == .atLeastOnce ? .awaitingPubAck : .awaitingPubRec))
        writePublish(delivery, to: session, packetIdentifier: id, dup: false)
    }

    private func drainPending(_ session: Session) {
        while session.isOnline && session.inflight.count < session.inflightWindow, let next = session.pending.popFirst() {
            if next.qos == .atMostOnce {
                writePublish(next, to: session, packetIdentifier: nil, dup: false)
            } else {
                sendInflight(next, to: session)
            }
        }
    }

    private func writePublish(_ delivery: Delivery, to session: Session, packetIdentifier: UInt16?, dup: Bool) {
        guard let connection = session.connection else { return }
        let packet = SharedEncoding.publishPacket(delivery, version: session.version, packetIdentifier: packetIdentifier, dup: dup)
        var buffer = allocator.buffer(capacity: 0)
        do {
            try MQTTPacket.write(packet, to: &buffer, version: session.version)
        } catch {
            logger.error("cannot encode PUBLISH", metadata: ["error": "\(error)"])
            return
        }
        if buffer.readableBytes > session.maximumPacketSize {
            session.droppedTooLarge += 1
            if let id = packetIdentifier, let i = session.inflight.firstIndex(where: { $0.packetIdentifier == id }) {
                session.inflight.remove(at: i)
            }
            return
        }
        connection.value.write(buffer)
        markDirty(connection)
        sent += 1
    }

    private func write(_ packet: MQTTPacket, to session: Session) {
        guard let connection = session.connection else { return }
        connection.value.send(packet)
        markDirty(connection)
    }

    // MARK: Flushing

    private func markDirty(_ connection: NIOLoopBound<MQTTConnectionHandler>) {
        if connection.value.markDirty() { dirty.append(connection) }
    }

    private func flushConnections() {
        for connection in dirty { connection.value.flushIfDirty() }
        dirty.removeAll(keepingCapacity: true)
    }

    /// End of a read burst: flush every connection written to, then hand each other loop its batch.
    func flush() {
        flushConnections()
        for i in outgoingBatches.indices where !outgoingBatches[i].isEmpty {
            let batch = outgoingBatches[i]
            outgoingBatches[i] = []
            let peer = peers[i]
            peer.eventLoop.execute {
                peer.assumeIsolated { $0.deliverBatch(batch) }
            }
        }
    }

    // MARK: Introspection for tests and $SYS

    var sessionCount: Int { sessions.count }
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

    mutating func buffer(for delivery: Delivery, version: ProtocolVersion, allocator: ByteBufferAllocator) -> ByteBuffer {
        switch (version == .v5, delivery.retain) {
        case (false, false): return Self.cached(&v3, delivery, version, allocator)
        case (false, true): return Self.cached(&v3Retained, delivery, version, allocator)
        case (true, false): return Self.cached(&v5, delivery, version, allocator)
        case (true, true): return Self.cached(&v5Retained, delivery, version, allocator)
        }
    }

    private static func cached(_ slot: inout ByteBuffer?, _ delivery: Delivery, _ version: ProtocolVersion, _ allocator: ByteBufferAllocator) -> ByteBuffer {
        if let buffer = slot { return buffer }
        let packet = publishPacket(delivery, version: version, packetIdentifier: nil, dup: false)
        var buffer = allocator.buffer(capacity: packet.bodyLength(version: version) + 5)
        // Cannot fail: the topic was validated on the way in and QoS 0 needs no packet id.
        try? MQTTPacket.write(packet, to: &buffer, version: version)
        slot = buffer
        return buffer
    }

    static func publishPacket(_ delivery: Delivery, version: ProtocolVersion, packetIdentifier: UInt16?, dup: Bool) -> PublishPacket {
        var properties = version == .v5 ? delivery.message.properties : Properties()
        if version == .v5 {
            for id in delivery.subscriptionIdentifiers {
                properties.elements.append(Property(.subscriptionIdentifier, .variableByteInteger(id)))
            }
        }
        return PublishPacket(
            topic: delivery.message.topic, payload: delivery.message.payload, qos: delivery.qos,
            retain: delivery.retain, dup: dup, packetIdentifier: packetIdentifier, properties: properties)
    }
}
