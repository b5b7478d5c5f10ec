import ArgumentParser
import Dispatch
import Logging
import MartletAuth
import MartletBridge
import MartletCluster
import MartletBroker
import MartletTLS
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

@main
struct Martletd: AsyncParsableCommand, Sendable {
    /// Exit code 2 for a bad configuration, as documented; everything else as ArgumentParser does.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as ConfigurationFailure {
            writeStandardError("martletd: \(failure)\n")
            exit(withError: ExitCode(2))
        } catch {
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "martletd",
        abstract: "The Martlet MQTT broker (MQTT 3.1.1 and 5.0)."
    )

    @Option(name: .long, help: "YAML configuration file (see config/martlet.yaml).")
    var config: String?

    @Flag(name: .long, help: "Validate the configuration (file, environment, flags) and exit.")
    var checkConfig = false

    @Option(name: .long, help: "Plain TCP listener port (repeatable); added to the config file's listeners.")
    var port: [Int] = []

    @Option(name: .long, help: "TLS listener port (repeatable); needs --cert and --key.")
    var tlsPort: [Int] = []

    @Option(name: .long, help: "MQTT over WebSocket listener port (repeatable), path /mqtt; added to the config file's listeners.")
    var wsPort: [Int] = []

    @Option(name: .long, help: "MQTT over secure WebSocket (wss) listener port (repeatable), path /mqtt; needs --cert and --key.")
    var wssPort: [Int] = []

    @Option(name: .long, help: "PEM certificate chain for --tls-port listeners.")
    var cert: String?

    @Option(name: .long, help: "PEM private key for --tls-port listeners.")
    var key: String?

    @Option(name: .long, help: "PEM CA file used to verify client certificates on --tls-port listeners.")
    var cafile: String?

    @Flag(name: .long, help: "--tls-port listeners require a client certificate signed by --cafile.")
    var requireCertificate = false

    @Option(name: .long, help: "Address the --port and --tls-port listeners bind to.")
    var bind: String = "127.0.0.1"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    @Option(name: .long, help: "Log format: text or json (one JSON object per line).")
    var logFormat: String?

    @Option(name: .long, help: "Event loop threads (0 = one per core).")
    var threads: Int?

    @Option(name: .long, help: "Largest packet accepted from a client, in bytes (max_packet_size).")
    var maxPacketSize: Int?

    @Option(name: .long, help: "QoS 1/2 messages in flight per client (max_inflight).")
    var maxInflight: Int?

    @Option(name: .long, help: "Messages queued per client: beyond the inflight window, while its socket is full, or while offline (max_queued_messages).")
    var maxQueuedMessages: Int?

    @Option(name: .long, help: "Open connections over all listeners; 0 = no limit (max_connections).")
    var maxConnections: Int?

    @Option(name: .long, help: "Session store file (SQLite): sessions, queued messages and retained messages survive a restart or crash (persistence.path, sync: durable).")
    var persistence: String?

    func validate() throws {
        if let logLevel, Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        if let logFormat, logFormat != "text" && logFormat != "json" {
            throw ValidationError("--log-format must be text or json")
        }
        for p in port + tlsPort + wsPort + wssPort where !(0...65_535).contains(p) {
            throw ValidationError("\(p) is not a TCP port")
        }
        if !(tlsPort + wssPort).isEmpty && (cert == nil || key == nil) {
            throw ValidationError("--tls-port and --wss-port need --cert and --key")
        }
        if requireCertificate && cafile == nil {
            throw ValidationError("--require-certificate needs --cafile")
        }
        if let maxPacketSize, maxPacketSize < 16 { throw ValidationError("--max-packet-size must be at least 16") }
        if let maxInflight, maxInflight < 1 { throw ValidationError("--max-inflight must be at least 1") }
        if let maxQueuedMessages, maxQueuedMessages < 0 { throw ValidationError("--max-queued-messages must not be negative") }
        if let maxConnections, maxConnections < 0 { throw ValidationError("--max-connections must not be negative") }
    }

    static func loadFileAndEnvironment(_ path: String?, into resolved: inout DaemonConfiguration) throws(ConfigurationError) {
        if let path {
            let text = try ConfigurationError.readTextFile(path, key: "(file)")
            try ConfigurationLoader.load(yaml: text, source: path, into: &resolved)
        }
        try ConfigurationLoader.applyEnvironment(ProcessEnvironment.current, into: &resolved)
    }

    /// Defaults, then the file, then MARTLET_* variables, then flags.
    func resolveConfiguration() throws -> DaemonConfiguration {
        var resolved = DaemonConfiguration()
        do {
            try Self.loadFileAndEnvironment(config, into: &resolved)
        } catch {
            throw ConfigurationFailure(error: error)
        }
        if !port.isEmpty || !tlsPort.isEmpty || !wsPort.isEmpty || !wssPort.isEmpty {
            // --port/--tls-port add to the file's listeners, or replace the built-in default one.
            var tls = TLSConfiguration(peerVerification: requireCertificate ? .required : (cafile == nil ? .none : .optional))
            tls.certificateChainFile = cert
            tls.privateKeyFile = key
            tls.caFile = cafile
            func webSocket(_ port: Int, _ tls: TLSConfiguration?) -> BrokerConfiguration.Listener {
                var listener = BrokerConfiguration.Listener(host: bind, port: port, tls: tls)
                listener.webSocket = true
                return listener
            }
            let extra = port.map { BrokerConfiguration.Listener(host: bind, port: $0) }
                + tlsPort.map { BrokerConfiguration.Listener(host: bind, port: $0, tls: tls) }
                + wsPort.map { webSocket($0, nil) } + wssPort.map { webSocket($0, tls) }
            resolved.broker.listeners = resolved.listenersConfigured ? resolved.broker.listeners + extra : extra
        }
        if let logLevel { resolved.logLevel = logLevel }
        if let logFormat { resolved.logFormat = logFormat }
        if let threads { resolved.broker.eventLoops = threads }
        if let maxPacketSize { resolved.broker.maximumPacketSize = maxPacketSize }
        if let maxInflight { resolved.broker.maximumInflight = maxInflight }
        if let maxQueuedMessages { resolved.broker.maximumQueuedMessages = maxQueuedMessages }
        if let maxConnections { resolved.broker.maximumConnections = maxConnections }
        if let persistence {
            if resolved.broker.persistence == nil {
                resolved.broker.persistence = BrokerConfiguration.Persistence(path: persistence)
            } else {
                resolved.broker.persistence!.path = persistence
            }
        }
        do {
            try resolved.finish(source: config ?? "configuration")
        } catch {
            throw ConfigurationFailure(error: error)
        }
        return resolved
    }

    /// A bridge's TLS files must load before anything starts (or a reload applies).
    static func checkBridges(_ bridges: [BridgeConfiguration], source: String) throws {
        for (i, bridge) in bridges.enumerated() {
            guard let tls = bridge.tls else { continue }
            do {
                _ = try TLSContext(configuration: tls, role: .client)
            } catch {
                throw ConfigurationFailure(error: ConfigurationError(source: source, key: "bridges[\(i)].tls", line: nil, message: "\(error)"))
            }
        }
    }

    func run() async throws {
        let daemon = try resolveConfiguration()
        try Self.checkBridges(daemon.broker.bridges, source: config ?? "configuration")
        if checkConfig {
            for listener in daemon.broker.listeners {
                if let tls = listener.tls {
                    do {
                        _ = try TLSContext(configuration: tls, role: .server)
                    } catch {
                        throw ConfigurationFailure(error: ConfigurationError(
                            source: config ?? "flags", key: "listeners \(listener.host):\(listener.port) tls", line: nil, message: "\(error)"))
                    }
                }
            }
            do {
                try MQTTBroker.validateSecurityFiles(daemon.broker)
            } catch {
                throw ConfigurationFailure(error: error)
            }
            print("configuration OK: \(daemon.broker.listeners.map { "\($0.host):\($0.port)\($0.tls == nil ? "" : " (TLS)")" }.joined(separator: ", "))")
            return
        }
        let level = Logger.Level(rawValue: daemon.logLevel)!
        let json = daemon.logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "martletd")
        let config = daemon.broker
        raiseFileLimit(for: config, logger: logger)

        // A cluster node joins NATS JetStream before it listens: without its stream and bucket
        // it does not start.
        var cluster: ClusterNode?
        if let clusterConfiguration = config.cluster {
            do {
                cluster = try ClusterNode.join(clusterConfiguration, logger: logger)
            } catch {
                throw StartupError(description: "cluster: \(error)")
            }
        }
        let broker = MQTTBroker(configuration: config, logger: logger, cluster: cluster)
        do {
            try cluster?.attach(broker)
        } catch {
            throw StartupError(description: "cluster: \(error)")
        }
        let bridges = BridgeManager(broker: broker, logger: logger)
        let command = self
        let reload = ReloadSignal { [broker, logger] in
            // The file and environment are read again (flags still win); a configuration that
            // does not load changes nothing.
            logger.info("SIGHUP: reloading the configuration, TLS certificates, password file and ACL")
            do {
                let fresh = try command.resolveConfiguration()
                try Self.checkBridges(fresh.broker.bridges, source: command.config ?? "configuration")
                broker.reload(fresh.broker)
                Task { await bridges.apply(fresh.broker.bridges) }
            } catch {
                logger.error("reload failed, keeping the running configuration", metadata: ["error": "\(error)"])
            }
        }
        defer { reload.cancel() }
        // swift-service-lifecycle: SIGTERM/SIGINT start a graceful shutdown (v5 clients get
        // DISCONNECT 0x8B); past the bound the group is cancelled.
        var lifecycle = ServiceGroupConfiguration(
            services: [BrokerService(broker: broker, bridges: bridges, cluster: cluster, logger: logger)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        lifecycle.maximumGracefulShutdownDuration = .seconds(10)
        do {
            try await ServiceGroup(configuration: lifecycle).run()
        } catch let error as ConfigurationError {
            throw ConfigurationFailure(error: error)
        } catch let error as TLSError {
            throw StartupError(description: "\(error)")
        } catch {
            let addresses = config.listeners.map { "\($0.host):\($0.port)" }.joined(separator: ", ")
            throw StartupError(description: "cannot listen on \(addresses): \(error)")
        }
        logger.info("stopped")
    }
}

