import MartletMQTT
import NIOCore

/// CONNECT and session ownership: one takeover at a time per client id (the registry queues
/// the others), the session's owner checked, and the session moved whole between loops.
extension Router {
    /// What the router holding a client id's session did when a new connection claimed it.
    enum Release: Sendable {
        /// It held no session (expired or ended meanwhile).
        case none
        /// The session belongs to another identity and was left as it is.
        case refused
        /// The session ended there (clean start, or another identity under `discard`).
        case ended
        /// The session left, whole; on another loop it still forwards what it matches there.
        case moved(SessionState)
    }

    /// Attaches the connection to its client id's session once every earlier claim of that
    /// client id is carried out (MQTT-3.1.4-3).
    func connect(_ request: ConnectRequest, handler: ConnectionRef) {
        if needsClusterRecord(request) {
            loadClusterRecord(request, handler: handler)
            return
        }
        let claim = core.registry.claim(request.clientID, router: index, turn: { [self] previous in
            eventLoop.execute {
                self.assumeIsolated { $0.takeOver(request, handler: handler, from: previous) }
            }
        })
        if case .granted(let previous) = claim { takeOver(request, handler: handler, from: previous) }
    }

    private func takeOver(_ request: ConnectRequest, handler: ConnectionRef, from previous: Int?) {
        guard handler.value.isAwaitingSession else {
            // The client left while its claim waited: the session stays where it is.
            core.registry.settle(request.clientID, owner: previous)
            return
        }
        guard let previous else {
            attach(request, handler: handler, .none, from: nil)
            return
        }
        if previous == index {
            let outcome = release(for: request, movingTo: nil)
            attach(request, handler: handler, outcome, from: previous)
            return
        }
        let owner = peers[previous]
        let target = index
        owner.eventLoop.execute {
            let outcome = owner.assumeIsolated { $0.release(for: request, movingTo: target) }
            self.eventLoop.execute {
                self.assumeIsolated { $0.attach(request, handler: handler, outcome, from: previous) }
            }
        }
    }

    /// The owner's side of a takeover. The old connection is closed as taken over (its will
    /// follows the will rules); a session created by another identity is refused or ended
    /// (`session_other_identity`); otherwise the session leaves: moving to another loop it
    /// stays in this trie, forwarding, until every router's marker is in.
    func release(for request: ConnectRequest, movingTo target: Int?) -> Release {
        guard let session = sessions[request.clientID] else { return .none }
        let otherIdentity = session.username != request.username
        if otherIdentity {
            logger.warning("CONNECT for a session created by another identity", metadata: [
                "client_id": "\(request.clientID)", "user": "\(request.username ?? "(anonymous)")",
                "owner": "\(session.username ?? "(anonymous)")", "policy": "\(config.sessionOtherIdentity.rawValue)",
            ])
            if config.sessionOtherIdentity == .refuse {
                local.sessionTakeoversRefused += 1
                return .refused
            }
        }
        // A session that lasts only as long as its connection ends with it, also when the
        // connection ends by takeover: the new one starts empty (MQTT-3.1.2-6, MQTT-3.2.2-3).
        let discard = request.cleanStart || otherIdentity || !session.isPersistent
        sessions.removeValue(forKey: request.clientID)
        _ = expiries.take(request.clientID)
        endLag(session)
        if let connection = session.connection {
            setConnection(session, nil)
            if let (will, delay) = connection.value.takeOver() {
                // With a delay, a new connection that continues the session means the will
                // is never sent (MQTT-3.1.3-9); a clean start ends the session, which sends it.
                if delay == 0 || discard { publish(will) }
            }
        }
        clearClusterWill(session)
        if let will = wills.take(session.clientID), discard {
            // Offline with a will waiting: a clean start ends the session (the will goes now);
            // resuming it cancels the will (MQTT-3.1.3-9).
            publish(will)
        }
        // An ending session's share groups get its unacknowledged copies back for other members.
        if discard { handOverShared(session, ending: true) }
        let state = session.state
        // Its rows end with it, or go on with the session on its new loop (or new object here).
        if discard { storeSessionEnded(session) } else { storeSessionLeft(session) }
        // The outbox leaves this loop's accounting; the new owner charges it again.
        discardOutbox(session, countAs: discard ? .sessionEnded : nil)
        if let target, !discard {
            session.inflight = OutgoingFlights()
            session.move = SessionMove(leavingFor: target, routers: peers.count)
            movingOut[request.clientID] = session
        } else {
            for filter in session.subscriptions.keys { trie.remove(filter: filter, subscriber: session) }
        }
        flush()
        return discard ? .ended : .moved(state)
    }

