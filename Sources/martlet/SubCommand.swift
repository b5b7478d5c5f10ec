import ArgumentParser
import Dispatch
import MartletClient
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// `martlet sub`: subscribe and print like mosquitto_sub.
struct SubCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sub",
        abstract: "Subscribe and print messages (flags as mosquitto_sub).",
        discussion: "Exit status: 0 done (-C reached or SIGINT), 2 connection/TLS failure, 3 refused by the broker, 4 subscription refused, 27 -W timeout.",
        helpNames: [.long]
    )

    @OptionGroup var connection: ConnectionOptions
    @Option(name: .customShort("t"), help: "Topic filter (repeatable).") var topics: [String] = []
    @Flag(name: .customShort("v"), help: "Print the topic before the payload.") var verbose = false
    @Option(name: .customShort("C"), help: "Exit after this many messages.") var count: Int?
    @Option(name: .customShort("W"), help: "Exit after this many seconds.") var timeout: Int?
    @Flag(name: .customShort("R"), help: "Do not print retained messages.") var skipRetained = false
    @Flag(name: .long, help: "Print only retained messages, then exit when the first live one arrives.") var retainedOnly = false
    @Option(name: .customShort("F"), help: "Output format: %t topic, %p payload, %q QoS, %r retain, %l length, %% percent.") var format: String?
    @Flag(name: .customShort("c"), help: "Persistent session (clean session 0); needs -i.") var persistent = false
    @Option(name: .customShort("q"), help: "QoS of the subscriptions.") var qos: UInt8 = 0

    func validate() throws {
        try connection.validateConnection()
        guard !topics.isEmpty || connection.urlTopic != nil else { throw ValidationError("at least one -t is required") }
        for t in topics {
            do { try Topic.validateFilter(t) } catch { throw ValidationError("invalid topic filter \"\(t)\": \(error)") }
        }
        guard QoS(rawValue: qos) != nil else { throw ValidationError("-q must be 0, 1 or 2") }
        if persistent && connection.clientID == nil { throw ValidationError("-c needs a client id (-i)") }
        if let count, count < 1 { throw ValidationError("-C must be at least 1") }
    }

    func run() async throws {
        let filters = topics.isEmpty ? [connection.urlTopic!] : topics
        let client: MQTTClient
        do {
            var config = try connection.clientConfiguration(cleanStart: !persistent)
            if persistent && config.version == .v5 { config.sessionExpiryInterval = UInt32.max }
            client = try await MQTTClient.connect(config)
            try await client.subscribe(filters.map { Subscription($0, qos: QoS(rawValue: qos)!) })
        } catch {
            throw ExitStatus.fail(error)
        }
        let outcome = await withTaskGroup(of: Int32.self) { group in
            group.addTask { await self.printMessages(client) }
            if let timeout {
                group.addTask {
                    try? await Task.sleep(for: .seconds(timeout))
                    return Task.isCancelled ? 0 : ExitStatus.timedOut
                }
            }
            group.addTask { await interrupted() }
            let first = await group.next() ?? 0
            group.cancelAll()
            return first
        }
        try? await client.disconnect()
        if outcome != 0 { throw ExitCode(outcome) }
    }

    /// Prints until -C is reached (0) or the connection closes (2).
    private func printMessages(_ client: MQTTClient) async -> Int32 {
        var printed = 0
        for await message in client.messages {
            if Task.isCancelled { return 0 }
            if retainedOnly && !message.retain { return 0 }
            if skipRetained && message.retain { continue }
            emit(line(for: message))
            printed += 1
            if let count, printed >= count { return 0 }
        }
        return Task.isCancelled ? 0 : ExitStatus.connectionFailed
    }

    private func line(for m: ReceivedMessage) -> [UInt8] {
        let payload = Array(m.payload.readableBytesView)
        guard let format else {
            return verbose ? Array((m.topic + " ").utf8) + payload : payload
        }
        var out: [UInt8] = []
        var chars = format.unicodeScalars.makeIterator()
        while let c = chars.next() {
            guard c == "%" else {
                out += Array(String(c).utf8)
                continue
            }
            switch chars.next() {
            case "t": out += Array(m.topic.utf8)
            case "p": out += payload
            case "q": out += Array(String(m.qos.rawValue).utf8)
            case "r": out += Array((m.retain ? "1" : "0").utf8)
            case "l": out += Array(String(payload.count).utf8)
            case "%": out.append(UInt8(ascii: "%"))
            case let other?: out += Array("%\(other)".utf8)
            case nil: out.append(UInt8(ascii: "%"))
            }
        }
        return out
    }

    private func emit(_ bytes: [UInt8]) {
        var line = bytes
        line.append(UInt8(ascii: "\n"))
        _ = line.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
    }
}

/// Returns 0 when SIGINT or SIGTERM arrives (a clean exit, as mosquitto_sub does), or when
/// the waiting task is cancelled because the command finished for another reason.
func interrupted() async -> Int32 {
    let once = SignalOnce()
    return await withTaskCancellationHandler {
        await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
            once.arm(continuation)
        }
    } onCancel: {
        once.fire()
    }
}

/// Resumes its continuation exactly once: on SIGINT/SIGTERM or on cancellation.
final class SignalOnce: Sendable {
    private let state = NIOLockedValueBox<(continuation: CheckedContinuation<Int32, Never>?, fired: Bool)>((nil, false))
    private let sources = NIOLockedValueBox<[SignalSourceBox]>([])

    /// Wraps a signal source so it can sit in a lock box; it is only kept alive, never used.
    struct SignalSourceBox: @unchecked Sendable {
        // Safe: never read after being stored; it only keeps the source alive.
        let source: any DispatchSourceSignal
    }

    func arm(_ continuation: CheckedContinuation<Int32, Never>) {
        let alreadyFired = state.withLockedValue { s -> Bool in
            if s.fired { return true }
            s.continuation = continuation
            return false
        }
        if alreadyFired {
            continuation.resume(returning: 0)
            return
        }
        let queue = DispatchQueue(label: "martlet.signals")
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [weak self] in self?.fire() }
            source.resume()
            sources.withLockedValue { $0.append(SignalSourceBox(source: source)) }
        }
    }

    func fire() {
        let c = state.withLockedValue { s -> CheckedContinuation<Int32, Never>? in
            s.fired = true
            defer { s.continuation = nil }
            return s.continuation
        }
        c?.resume(returning: 0)
    }
}
