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

    /// A connection took `session` here: the other nodes release theirs.
    func claimInCluster(_ session: Session) {
        guard let cluster = core.cluster, !ClusterLinkSupport.isNodeLocal(session.clientID) else { return }
        session.claimedAt = ClusterLinkSupport.wallNanoseconds()
        cluster.claimed(session.clientID, at: session.claimedAt)
    }

    /// Another node's connection took `clientID`'s session at `claimedAt`: a connection here
    /// that took it earlier is closed as taken over (v5 DISCONNECT 0x8E; its will follows the
    /// will rules) and the session ends here, as a takeover by a clean start would end it.
    /// A claim older than the one here changes nothing (that node releases instead), so of
    /// two CONNECTs racing on two nodes exactly one connection stays.
    func releaseToCluster(_ clientID: String, claimedAt: Int64) {
        guard let session = sessions[clientID], session.claimedAt < claimedAt else {
            core.registry.settle(clientID, owner: sessions[clientID] == nil ? nil : index)
            return
        }
        let request = ConnectRequest(
            clientID: clientID, version: session.version, cleanStart: true, expiryInterval: 0, receiveMaximum: 1,
            maximumPacketSize: 0, policy: session.policy, username: session.username)
        _ = release(for: request, movingTo: nil)
        local.clusterTakeovers += 1
        core.registry.settle(clientID, owner: nil)
    }

    /// Routes the messages another node published, which the cluster delivered here. They
    /// reach this node's subscribers; they are not stored as retained here (the cluster's
    /// retained bucket feeds every node's store) and do not go back to the cluster.
    func routeFromCluster() {
        for message in clusterInbox.take() {
            local.clusterReceived += 1
            if !message.properties.isEmpty, let seconds = message.properties.messageExpiryInterval, seconds > 0 {
                var stamped = message
                stamped.expiresAt = eventLoop.now + .seconds(Int64(seconds))
                route(stamped, retainHere: false)
            } else {
                route(message, retainHere: false)
            }
        }
        flush()
    }
}
