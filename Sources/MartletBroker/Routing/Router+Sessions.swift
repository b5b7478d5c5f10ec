import MartletAuth
import MartletMQTT
import NIOCore

/// A session's life past CONNECT: credentials and ACL checks, the connection lost (the will
/// now or after its delay), expiry, and the end of the session.
extension Router {
    struct ConnectRequest: Sendable, Equatable {
        var clientID: String
        var version: ProtocolVersion
        var cleanStart: Bool
        var expiryInterval: UInt32
        var receiveMaximum: Int
        var maximumPacketSize: Int
        var policy: SlowConsumerPolicy
        var username: String?
        /// The client's v5 Topic Alias Maximum: aliases it accepts on what it is sent.
        var topicAliasMaximum: Int = 0
        /// Its will, stored with a persistent session: a crash loses the connection without
        /// DISCONNECT, so the restarted broker publishes it.
        var will: Message? = nil
        var willDelay: UInt32 = 0
        /// A bridge's session: its own queue bounds.
        var queueBounds: BrokerConfiguration.QueueBounds? = nil
        /// In a cluster, for a CONNECT without clean start: the session's record, read before
        /// the claim (nil: none), and whether it was read.
        var clusterRecord: ClusterSessionRecord? = nil
        var clusterLoaded = false
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
        if Session.isBridge(clientID) { return true }
        return security.acl?.allows(.write, topic, username: username, clientID: clientID) ?? !Self.isSysTopic(topic)
    }

    static func isSysTopic(_ topic: String) -> Bool {
        topic.utf8.first == UInt8(ascii: "$") && (topic == "$SYS" || topic.hasPrefix("$SYS/"))
    }

    /// Whether the session may receive a message on `topic` (always, without an ACL).
    func mayRead(_ topic: String, _ session: Session) -> Bool {
        guard let acl = security.acl, !session.isBridge else { return true }
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
        handOverShared(session, ending: false)
        if session.isPersistent {
            var waitingWill: (Message, UInt32)?
            if let will {
                if willDelay > 0 {
                    let delay = min(willDelay, session.expiryInterval)
                    scheduleWill(will, after: .seconds(Int64(delay)), for: session)
                    waitingWill = (will, delay)
                } else {
                    publish(will)
                }
            }
            scheduleExpiry(session)
            storeSessionOffline(session, will: waitingWill?.0, willIn: waitingWill?.1)
            if waitingWill == nil { clearClusterWill(session) }
            saveClusterSession(session)
        } else {
            if let will { publish(will) }
            endSession(session)
        }
        flush()
    }

    /// The will goes out after its delay unless the session resumes or ends first (then it
    /// is cancelled or sent at once, by whoever takes it from `wills`).
    func scheduleWill(_ will: Message, after delay: TimeAmount, for session: Session) {
        let clientID = session.clientID
        let generation = session.connectionID
        wills.schedule(will, for: clientID, after: delay, on: eventLoop) { [self] in
            self.assumeIsolated { router in
                guard let s = router.sessions[clientID], !s.isOnline, s.connectionID == generation,
                      let will = router.wills.take(clientID) else { return }
                if s.stored { router.record(.willGone(clientID: clientID)) }
                router.clearClusterWill(s)
                router.publish(will)
                router.flush()
            }
        }
    }

    /// v5 DISCONNECT may change the session expiry interval (MQTT 5 3.14.2.2.2).
    func updateExpiry(clientID: String, connectionID: Int, expiryInterval: UInt32) {
        guard let session = sessions[clientID], session.connectionID == connectionID else { return }
        session.expiryInterval = expiryInterval
    }

    /// An offline persistent session ends after its expiry interval unless it resumes first.
    func scheduleExpiry(_ session: Session, after delay: TimeAmount? = nil) {
        let clientID = session.clientID
        _ = expiries.take(clientID)
        guard session.expiryInterval != Session.neverExpires else { return }
        let generation = session.connectionID
        expiries.schedule((), for: clientID, after: delay ?? .seconds(Int64(session.expiryInterval)), on: eventLoop) { [self] in
            self.assumeIsolated { router in
                guard router.expiries.take(clientID) != nil,
                      let s = router.sessions[clientID], !s.isOnline, s.connectionID == generation else { return }
                router.endSession(s)
            }
        }
    }

    func endSession(_ session: Session) {
        // A will still waiting for its delay goes out when the session ends.
        if let will = wills.take(session.clientID) { publish(will) }
        _ = expiries.take(session.clientID)
        handOverShared(session, ending: true)
        discardOutbox(session, countAs: .sessionEnded)
        for filter in session.subscriptions.keys { trie.remove(filter: filter, subscriber: session) }
        sessions.removeValue(forKey: session.clientID)
        storeSessionEnded(session)
        clearClusterWill(session)
        if session.isPersistent { core.cluster?.sessionRemoved(session.clientID, claimedAt: session.claimedAt) }
        core.registry.release(session.clientID, router: index)
    }
}
