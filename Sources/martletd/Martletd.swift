import ArgumentParser
import Dispatch
import Logging
import MartletBroker
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

@main
struct Martletd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "martletd",
        abstract: "The Martlet MQTT broker (MQTT 3.1.1 and 5.0)."
    )

    @Option(name: .long, help: "Plain TCP listener port (repeatable). Default 1883 when no listener is given.")
    var port: [Int] = []

    @Option(name: .long, help: "Address the --port listeners bind to.")
    var bind: String = "127.0.0.1"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "Event loop threads (0 = one per core).")
    var threads: Int = 0

    @Option(name: .long, help: "Largest packet accepted from a client, in bytes (max_packet_size).")
    var maxPacketSize: Int = 1 << 20

    @Option(name: .long, help: "QoS 1/2 messages in flight per client (max_inflight).")
    var maxInflight: Int = 20

    @Option(name: .long, help: "QoS 1/2 messages queued per client beyond the inflight window (max_queued_messages).")
    var maxQueuedMessages: Int = 1000

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        for p in port where !(0...65_535).contains(p) {
            throw ValidationError("--port \(p) is not a TCP port")
        }
        guard maxPacketSize >= 16 else { throw ValidationError("--max-packet-size must be at least 16") }
        guard maxInflight >= 1 else { throw ValidationError("--max-inflight must be at least 1") }
        guard maxQueuedMessages >= 0 else { throw ValidationError("--max-queued-messages must not be negative") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "martletd")

        var config = BrokerConfiguration()
        config.listeners = (port.isEmpty ? [1883] : port).map { .init(host: bind, port: $0) }
        config.eventLoops = threads
        config.maximumPacketSize = maxPacketSize
        config.maximumInflight = maxInflight
        config.maximumQueuedMessages = maxQueuedMessages

        let broker = MQTTBroker(configuration: config, logger: logger)
        do {
            try await broker.start()
        } catch {
            let addresses = config.listeners.map { "\($0.host):\($0.port)" }.joined(separator: ", ")
            throw StartupError(description: "cannot listen on \(addresses): \(error)")
        }

        let signal = await Self.waitForTerminationSignal()
        logger.info("shutting down", metadata: ["signal": "\(signal)"])
        try await broker.shutdown()
        logger.info("stopped")
    }

    /// Suspends until SIGINT or SIGTERM arrives.
    static func waitForTerminationSignal() async -> Int32 {
        await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
            let queue = DispatchQueue(label: "martletd.signals")
            let latch = SignalLatch()
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
                source.setEventHandler {
                    if latch.fire() { continuation.resume(returning: sig) }
                }
                source.resume()
                latch.sources.append(source)
            }
        }
    }
}

/// Resumes the waiting continuation once, whichever signal comes first, and keeps the
/// signal sources alive for the life of the process.
final class SignalLatch: @unchecked Sendable {
    // Safe: `fire` runs only on the one serial queue the signal sources use, and
    // `sources` is appended to before each source is resumed, on the starting thread.
    private var fired = false
    var sources: [any DispatchSourceSignal] = []
    func fire() -> Bool {
        if fired { return false }
        fired = true
        return true
    }
}

struct StartupError: Error, CustomStringConvertible {
    var description: String
}