/// The broker as a swift-service-lifecycle service: starts (binding every listener), runs
/// until the group's graceful shutdown, then closes every connection.
struct BrokerService: Service {
    let broker: MQTTBroker
    let bridges: BridgeManager
    let cluster: ClusterNode?
    let logger: Logger

    func run() async throws {
        try await broker.start()
        await bridges.apply(broker.configuration.bridges)
        // Returns when a shutdown signal arrives (throws if the task is cancelled instead).
        try? await gracefulShutdown()
        logger.info("shutting down")
        await bridges.shutdown()
        logger.debug("bridges stopped")
        try await broker.shutdown()
        logger.debug("broker stopped")
        // After the broker: the wills of the connections it closed go to the other nodes.
        cluster?.close()
        logger.debug("cluster connection closed")
    }
}

/// SIGHUP → `action` (certificate reload). A reload that fails keeps the running state.
final class ReloadSignal {
    private let source: any DispatchSourceSignal

    init(_ action: @escaping @Sendable () -> Void) {
        signal(SIGHUP, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "martletd.reload"))
        source.setEventHandler(handler: action)
        source.resume()
    }

    func cancel() { source.cancel() }
}

/// Every connection is a file descriptor: raise the soft limit to the hard one, and warn
/// when `max_connections` (or, without one, a busy broker) cannot fit.
func raiseFileLimit(for config: BrokerConfiguration, logger: Logger) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
    }
    // Listeners, event loops and the process's own files need a few descriptors too.
    let usable = Int(clamping: limit.rlim_cur) - 64
    logger.info("file descriptor limit", metadata: ["nofile": "\(limit.rlim_cur)"])
    if config.maximumConnections > usable {
        logger.warning("max_connections is above what the file descriptor limit allows", metadata: [
            "max_connections": "\(config.maximumConnections)", "usable_descriptors": "\(usable)",
        ])
    } else if config.maximumConnections == 0 && usable < 10_000 {
        logger.warning("low file descriptor limit and no max_connections: connections past it will fail at accept", metadata: [
            "usable_descriptors": "\(usable)",
        ])
    }
}

struct StartupError: Error, CustomStringConvertible {
    var description: String
}

/// A bad configuration: printed as "FILE:LINE: key: problem", exit code 2, nothing started.
struct ConfigurationFailure: Error, CustomStringConvertible {
    var error: ConfigurationError
    var description: String { "invalid configuration: \(error)" }
}

func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

enum ProcessEnvironment {
    static var current: [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") {
                result[String(text[..<eq])] = String(text[text.index(after: eq)...])
            }
            pointer += 1
        }
        return result
    }
}
