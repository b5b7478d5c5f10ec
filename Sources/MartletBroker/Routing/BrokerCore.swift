import Logging
import NIOConcurrencyHelpers

/// What every router shares: configuration, the client-id registry, the retained store
/// and broker-wide counters.
package final class BrokerCore: Sendable {
    let configuration: BrokerConfiguration
    let registry = SessionRegistry()
    let retained = RetainedStore()
    let shared: SharedSubscriptions
    /// The cluster this node is part of (nil: a single broker).
    let cluster: (any ClusterLink)?
    let counters = BrokerCounters()
    package let logger: Logger
    /// Password file and ACL as last (re)loaded; routers take a copy once per sweep.
    let security = NIOLockedValueBox(SecurityState())
    /// The configuration as last reloaded: routers take a copy once per sweep, new
    /// connections read it when accepted.
    let live: NIOLockedValueBox<BrokerConfiguration>

    /// Per listener, what its connections read of `live`; replaced with it.
    package let connectionSettings: NIOLockedValueBox<[ConnectionSettings]>

    package init(configuration: BrokerConfiguration, logger: Logger, cluster: (any ClusterLink)? = nil) {
        self.configuration = configuration
        self.cluster = cluster
        self.shared = SharedSubscriptions(cluster: cluster)
        self.live = NIOLockedValueBox(configuration)
        self.connectionSettings = NIOLockedValueBox(ConnectionSettings.perListener(configuration))
        self.logger = logger
    }

    /// Applies a reloaded configuration: routers pick it up at their next sweep, new
    /// connections at once.
    func setLive(_ configuration: BrokerConfiguration) {
        live.withLockedValue { $0 = configuration }
        connectionSettings.withLockedValue { $0 = ConnectionSettings.perListener(configuration) }
    }
}
