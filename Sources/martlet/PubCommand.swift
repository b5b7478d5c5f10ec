import ArgumentParser
import MartletClient
import MartletMQTT
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// `martlet pub`: publish like mosquitto_pub.
struct PubCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pub",
        abstract: "Publish a message (flags as mosquitto_pub).",
        discussion: "Exit status: 0 sent, 1 bad usage or input, 2 connection/TLS/timeout failure, 3 refused by the broker, 4 publish refused.",
        helpNames: [.long]
    )

    @OptionGroup var connection: ConnectionOptions
    @Option(name: .customShort("t"), help: "Topic.") var topic: String?
    @Option(name: .customShort("m"), help: "Message payload.") var message: String?
    @Option(name: .customShort("f"), help: "Send the contents of a file as the payload.") var file: String?
    @Flag(name: .customShort("s"), help: "Read the payload from stdin.") var stdin = false
    @Flag(name: .customShort("l"), help: "Send each stdin line as a message, over one connection.") var lines = false
    @Flag(name: .customShort("n"), help: "Send a null (empty) message.") var null = false
    @Option(name: .customShort("q"), help: "QoS 0, 1 or 2.") var qos: UInt8 = 0
    @Flag(name: .customShort("r"), help: "Retain the message.") var retain = false

    func validate() throws {
        try connection.validateConnection()
        guard topic != nil || connection.urlTopic != nil else { throw ValidationError("a topic is required (-t or -L)") }
        let sources = [message != nil, file != nil, stdin, lines, null].filter { $0 }.count
        guard sources == 1 else { throw ValidationError("give exactly one of -m, -f, -s, -l, -n") }
        guard QoS(rawValue: qos) != nil else { throw ValidationError("-q must be 0, 1 or 2") }
        if let t = topic {
            do { try Topic.validateName(t) } catch { throw ValidationError("invalid topic \"\(t)\": \(error)") }
        }
    }

    func run() async throws {
        let topic = self.topic ?? connection.urlTopic!
        let q = QoS(rawValue: qos)!
        var payloads: [ByteBuffer] = []
        if let message { payloads = [ByteBuffer(string: message)] }
        if null { payloads = [ByteBuffer()] }
        if let file {
            guard let bytes = readFile(file) else {
                warn("Error: cannot read \(file)")
                throw ExitCode(1)
            }
            payloads = [ByteBuffer(bytes: bytes)]
        }
        if stdin { payloads = [ByteBuffer(bytes: readAllStandardInput())] }

        let client: MQTTClient
        do {
            client = try await MQTTClient.connect(try connection.clientConfiguration())
        } catch {
            throw ExitStatus.fail(error)
        }
        if connection.debug { warn("Client \(client.configuration.clientID) connected") }
        do {
            if lines {
                while let line = readLine(strippingNewline: true) {
                    try await client.publish(topic, payload: ByteBuffer(string: line), qos: q, retain: retain)
                }
            } else {
                for p in payloads { try await client.publish(topic, payload: p, qos: q, retain: retain) }
            }
            try await client.disconnect()
        } catch {
            try? await client.disconnect()
            throw ExitStatus.fail(error)
        }
    }
}

func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while case let n = fread(&chunk, 1, chunk.count, f), n > 0 { out += chunk[0..<n] }
    return out
}

func readAllStandardInput() -> [UInt8] {
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while case let n = read(0, &chunk, chunk.count), n > 0 { out += chunk[0..<n] }
    return out
}
