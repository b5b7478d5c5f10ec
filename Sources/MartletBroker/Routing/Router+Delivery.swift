import MartletMQTT
import NIOCore

/// Getting a message to one session: at once when the socket and the inflight window allow,
/// from the outbox and the retained feed as the socket drains, encoded per subscriber when
/// it needs a packet id or properties of its own.
extension Router {
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

    func sendInflight(_ delivery: Delivery, to session: Session) {
        var delivery = delivery
        let stores = storesDelivery(delivery, session)
        let isNew = stores && delivery.storeSeq == 0
        if isNew { storeIdentity(&delivery) }
        let id = session.inflight.send(delivery)
        if isNew {
            storeQueued(delivery, session, packetIdentifier: id)
        } else if stores && delivery.storeSeq != 0 {
            storeSent(delivery, packetIdentifier: id)
        }
        core.counters.inflightMessages.add(1, ordering: .relaxed)
        writePublish(delivery, to: session, packetIdentifier: id, dup: false)
        if session.sharedGroups > 0 { updateSharedBusy(session) }
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
                storeRemoved(next, session)
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
    func flightClosed(_ session: Session) {
        core.counters.inflightMessages.subtract(1, ordering: .relaxed)
        session.clusterAcknowledged = true
        drain(session)
        if session.sharedGroups > 0 { updateSharedBusy(session) }
    }

    /// A flow given up before its message was sent (too large, not authorized).
    func abandonFlight(_ session: Session, _ packetIdentifier: UInt16?) {
        if let id = packetIdentifier, let flight = session.inflight.abandon(id) {
            storeRemoved(flight.delivery, session)
            core.counters.inflightMessages.subtract(1, ordering: .relaxed)
        }
    }

    /// The connection's socket drained below the low-water mark.
    func becameWritable(clientID: String, connectionID: Int) {
        guard let session = sessions[clientID], session.connectionID == connectionID else { return }
        drain(session)
        flush()
    }

    /// Retained messages read from the store per step of a feed.
    static let retainedReadBatch = 64

    /// Messages one drain sends from a feed before yielding the loop to other work (the rest
    /// follows in a task of its own, or when the socket drains).
    static let retainedDrainBudget = 1024

    /// Sends a session's retained feed while the socket is writable and the inflight window
    /// has room; returns whether the feed is finished.
    func drainRetained(_ session: Session, _ connection: ConnectionRef) -> Bool {
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
        var packet = SharedEncoding.publishPacket(delivery, version: session.version, packetIdentifier: packetIdentifier, dup: dup, now: eventLoop.now)
        let alias = session.outAliases?.use(for: packet.topic) ?? .none
        switch alias {
        case .none: break
        case .assign(let a): packet.properties.topicAlias = a
        case .alias(let a):
            packet.properties.topicAlias = a
            packet.topic = ""
        }
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
        session.outAliases?.commit(alias, for: delivery.message.topic)
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
}
