import MartletMQTT
import NIOCore

/// What a session's outbox may hold (`max_queued_messages`, `max_queued_bytes`,
/// `max_queued_bytes_total`), what the slow-consumer policy does past that, and the broker's
/// gauges of queued bytes. Every message not queued is counted as a drop with its reason.
extension Router {
    func hasRoom(_ session: Session, for cost: Int) -> Bool {
        if let bounds = session.queueBounds { return session.outbox.hasRoom(for: cost, messages: bounds.messages, bytes: bounds.bytes) }
        let limits = config
        return session.outbox.hasRoom(for: cost, messages: limits.maximumQueuedMessages, bytes: limits.maximumQueuedBytes)
    }

    func totalHasRoom(for cost: Int) -> Bool {
        core.counters.queuedBytes.load(ordering: .relaxed) + cost <= config.maximumQueuedBytesTotal
    }

    /// Queues a delivery, applying the limits: QoS 0 makes room for QoS 1/2 first, then the
    /// session's slow-consumer policy decides. Every message not queued is counted.
    func enqueue(_ delivery: Delivery, to session: Session) {
        // A bridge's queue waits for a remote broker that may be down for hours: publishers
        // are not held back for it; its own bounds and queue_policy apply.
        if session.isOnline && config.pausePublishersForSlowSubscribers && !session.isBridge { noteBacklog(session) }
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
        if storesDelivery(delivery, session) && delivery.storeSeq == 0 {
            storeIdentity(&delivery)
            storeQueued(delivery, session, packetIdentifier: nil)
        }
        session.outbox.append(delivery)
        accountQueued(session, bytes: cost, messages: 1)
    }

    /// Removes the oldest queued message (the oldest QoS 0 one with `qos0Only`).
    func evict(from session: Session, qos0Only: Bool) {
        guard let evicted = session.outbox.evictOldest(qos0Only: qos0Only) else { return }
        accountQueued(session, bytes: -evicted.cost, messages: -1)
        drop(.evicted, session)
        storeRemoved(evicted, session)
    }

    func drop(_ reason: DropReason, _ session: Session, count: Int = 1) {
        session.drops[reason] += count
        local.countDrop(reason, count)
        dropLog.noteDrop(session, count: count)
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

    func adjustOnlineBytes(_ bytes: Int) {
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
        if connection == nil { session.outAliases = nil }
        if connection == nil { endLag(session) }
        if wasOnline != session.isOnline {
            adjustOnlineBytes(session.isOnline ? session.outbox.bytes : -session.outbox.bytes)
            if session.sharedGroups > 0 { core.shared.update(session.clientID, online: session.isOnline) }
        }
    }

    /// A payload that is a small slice of a large read buffer would keep the whole buffer
    /// alive in an outbox; such a message is copied once per route before it is queued.
    func compacted(_ message: Message) -> Message {
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
    static func identity(of buffer: ByteBuffer) -> (address: UInt, count: Int) {
        buffer.withUnsafeReadableBytes { (UInt(bitPattern: $0.baseAddress), $0.count) }
    }

    /// `disconnect` policy: a consumer whose outbox stayed full past the grace time is closed.
    func checkSlowConsumers(now: NIODeadline) {
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

    func logDrops(now: NIODeadline) {
        guard let (named, more) = dropLog.report(at: now) else { return }
        for (session, dropped) in named {
            logger.warning("messages dropped", metadata: [
                "client_id": "\(session.clientID)", "dropped": "\(dropped)",
                "queue_full": "\(session.drops[.queueFull])", "evicted": "\(session.drops[.evicted])",
                "total_limit": "\(session.drops[.totalLimit])", "too_large": "\(session.drops[.tooLarge])",
                "expired": "\(session.drops[.expired])", "not_authorized": "\(session.drops[.notAuthorized])",
                "session_ended": "\(session.drops[.sessionEnded])",
            ])
        }
        if more > 0 {
            logger.warning("messages dropped for more clients", metadata: ["clients": "\(more)"])
        }
    }
}
