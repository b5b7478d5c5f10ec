import MartletMQTT

/// What the admin API reads of a router's sessions, and what it may do to them. Called on the
/// router's loop (through `eventLoop.submit`), one router at a time.
extension Router {
    /// Every session of this loop, online or not.
    func adminClients() -> [AdminClient] {
        sessions.values.map(adminClient)
    }

    func adminClient(_ clientID: String) -> AdminClient? {
        sessions[clientID].map(adminClient)
    }

    private func adminClient(_ session: Session) -> AdminClient {
        var drops: [String: Int] = [:]
        for reason in DropReason.allCases where session.drops[reason] > 0 { drops[reason.rawValue] = session.drops[reason] }
        let details = session.isOnline ? session.connection?.value.details : nil
        return AdminClient(
            id: session.clientID, username: session.username, protocolVersion: "\(session.version)",
            connected: session.isOnline, remoteAddress: details?.remoteAddress, listener: details?.listener,
            transport: details?.transport, tlsVersion: details?.tlsVersion, tlsCipher: details?.tlsCipher,
            connectedAt: details?.connectedAt, keepAlive: details?.keepAlive,
            sessionExpiry: session.expiryInterval == Session.neverExpires ? nil : Int(session.expiryInterval),
            subscriptions: session.subscriptions.count, queuedMessages: session.outbox.count, queuedBytes: session.outbox.bytes,
            inflight: session.inflight.count, dropped: drops, droppedTotal: drops.values.reduce(0, +),
            lagging: session.lagging, stalled: session.stalled,
            subscriptionList: nil)
    }

    /// One session with its subscriptions.
    func adminClientDetail(_ clientID: String) -> AdminClient? {
        guard let session = sessions[clientID] else { return nil }
        var client = adminClient(session)
        client.subscriptionList = session.subscriptions.map { filter, sub in
            AdminSubscription(clientID: session.clientID, filter: filter, qos: Int(sub.options.qos.rawValue),
                              noLocal: sub.options.noLocal, retainAsPublished: sub.options.retainAsPublished)
        }.sorted { $0.filter < $1.filter }
        return client
    }

    /// Disconnects an online client (v5: DISCONNECT 0x98 Administrative action). With
    /// `discardSession` its session ends too, with what it queued (counted `session_ended`).
    /// False when no client of that id is connected here.
    func adminDisconnect(_ clientID: String, discardSession: Bool) -> Bool {
        guard let session = sessions[clientID], session.isOnline, let connection = session.connection else { return false }
        if discardSession { session.expiryInterval = 0 }
        connection.value.close(reason: .administrative)
        if discardSession, let left = sessions[clientID], !left.isOnline { endSession(left) }
        flush()
        return true
    }

    /// Ends an offline session. False when there is none here (or it is online).
    func adminEndSession(_ clientID: String) -> Bool {
        guard let session = sessions[clientID], !session.isOnline else { return false }
        endSession(session)
        flush()
        return true
    }

    /// Subscriptions of this loop's sessions whose filter is `filter` or, with a wildcard
    /// filter, those it covers; nil: all.
    func adminSubscriptions(matching filter: String?) -> [AdminSubscription] {
        var result: [AdminSubscription] = []
        for session in sessions.values {
            for (f, sub) in session.subscriptions {
                if let filter, f != filter, !Topic.covers(pattern: filter, filter: f) { continue }
                result.append(AdminSubscription(clientID: session.clientID, filter: f, qos: Int(sub.options.qos.rawValue),
                                                noLocal: sub.options.noLocal, retainAsPublished: sub.options.retainAsPublished))
            }
        }
        return result
    }

    /// Publishes as the broker (the admin API's POST /publish; an empty retained message
    /// deletes a retained topic).
    func adminPublish(_ message: Message) {
        publish(message)
        flush()
    }
}
