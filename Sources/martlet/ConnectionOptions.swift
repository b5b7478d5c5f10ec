import ArgumentParser
import MartletClient
import MartletMQTT
import MartletTLS
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The connection flags `martlet pub` and `martlet sub` share, spelled as in mosquitto_pub/sub.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .customShort("h"), help: "Broker host.") var host = "127.0.0.1"
    @Option(name: .customShort("p"), help: "Broker port (default 1883, or 8883 with TLS).") var port: Int?
    @Option(name: .customShort("i"), help: "Client id (default: martlet-<random>).") var clientID: String?
    @Option(name: .customShort("u"), help: "User name.") var username: String?
    @Option(name: .customShort("P"), help: "Password.") var password: String?
    @Option(name: .customShort("k"), help: "Keepalive in seconds.") var keepalive: UInt16 = 60
    @Option(name: .customShort("V"), help: "Protocol: mqttv311 or mqttv5.") var protocolVersion = "mqttv311"
    @Option(name: .customShort("L"), help: "URL: mqtt[s]://[user[:pass]@]host[:port]/topic, or ws[s]://host[:port]/path/topic (MQTT over WebSocket)") var url: String?
    @Flag(name: .long, help: "MQTT over WebSocket, path /mqtt (with TLS: wss).") var ws = false
    @Flag(name: .customShort("d"), help: "Print debug messages.") var debug = false
    @Option(name: .long, help: "CA file to verify the broker (enables TLS).") var cafile: String?
    @Option(name: .long, help: "Client certificate (PEM) for mutual TLS.") var cert: String?
    @Option(name: .long, help: "Client private key (PEM) for mutual TLS.") var key: String?
    @Flag(name: .long, help: "Do not verify the broker's certificate (TLS stays on). Unsafe.") var insecure = false
    @Flag(name: .long, help: "Use TLS with the system CA store.") var tls = false

    /// The topic from -L, if one was given.
    var urlTopic: String? { try? parseURL()?.topic }

    func parseURL() throws -> MQTTURL? {
        guard let url else { return nil }
        do {
            return try MQTTURL(string: url)
        } catch {
            throw ValidationError("-L \(error)")
        }
    }

    func validateConnection() throws {
        guard ["mqttv311", "mqttv5", "mqttv31"].contains(protocolVersion) else {
            throw ValidationError("-V must be mqttv311 or mqttv5")
        }
        _ = try parseURL()
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
    }

    func clientConfiguration(cleanStart: Bool = true, will: Will? = nil) throws -> MQTTClientConfiguration {
        let parsed = try parseURL()
        let secure = tls || cafile != nil || cert != nil || insecure || (parsed?.secure ?? false)
        let h = parsed?.host ?? host
        var config = MQTTClientConfiguration(
            host: h, port: port ?? parsed?.port ?? (secure ? 8883 : 1883),
            clientID: clientID ?? "martlet-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))")
        config.version = protocolVersion == "mqttv5" ? .v5 : .v3_1_1
        config.keepAlive = keepalive
        config.username = username ?? parsed?.user
        config.password = password ?? parsed?.password
        config.cleanStart = cleanStart
        config.will = will
        config.webSocketPath = parsed?.webSocketPath ?? (ws ? "/mqtt" : nil)
        if secure {
            var t = TLSConfiguration.client(caFile: cafile, serverName: h)
            t.certificateChainFile = cert
            t.privateKeyFile = key
            if insecure {
                t.peerVerification = .none
                warn("warning: --insecure: the broker's certificate is not verified")
            }
            config.tls = t
        }
        return config
    }
}

func warn(_ text: String) {
    var bytes = Array((text + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

/// Exit codes shared by pub and sub.
enum ExitStatus {
    static let connectionFailed: Int32 = 2
    static let refused: Int32 = 3
    static let operationRefused: Int32 = 4
    static let timedOut: Int32 = 27  // mosquitto_sub's -W exit status

    /// One line for the error, and the exit code that names its kind.
    static func fail(_ error: any Error) -> ExitCode {
        switch error {
        case MQTTClientError.connectionRefused(let code):
            warn("Connection refused: \(code)")
            return ExitCode(refused)
        case MQTTClientError.refused(let code):
            warn("Not authorised or refused: \(code)")
            return ExitCode(operationRefused)
        case MQTTClientError.timeout(let what):
            warn("Timed out waiting for \(what)")
            return ExitCode(connectionFailed)
        case let e as TLSError:
            warn("TLS error: \(e)")
            return ExitCode(connectionFailed)
        case let e as NIOConnectionError:
            let reason = e.connectionErrors.first.map { "\($0.error)" } ?? "no address to try"
            warn("Error: cannot connect to \(e.host):\(e.port): \(reason)")
            return ExitCode(connectionFailed)
        default:
            warn("Error: \(error)")
            return ExitCode(connectionFailed)
        }
    }
}
