import Foundation
import Logging
import MartletBroker
import MartletTLS

/// Helpers shared by the test targets: an in-process broker, development certificates, and
/// a compact byte notation. No test framework here, so any target can use them.

/// A broker started in-process on 127.0.0.1, port 0, with two event loops and one listening
/// socket, so connections alternate between the loops and cross-loop routing is exercised
/// by every test with two clients (ListenerTests covers `listen_per_thread`, where the
/// kernel picks the loop), and short timers so tests stay fast. `body` gets the
/// broker and the first listener's port; the broker is shut down afterwards either way.
public func withBroker<T>(
    _ configure: (inout BrokerConfiguration) -> Void = { _ in },
    _ body: (MQTTBroker, Int) async throws -> T
) async throws -> T {
    var config = BrokerConfiguration()
    config.listeners = [.init(host: "127.0.0.1", port: 0)]
    config.eventLoops = 2
    config.listenPerThread = false
    config.keepaliveSweepInterval = .milliseconds(100)
    // Long enough that a busy test machine never trips it by accident; the tests of the
    // timeout itself set a short one.
    config.connectTimeout = .seconds(10)
    // $SYS messages are retained; tests that count retained messages would see them.
    config.sysInterval = .zero
    // Tests compare whole CONNACK and DISCONNECT packets; ReasonStringTests turn it on.
    config.reasonStrings = false
    configure(&config)
    var logger = Logger(label: "test-broker")
    // MARTLET_TEST_LOG=debug shows the broker's log while debugging a test.
    logger.logLevel = ProcessInfo.processInfo.environment["MARTLET_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    let broker = MQTTBroker(configuration: config, logger: logger)
    try await broker.start()
    let port = broker.localAddresses.first!.port!
    do {
        let result = try await body(broker, port)
        try await broker.shutdown()
        return result
    } catch {
        try? await broker.shutdown()
        throw error
    }
}

/// Bytes from a compact notation: hex pairs and 'ascii' tokens separated by spaces,
/// so "30 07 00 03 'a/b' 'hi'" is a whole PUBLISH.
public func h(_ notation: String) -> [UInt8] {
    var out: [UInt8] = []
    for token in notation.split(separator: " ") {
        if token.hasPrefix("'") && token.hasSuffix("'") && token.count >= 2 {
            out += Array(token.dropFirst().dropLast().utf8)
        } else {
            out.append(UInt8(token, radix: 16)!)
        }
    }
    return out
}

/// The repository root, for scripts and built executables.
public let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A directory for the files this test process writes (configs, certificates, logs),
/// made on first use and removed with everything in it when the process exits, so test runs
/// leave nothing behind in the system temporary directory.
public let scratchDirectory: String = {
    let dir = NSTemporaryDirectory() + "martlet-tests-\(getpid())-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: scratchDirectory) }
    return dir
}()

/// A fresh path in `scratchDirectory`: `name`, a unique part, then `suffix` (e.g. ".conf").
public func scratchPath(_ name: String, suffix: String = "") -> String {
    scratchDirectory + "/" + name + "-" + UUID().uuidString + suffix
}

/// Development certificates made by certs/make-dev-certs.sh: a CA, a server certificate for
/// localhost / 127.0.0.1 / ::1 and a client certificate.
public struct DevCertificates: Sendable {
    public let directory: String
    public var ca: String { directory + "/ca.pem" }
    public var serverCert: String { directory + "/server.pem" }
    public var serverKey: String { directory + "/server.key" }
    public var clientCert: String { directory + "/client.pem" }
    public var clientKey: String { directory + "/client.key" }

    public static func freshDirectory() -> String {
        scratchPath("certs")
    }

    private static func start(_ dir: String) throws -> SpawnedProcess {
        try SpawnedProcess("/bin/bash", [repositoryRoot.appendingPathComponent("certs/make-dev-certs.sh").path, dir], captureOutput: false)
    }

    /// Makes (or remakes, over the same files) certificates in `dir` without blocking a
    /// concurrency thread: tests share very few of them.
    public static func make(into dir: String = freshDirectory()) async throws -> DevCertificates {
        let p = try start(dir)
        while p.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        guard p.terminationStatus == 0 else { throw TLSError.configuration("make-dev-certs.sh failed") }
        return DevCertificates(directory: dir)
    }

    /// For synchronous tests: blocks the calling thread while openssl runs.
    public static func makeBlocking(into dir: String = freshDirectory()) throws -> DevCertificates {
        let p = try start(dir)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TLSError.configuration("make-dev-certs.sh failed") }
        return DevCertificates(directory: dir)
    }

    /// The broker's side: a TLS server with this certificate; mutual TLS when asked.
    public func server(requireClientCertificate: Bool = false) -> TLSConfiguration {
        var tls = TLSConfiguration.server(certificateChainFile: serverCert, privateKeyFile: serverKey)
        if requireClientCertificate {
            tls.peerVerification = .required
            tls.caFile = ca
        }
        return tls
    }

    /// A client context trusting this CA, for 127.0.0.1, optionally with the client certificate.
    public func client(withCertificate: Bool = false) throws -> TLSContext {
        var c = TLSConfiguration.client(caFile: ca, serverName: "127.0.0.1")
        if withCertificate {
            c.certificateChainFile = clientCert
            c.privateKeyFile = clientKey
        }
        return try TLSContext(configuration: c, role: .client)
    }
}

/// What `waitFor` throws when its condition did not come true in time.
public struct WaitTimedOut: Error, CustomStringConvertible {
    public var what: String
    public var description: String { "timed out waiting for \(what)" }
}

/// Polls `check` every `interval` until it returns a value or `timeout` passes.
@discardableResult
public func waitFor<T>(
    _ timeout: Duration, _ what: String, every interval: Duration = .milliseconds(10), _ check: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try await check() { return value }
        if ContinuousClock.now > deadline { throw WaitTimedOut(what: what) }
        try await Task.sleep(for: interval)
    }
}

/// Deterministic generator so a failing randomized case can be replayed.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
