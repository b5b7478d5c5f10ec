/// What a connection handler reads of the configuration: the limits as last reloaded and its
/// listener's settings. One instance per listener and reload, shared by every connection
/// accepted under it, so a connection holds a reference rather than its own copy.
package final class ConnectionSettings: Sendable {
    let configuration: BrokerConfiguration
    let listener: BrokerConfiguration.Listener

    init(configuration: BrokerConfiguration, listener: BrokerConfiguration.Listener) {
        self.configuration = configuration
        self.listener = listener
    }

    static func perListener(_ configuration: BrokerConfiguration) -> [ConnectionSettings] {
        configuration.listeners.map { ConnectionSettings(configuration: configuration, listener: $0) }
    }
}