    /// The new connection's side: the session (restored or new) is attached and CONNACK
    /// sent; a session arriving from another loop then collects the routers' markers.
    private func attach(_ request: ConnectRequest, handler: ConnectionRef, _ outcome: Release, from previous: Int?) {
        let clientID = request.clientID
        if case .refused = outcome {
            core.registry.settle(clientID, owner: previous)
            handler.value.sessionRefused()
            flush()
            return
        }
        let session = Session(
            clientID: clientID, version: request.version, expiryInterval: request.expiryInterval,
            inflightWindow: max(1, min(request.queueBounds?.inflight ?? config.maximumInflight, request.receiveMaximum)))
        session.maximumPacketSize = request.maximumPacketSize
        session.policy = request.policy
        session.username = request.username
        session.queueBounds = request.queueBounds
        var sessionPresent = false
        var arriving = false
        if case .moved(let restored) = outcome {
            session.restore(restored)
            core.counters.inflightMessages.add(session.inflight.count, ordering: .relaxed)
            accountQueued(session, bytes: session.outbox.bytes, messages: session.outbox.count)
            sessionPresent = true
            for (filter, sub) in session.subscriptions where SharedSubscription(filter) == nil {
                trie.insert(filter: filter, subscriber: session, options: sub.options, identifier: sub.identifier)
            }
            if let previous, previous != index {
                session.move = SessionMove(arriving: ())
                arriving = true
            }
            if session.sharedGroups > 0 {
                core.shared.update(clientID, router: index, busy: false, persistent: session.isPersistent)
            }
        }
        if case .none = outcome, let record = request.clusterRecord, session.isPersistent {
            resumeFromCluster(session, record)
            sessionPresent = true
        }
        sessions[clientID] = session
        claimInCluster(session, request)
        if case .moved(let restored) = outcome, restored.stored, !session.isPersistent, store != nil {
            // Resumed without being kept any more (v5 expiry 0 now): its stored rows go.
            record(.sessionEnded(clientID: clientID))
        }
        storeSessionAttached(session, request)
        if handler.value.isAwaitingSession {
            setConnection(session, handler)
            let aliases = min(request.topicAliasMaximum, config.maximumTopicAliasOut)
            if aliases > 0 && request.version == .v5 { session.outAliases = OutgoingTopicAliases(maximum: aliases) }
            session.connectionID = handler.value.connectionID
            handler.value.sessionAttached(sessionPresent: sessionPresent)
            markDirty(handler)
            // Unacknowledged messages are resent first, with DUP, in their original order (MQTT-4.4.0-1).
            for flight in session.inflight.flights {
                switch flight.stage {
                case .awaitingPubAck, .awaitingPubRec:
                    writePublish(flight.delivery, to: session, packetIdentifier: flight.packetIdentifier, dup: true)
                case .awaitingPubComp:
                    writePubRel(flight.packetIdentifier, to: session)
                }
            }
            drain(session)
            handler.value.replayBufferedPackets()
            if session.clusterReplayFrom != nil { replayFromCluster(session) }
        } else if session.isPersistent {
            // The client went away while the session was being attached: it stays, offline.
            scheduleExpiry(session)
            storeSessionOffline(session, will: nil, willIn: nil)
        } else if !arriving {
            endSession(session)
        }
        // Publishes this trie's subscription count before any router is asked for its marker.
        flush()
        guard arriving, let previous else {
            core.registry.settle(clientID, owner: sessions[clientID] == nil ? nil : index)
            return
        }
        let mover = peers[previous]
        for router in peers {
            router.eventLoop.execute {
                router.assumeIsolated { $0.sendMarker(for: clientID, to: mover) }
            }
        }
    }

