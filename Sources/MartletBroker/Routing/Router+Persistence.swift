import DequeModule
import MartletMQTT
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// A router's side of the session store: the records its sessions' changes make, handed to
/// the writer at each flush, and (`sync: durable`) the acknowledgements held until the
/// records they depend on are committed.
struct RouterStore {
    let writer: StoreWriter
    /// The first message id this run gives out (above every stored one); a message's id is
    /// derived from its origin router and routing number, so every router names it alike.
    let messageIDBase: Int64
    var pending: [StoreRecord] = []
    /// The message whose `.message` record is in `pending` already.
    var lastMessage: Int64 = 0
    /// Routing the current PUBLISH made a record its acknowledgement must wait for (or handed
    /// it to a loop that has stored sessions).
    var touched = false
    /// Peers handed a QoS 1/2 message this burst while they hold stored sessions: the held
    /// acknowledgements wait for their records too.
    var waitForPeer: [Bool]
    /// Per origin router: a message it routed got a row here since its last barrier (only
    /// then does its barrier wait for the writer; otherwise it is answered at once).
    var storedFor: [Bool]
    /// Acknowledgements held, in the order the PUBLISHes came.
    var held: Deque<HeldAck> = []
    /// Groups of held acknowledgements (one per flush that held any), oldest first, with the
    /// commits each still waits for.
    var groups: Deque<(id: UInt64, waiting: Int, failed: Bool)> = []
    var nextGroup: UInt64 = 1
    var groupHasAcks = false

    var durable: Bool { writer.sync == .durable }

    /// Acknowledgements of stored messages wait for their commit: always with `durable`; with
    /// `periodic` while the writer has more than `max_pending_records` changes to commit, so a
    /// disk slower than the traffic holds publishers back instead of growing memory.
    var holdsAcknowledgements: Bool {
        durable || writer.recordsPending.load(ordering: .relaxed) > writer.maximumPendingRecords
    }

    struct HeldAck {
        var session: Session
        var connectionID: Int
        var packet: MQTTPacket
        var group: UInt64
    }
}

extension Router {
    /// Wall-clock milliseconds since 1970: what stored deadlines are in.
    static func wallClock() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// A loop deadline as wall-clock milliseconds.
    func wall(_ deadline: NIODeadline?) -> Int64? {
        guard let deadline else { return nil }
        return Self.wallClock() + (deadline - eventLoop.now).nanoseconds / 1_000_000
    }

    /// A stored wall-clock time as a deadline on this loop.
    func deadline(fromWall wall: Int64?) -> NIODeadline? {
        guard let wall else { return nil }
        return eventLoop.now + .milliseconds(wall - Self.wallClock())
    }

    func stored(_ message: Message, retain: Bool? = nil) -> StoredMessage {
        // A record waits for the writer (up to a commit interval): it must not keep a whole
        // read buffer alive for a small payload sliced from it.
        var payload = message.payload
        if payload.storageCapacity > 2 * payload.readableBytes + 1024 {
            var copy = allocator.buffer(capacity: payload.readableBytes)
            copy.writeImmutableBuffer(payload)
            payload = copy
        }
        return StoredMessage(topic: message.topic, payload: payload, qos: message.qos, retain: retain ?? message.retain,
                             properties: message.properties, expiresAt: wall(message.expiresAt))
    }

    func record(_ record: StoreRecord) {
        store!.pending.append(record)
    }

    // MARK: Sessions

    /// A session that outlives its connection was attached (new, resumed or moved here): it
    /// is stored, with the will of its connection.
    func storeSessionAttached(_ session: Session, _ request: ConnectRequest) {
        guard store != nil else { return }
        guard session.isPersistent else { return }
        if !session.stored {
            session.stored = true
            persistentSessions.add(1, ordering: .relaxed)
        }
        record(.session(StoredSessionHeader(
            clientID: session.clientID, version: session.version, expiryInterval: session.expiryInterval, username: session.username,
            will: request.will.map { stored($0) }, willDelay: request.willDelay)))
    }

    /// The connection went away: the session waits, offline, until it expires; a will with a
    /// delay waits with it.
    func storeSessionOffline(_ session: Session, will: Message?, willIn: UInt32?) {
        guard store != nil, session.stored else { return }
        let now = Self.wallClock()
        let expiresAt = session.expiryInterval == Session.neverExpires ? nil : now + Int64(session.expiryInterval) * 1000
        record(.offline(clientID: session.clientID, expiryInterval: session.expiryInterval, expiresAt: expiresAt,
                        will: will.map { stored($0) }, willAt: willIn.map { now + Int64($0) * 1000 }))
    }

