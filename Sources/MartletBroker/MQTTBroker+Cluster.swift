import MartletMQTT
import NIOCore

/// What a cluster link (MartletCluster) hands to this node: the other nodes' messages and the
/// cluster's retained messages.
extension MQTTBroker {
    /// A message another node published: routed to this node's subscribers on the loop its
    /// topic hashes to (one loop per topic keeps each topic's order), in one task per burst.
    /// With `group` (`$share/{name}/{filter}`): the cluster picked this node to give it to one
    /// member of that share group.
    public func deliverFromCluster(_ message: Message, group: String? = nil) {
        var hasher = Hasher()
        hasher.combine(message.topic)
        let router = routers[Int(UInt(bitPattern: hasher.finalize()) % UInt(routers.count))]
        if router.clusterInbox.add(message, group: group) {
            router.eventLoop.execute { router.assumeIsolated { $0.routeFromCluster() } }
        }
    }

    /// A connection on another node took `clientID`'s session at `claimedAt` (wall-clock
    /// nanoseconds): an older connection here is closed as taken over (0x8E) and its session
    /// ends here. Ordered with this node's own CONNECTs of that client id.
    public func releaseToCluster(clientID: String, claimedAt: Int64) {
        let any = routers[0]
        let turn: @Sendable (Int?) -> Void = { [routers] owner in
            guard let owner else {
                any.core.registry.settle(clientID, owner: nil)
                return
            }
            let router = routers[owner]
            router.eventLoop.execute { router.assumeIsolated { $0.releaseToCluster(clientID, claimedAt: claimedAt) } }
        }
        if case .granted(let owner) = core.registry.claim(clientID, router: 0, turn: turn) { turn(owner) }
    }

    /// This node's NATS connection came back: claims the other nodes made meanwhile may
    /// have been lost on the way, so every session held here is announced again with the
    /// time its connection took it; a node holding a later claim answers with it, and the
    /// older connection is released.
    public func reannounceClaims() {
        for router in routers {
            router.eventLoop.execute { router.assumeIsolated { $0.reannounceClaims() } }
        }
    }

    /// A message this node publishes for the cluster (the will of a dead node's client):
    /// routed here and sent to the other nodes.
    public func publishFromCluster(_ message: Message) {
        let router = routers[0]
        router.eventLoop.execute {
            router.assumeIsolated {
                $0.publish(message)
                $0.flush()
            }
        }
    }

    /// The cluster's retained message for `topic` changed (nil: deleted). New subscriptions
    /// on this node get it from the node's own store.
    public func retainedFromCluster(topic: String, _ message: RetainedMessage?) {
        core.retained.store(message ?? RetainedMessage(topic: topic, payload: ByteBuffer(), qos: .atMostOnce, properties: []))
    }
}