    /// Everything this router routed so far is handed over; then the moving session's old
    /// owner learns the number of the last one.
    private func sendMarker(for clientID: String, to mover: Router) {
        flush()
        let origin = index
        let sequence = routeSequence
        if mover === self {
            marker(for: clientID, origin: origin, sequence: sequence)
        } else {
            mover.eventLoop.execute {
                mover.assumeIsolated { $0.marker(for: clientID, origin: origin, sequence: sequence) }
            }
        }
    }

    /// The old owner's side: once every router's marker is in, the session leaves this trie
    /// and the new owner gets the cutovers, after every copy forwarded.
    private func marker(for clientID: String, origin: Int, sequence: UInt64) {
        guard let session = movingOut[clientID], let move = session.move, !move.isArriving, move.forwarding[origin] else { return }
        move.forwarding[origin] = false
        move.cutover[origin] = sequence
        move.markersMissing -= 1
        guard move.markersMissing == 0 else { return }
        for filter in session.subscriptions.keys { trie.remove(filter: filter, subscriber: session) }
        movingOut.removeValue(forKey: clientID)
        session.move = nil
        flush()
        let target = peers[move.target]
        let cutover = move.cutover
        target.eventLoop.execute {
            target.assumeIsolated { $0.moveCompleted(clientID, cutover: cutover) }
        }
    }

    /// The new owner's side: trie matches held during the move are delivered unless the old
    /// owner forwarded them; the client id is free for the next claim.
    private func moveCompleted(_ clientID: String, cutover: [UInt64]) {
        if let session = sessions[clientID], let move = session.move, move.isArriving {
            session.move = nil
            for delivery in move.held where delivery.message.sequence > cutover[delivery.message.origin] {
                deliver(delivery, to: session)
            }
            if !session.isOnline && !session.isPersistent { endSession(session) }
            flush()
        }
        core.registry.settle(clientID, owner: sessions[clientID] == nil ? nil : index)
    }

    /// A copy routed here for a moving session: held (arriving), forwarded to the new owner
    /// (leaving, from an origin whose marker is still to come), or left to the new owner.
    func moving(_ delivery: Delivery, _ move: SessionMove, _ session: Session) {
        if move.isArriving {
            move.held.append(delivery)
        } else if move.forwarding[delivery.message.origin] {
            forwardBatches[move.target].append((session.clientID, delivery))
            hasForwards = true
        }
    }

    func handOverForwards() {
        hasForwards = false
        for i in forwardBatches.indices where !forwardBatches[i].isEmpty { handOverForwards(i) }
    }

    /// Hands peer `i` the copies addressed to its sessions (moving sessions' and share
    /// groups'); like a routing batch, they count as this loop's unrouted work until routed.
    func handOverForwards(_ i: Int) {
        let batch = forwardBatches[i]
        forwardBatches[i] = []
        handOff(to: i, messages: batch.count, bytes: batch.reduce(0) { $0 + $1.delivery.cost }) { $0.deliverForwarded(batch) }
    }

    /// Copies forwarded by a moving session's old owner.
    func deliverForwarded(_ batch: [(clientID: String, delivery: Delivery)]) {
        for (clientID, delivery) in batch {
            if delivery.group != nil {
                deliverShared(delivery, to: clientID, hops: 1)
                continue
            }
            guard let session = sessions[clientID] else { continue }
            deliver(delivery, to: session)
        }
        flush()
    }
}