    func storeSessionEnded(_ session: Session) {
        guard store != nil, session.stored else { return }
        session.stored = false
        persistentSessions.subtract(1, ordering: .relaxed)
        record(.sessionEnded(clientID: session.clientID))
    }

    /// The session left this router for another loop's (its rows stay; the new owner counts it).
    func storeSessionLeft(_ session: Session) {
        guard store != nil, session.stored else { return }
        session.stored = false
        persistentSessions.subtract(1, ordering: .relaxed)
    }

    // MARK: Deliveries

    /// The stored message id of `delivery`'s message, and its `.message` record if this
    /// flush has not written it yet.
    @discardableResult
    func storeMessageID(_ delivery: inout Delivery) -> Int64 {
        if delivery.storeMessage == 0 {
            let m = delivery.message
            if m.origin >= 0 {
                delivery.storeMessage = store!.messageIDBase + Int64(m.sequence) * Int64(peers.count) + Int64(m.origin)
            } else {
                // Not routed (a retained message sent to a new subscription): an id of its own,
                // from the other end of the range.
                delivery.storeMessage = -store!.writer.nextMessageID.wrappingAdd(1, ordering: .relaxed).oldValue
            }
        }
        let id = delivery.storeMessage
        if store!.lastMessage != id {
            store!.lastMessage = id
            // Stored with the publisher's RETAIN flag; each delivery has its own.
            record(.message(id: id, stored(delivery.message)))
        }
        return id
    }

    /// A delivery about to get a row: its message's id (and record) and its own number.
    func storeIdentity(_ delivery: inout Delivery) {
        _ = storeMessageID(&delivery)
        delivery.storeSeq = store!.writer.nextSequence.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    /// A QoS 1/2 delivery to a stored session entered its outbox (or went out at once under
    /// `packetIdentifier`): its row. The acknowledgement of the PUBLISH it came from waits for it.
    func storeQueued(_ delivery: Delivery, _ session: Session, packetIdentifier: UInt16?) {
        let stage: StoredStage = packetIdentifier == nil ? .queued : delivery.qos == .atLeastOnce ? .awaitingPubAck : .awaitingPubRec
        let origin = delivery.message.origin
        if origin >= 0 && origin < store!.storedFor.count { store!.storedFor[origin] = true }
        record(.queued(StoredDelivery(
            seq: delivery.storeSeq, clientID: session.clientID, messageID: delivery.storeMessage, qos: delivery.qos,
            retain: delivery.retain, subscriptionIdentifiers: delivery.subscriptionIdentifiers, group: delivery.group,
            packetIdentifier: packetIdentifier, stage: stage)))
        store!.touched = true
    }

    func storeSubscribed(_ session: Session, _ filter: String, _ options: SubscriptionOptions, _ identifier: UInt32?) {
        guard session.stored else { return }
        record(.subscribed(clientID: session.clientID, filter: filter, options: options.byte, identifier: identifier))
    }

    /// Whether a delivery to `session` gets a row: QoS 1/2 to a stored session.
    func storesDelivery(_ delivery: Delivery, _ session: Session) -> Bool {
        store != nil && session.stored && delivery.qos != .atMostOnce
    }

    /// A stored delivery went out (from the outbox, or resent) under `packetIdentifier`.
    func storeSent(_ delivery: Delivery, packetIdentifier: UInt16) {
        record(.stage(seq: delivery.storeSeq, packetIdentifier: packetIdentifier,
                      delivery.qos == .atLeastOnce ? .awaitingPubAck : .awaitingPubRec))
    }

    /// A delivery is done with (acknowledged, dropped, expired, given to another member).
    func storeRemoved(_ delivery: Delivery, _ session: Session) {
        guard store != nil, session.stored, delivery.storeSeq != 0 else { return }
        record(.removed(seq: delivery.storeSeq, messageID: delivery.storeMessage))
    }

    // MARK: Flushing and held acknowledgements

    /// Hands this flush's records to the writer. Acknowledgements held in this flush wait for
    /// them, and for the records of every peer that got one of their messages.
    func flushStore() {
        guard store != nil else { return }
        let records = store!.pending
        store!.pending.removeAll(keepingCapacity: true)
        store!.lastMessage = 0
        guard store!.groupHasAcks else {
            for i in store!.waitForPeer.indices { store!.waitForPeer[i] = false }
            if !records.isEmpty { store!.writer.submit(records) }
            return
        }
        let group = store!.nextGroup
        store!.nextGroup += 1
        store!.groupHasAcks = false
        // The held acknowledgements wait for this loop's records (if it made any) and for
        // each peer that got one of their messages.
        var waiting = records.isEmpty ? 0 : 1
        let origin = self
        for i in store!.waitForPeer.indices where store!.waitForPeer[i] {
            store!.waitForPeer[i] = false
            waiting += 1
            let peer = peers[i]
            // After the batches this loop handed it (the same loop's tasks run in order).
            peer.eventLoop.execute { peer.assumeIsolated { $0.storeBarrier(for: origin, group: group) } }
        }
        store!.groups.append((group, waiting, false))
        if records.isEmpty {
            releaseCompletedGroups()
            flushConnections()
        } else {
            store!.writer.submit(records, barrier: StoreWriter.Barrier(router: self, group: group))
        }
    }

    /// A peer's held acknowledgements wait for what this loop stored of their messages:
    /// everything stored so far goes to the writer with the peer's barrier behind it.
    func storeBarrier(for origin: Router, group: UInt64) {
        guard store != nil else { return }
        guard store!.storedFor[origin.index] else {
            // Nothing of the origin's was stored here since its last barrier: nothing to wait for
            // (and a failing store does not refuse messages it was not asked to keep).
            origin.eventLoop.execute { origin.assumeIsolated { $0.storeCommitted(group: group, ok: true) } }
            return
        }
        store!.storedFor[origin.index] = false
        let records = store!.pending
        store!.pending.removeAll(keepingCapacity: true)
        store!.lastMessage = 0
        store!.writer.submit(records, barrier: StoreWriter.Barrier(router: origin, group: group))
    }

    /// The acknowledgement of a PUBLISH just routed: held while the store has yet to commit
    /// what it depends on (or an earlier one of the session is held); nil then.
    func holdIfNeeded(_ reply: MQTTPacket?, _ session: Session) -> MQTTPacket? {
        guard let reply, store != nil, store!.touched || session.deferredAcks > 0, store!.holdsAcknowledgements else { return reply }
        store!.held.append(RouterStore.HeldAck(
            session: session, connectionID: session.connectionID, packet: reply, group: store!.nextGroup))
        store!.groupHasAcks = true
        session.deferredAcks += 1
        return nil
    }

    /// The writer committed (or failed to commit) what one of this router's barriers waited for.
    func storeCommitted(group: UInt64, ok: Bool) {
        guard store != nil, let i = store!.groups.firstIndex(where: { $0.id == group }) else { return }
        store!.groups[i].waiting -= 1
        if !ok { store!.groups[i].failed = true }
        releaseCompletedGroups()
        flush()
    }

    /// Sends the held acknowledgements of the oldest groups whose commits are all in.
    private func releaseCompletedGroups() {
        while let first = store!.groups.first, first.waiting == 0 {
            store!.groups.removeFirst()
            while let ack = store!.held.first, ack.group == first.id {
                store!.held.removeFirst()
                release(ack, failed: first.failed)
            }
        }
    }

    /// Sends a held acknowledgement, unless its connection is gone (the client resends the
    /// PUBLISH). When the commit failed, v5 is told 0x97 Quota exceeded and 3.1.1 gets none.
    private func release(_ ack: RouterStore.HeldAck, failed: Bool) {
        ack.session.deferredAcks -= 1
        if failed { local.storeRefused += 1 }
        sendHeldAcknowledgement(ack.packet, to: ack.session, connectionID: ack.connectionID, refusedWith: failed ? .quotaExceeded : nil)
    }

    /// Writes an acknowledgement that waited (for the store or the cluster) to its connection,
    /// unless the connection is gone (the client resends the PUBLISH). `refusedWith`: the
    /// message was not kept; v5 is told this code, 3.1.1 gets no acknowledgement, and a
    /// refused QoS 2 flow ends (its packet id is free again).
    func sendHeldAcknowledgement(_ packet: MQTTPacket, to session: Session, connectionID: Int, refusedWith code: ReasonCode?) {
        guard let connection = session.connection, session.connectionID == connectionID else { return }
        var packet = packet
        if let code {
            if case .pubrec(let rec) = packet, session.inboundQoS2.released(rec.packetIdentifier), session.stored {
                record(.inboundQoS2(clientID: session.clientID, packetIdentifier: rec.packetIdentifier, added: false))
            }
            guard session.version == .v5 else { return }
            switch packet {
            case .puback(let a): packet = .puback(PubAckPacket(packetIdentifier: a.packetIdentifier, reasonCode: code))
            case .pubrec(let r): packet = .pubrec(PubRecPacket(packetIdentifier: r.packetIdentifier, reasonCode: code))
            default: break
            }
        }
        var buffer = allocator.buffer(capacity: packet.encodedLength(version: session.version))
        guard (try? packet.write(to: &buffer, version: session.version)) != nil else { return }
        connection.value.write(buffer)
        markDirty(connection)
    }

    // MARK: Recovery

    /// Installs sessions loaded from the store: offline, with their subscriptions, queues,
    /// in-flight messages and QoS 2 ids; expiry and delayed wills running from where they were.
    /// A session that was online when the broker stopped lost its connection then: its will
    /// follows the will rules and its expiry starts now.
    func recover(_ loaded: [StoredState.Session]) {
        let now = Self.wallClock()
        for s in loaded {
            let header = s.header
            let session = Session(clientID: header.clientID, version: header.version, expiryInterval: header.expiryInterval,
                                  inflightWindow: config.maximumInflight)
            session.username = header.username
            session.stored = true
            persistentSessions.add(1, ordering: .relaxed)
            for sub in s.subscriptions {
                session.subscriptions[sub.filter] = StoredSubscription(options: sub.options, identifier: sub.identifier)
                if let share = SharedSubscription(sub.filter) {
                    session.sharedGroups += 1
                    core.shared.subscribe(sub.filter, filter: String(share.filter), SharedSubscriptions.Member(
                        clientID: session.clientID, router: index, options: sub.options, identifier: sub.identifier,
                        online: false, busy: false, persistent: true))
                } else {
                    trie.insert(filter: sub.filter, subscriber: session, options: sub.options, identifier: sub.identifier)
                }
            }
            for (d, m) in s.deliveries {
                let message = Message(topic: m.topic, payload: m.payload, qos: m.qos, retain: m.retain, properties: m.properties,
                                      expiresAt: deadline(fromWall: m.expiresAt))
                var delivery = Delivery(message: message, qos: d.qos, retain: d.retain, subscriptionIdentifiers: d.subscriptionIdentifiers,
                                        group: d.group)
                delivery.storeSeq = d.seq
                delivery.storeMessage = d.messageID
                switch (d.stage, d.packetIdentifier) {
                case (.awaitingPubAck, let id?), (.awaitingPubRec, let id?):
                    session.inflight.restore(OutgoingFlight(
                        packetIdentifier: id, delivery: delivery, stage: d.qos == .atLeastOnce ? .awaitingPubAck : .awaitingPubRec))
                case (.awaitingPubComp, let id?):
                    session.inflight.restore(OutgoingFlight(packetIdentifier: id, delivery: delivery, stage: .awaitingPubComp))
                default:
                    session.outbox.append(delivery)
                }
            }
            session.inboundQoS2 = InboundQoS2(s.inboundQoS2)
            core.counters.inflightMessages.add(session.inflight.count, ordering: .relaxed)
            accountQueued(session, bytes: session.outbox.bytes, messages: session.outbox.count)
            sessions[session.clientID] = session
            core.registry.adopt(session.clientID, router: index)
            if let offline = s.offline {
                if let expiresAt = offline.expiresAt {
                    scheduleExpiry(session, after: .milliseconds(max(0, expiresAt - now)))
                }
                if let will = offline.will, let willAt = offline.willAt {
                    scheduleWill(message(will), after: .milliseconds(max(0, willAt - now)), for: session)
                }
            } else {
                // Its connection ended with the broker: as if it dropped now.
                let will = header.will.map { message($0) }
                let delay = min(header.willDelay, session.expiryInterval)
                if let will { scheduleWill(will, after: .seconds(Int64(delay)), for: session) }
                scheduleExpiry(session)
                storeSessionOffline(session, will: will, willIn: will == nil ? nil : delay)
            }
        }
        flush()
    }

    private func message(_ m: StoredMessage) -> Message {
        Message(topic: m.topic, payload: m.payload, qos: m.qos, retain: m.retain, properties: m.properties,
                expiresAt: deadline(fromWall: m.expiresAt))
    }
}
