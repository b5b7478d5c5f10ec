import Foundation
import Logging
import MartletBroker
@testable import MartletCluster
import MartletClient
import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Three NATS servers clustered with JetStream (Debian's nats-server) and martletd nodes with
/// `cluster:` in their config files, all on 127.0.0.1 ports of this test's own; stopped by
/// `stop()` (and killed with the test process if it dies first).
final class ClusterFixture: @unchecked Sendable {
    // @unchecked: the process lists are changed only by the one test that owns the fixture,
    // from its own task, one step at a time.
    struct NATSServer {
        var client: Int
        var http: Int
        var route: Int
        var config: String
        var process: ChildProcess?
    }

    struct Node {
        var id: String
        var port: Int
        var metrics: Int
        var config: String
        var process: ChildProcess?
    }

    let directory: String
    var servers: [NATSServer] = []
    /// Ports given out by this fixture: `randomTestPort` checks each is free when picked, but
    /// not bound yet, it could pick one twice.
    private var taken: Set<Int> = []

    func port() -> Int {
        while true {
            let p = randomTestPort()
            if taken.insert(p).inserted { return p }
        }
    }
    var nodes: [Node] = []
    /// Debian installs it in /usr/sbin.
    static let natsServer = "/usr/sbin/nats-server"

    /// `natsExtra`: more lines for every nats-server's configuration.
    init(servers count: Int = 3, clustered: Bool = true, jetStream: Bool = true, natsExtra: String = "") throws {
        directory = scratchPath("martlet-cluster")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for i in 0..<count {
            servers.append(NATSServer(client: port(), http: port(), route: port(), config: "\(directory)/nats\(i).conf"))
        }
        for (i, s) in servers.enumerated() {
            var text = """
                server_name: n\(i)
                listen: 127.0.0.1:\(s.client)
                http: 127.0.0.1:\(s.http)

                """
            text += natsExtra + "\n"
            if jetStream { text += "jetstream { store_dir: \"\(directory)/js\(i)\", max_memory_store: 64MB, max_file_store: 8GB }\n" }
            if clustered {
                let routes = servers.map { "nats-route://127.0.0.1:\($0.route)" }.joined(separator: ", ")
                text += "cluster { name: martlet, listen: 127.0.0.1:\(s.route), routes: [\(routes)] }\n"
            }
            try text.write(toFile: s.config, atomically: true, encoding: .utf8)
        }
    }

    /// Starts every NATS server and waits until each says it is healthy.
    func startNATS() async throws {
        try await startNATS(Array(servers.indices))
    }

    /// Starts the servers `indices` together (a JetStream cluster is healthy only once a
    /// quorum of its servers runs), then waits until each says it is healthy.
    func startNATS(_ indices: [Int]) async throws {
        for i in indices { servers[i].process = try ChildProcess(Self.natsServer, ["-c", servers[i].config]) }
        for i in indices {
            try await waitUntilListening(UInt16(servers[i].client), timeout: .seconds(20))
            let port = servers[i].http
            try await waitFor(.seconds(60), "nats-server \(i) healthy", every: .milliseconds(200)) { () async throws -> Bool? in
                try await Self.get(port, "/healthz").contains("\"ok\"") ? true : nil
            }
        }
    }

    func killNATS(_ i: Int) {
        servers[i].process?.kill()
        servers[i].process = nil
    }

    /// The `cluster:` entry of node `id`: its own NATS server first, then the others.
    func clusterEntry(_ id: String, server: Int, replicas: Int = 3, nodeTimeout: Int = 1500, ackTimeout: Int = 2000,
                      extra: String = "") -> String {
        let urls = ([servers[server]] + servers.enumerated().filter { $0.offset != server }.map(\.element))
            .map { "\"nats://127.0.0.1:\($0.client)\"" }.joined(separator: ", ")
        return """
            cluster:
              node_id: \(id)
              nats: [\(urls)]
              replicas: \(replicas)
              startup_timeout_ms: 30000
              ack_timeout_ms: \(ackTimeout)
              heartbeat_interval_ms: 300
              node_timeout_ms: \(nodeTimeout)
            \(extra)
            """
    }

    /// Adds node `id` served by NATS server `server` (index), and starts it.
    @discardableResult
    /// `settings`: more top-level lines of its configuration.
    func addNode(_ id: String, server: Int, replicas: Int = 3, nodeTimeout: Int = 1500, ackTimeout: Int = 2000, extra: String = "",
                 settings: String = "", logLevel: String = "info") async throws -> Node {
        let node = Node(id: id, port: port(), metrics: port(), config: "\(directory)/\(id).yaml")
        let text = """
            listeners: [{host: 127.0.0.1, port: \(node.port)}]
            metrics: {host: 127.0.0.1, port: \(node.metrics)}
            log_level: \(logLevel)
            sys_interval_s: 0
            \(settings)

            """ + clusterEntry(id, server: server, replicas: replicas, nodeTimeout: nodeTimeout, ackTimeout: ackTimeout, extra: extra)
        try text.write(toFile: node.config, atomically: true, encoding: .utf8)
        nodes.append(node)
        try await startNode(nodes.count - 1)
        return nodes[nodes.count - 1]
    }

    /// The index of the server that leads the stream MARTLET_MESSAGES (from server 0's
    /// monitoring endpoint; servers are named n0, n1, …).
    func streamLeader() async throws -> Int {
        try await waitFor(.seconds(20), "the stream's leader", every: .milliseconds(200)) { () async throws -> Int? in
            let text = try await Self.get(self.servers[0].http, "/jsz?accounts=true&streams=true")
            guard let data = text.data(using: .utf8),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let accounts = json["account_details"] as? [[String: Any]] else { return nil }
            for account in accounts {
                for stream in account["stream_detail"] as? [[String: Any]] ?? [] where stream["name"] as? String == "MARTLET_MESSAGES" {
                    if let leader = (stream["cluster"] as? [String: Any])?["leader"] as? String, leader.hasPrefix("n") {
                        return Int(leader.dropFirst())
                    }
                }
            }
            return nil
        }
    }

    /// A NATS connection of the test's own (`ClusterNode.join`, no broker) for reading the
    /// cluster's buckets.
    func recordReader(servers indices: [Int]? = nil) throws -> ClusterNode {
        let urls = (indices ?? Array(servers.indices)).map { "nats://127.0.0.1:\(servers[$0].client)" }
        var configuration = ClusterConfiguration(nodeID: "reader", servers: urls)
        configuration.replicas = servers.count
        return try ClusterNode.join(configuration, logger: Logger(label: "test.reader"))
    }

    /// The owner of `clientID`'s session record once it has stopped changing (the same for
    /// 500 ms; records are written asynchronously), nil if there is none.
    func settledRecordOwner(_ reader: ClusterNode, clientID: String) async throws -> String? {
        let store = ClusterNode.sessionStore(reader.handle)
        var last: (String?, UInt64)? = nil
        var stableSince = ContinuousClock.now
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let (status, record, revision) = store.read(ClusterSubjects.key(topic: clientID))
            if status < 0 {
                // No answer (a stream electing its leader): not a value.
                try await Task.sleep(for: .milliseconds(50))
                continue
            }
            let now = (record?.owner, revision)
            if let last, last == now {
                if ContinuousClock.now - stableSince >= .milliseconds(500) { return now.0 }
            } else {
                last = now
                stableSince = ContinuousClock.now
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return last?.0
    }

    func startNode(_ i: Int) async throws {
        nodes[i].process = try ChildProcess(DaemonTests.martletd, ["--config", nodes[i].config])
        try await waitUntilListening(UInt16(nodes[i].port), timeout: .seconds(40))
    }

    func killNode(_ i: Int) {
        nodes[i].process?.kill()
        nodes[i].process = nil
    }

    func stop() {
        for i in nodes.indices { killNode(i) }
        for i in servers.indices { killNATS(i) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A client of node `i`.
    func client(_ i: Int, _ id: String, version: ProtocolVersion = .v5, clean: Bool = true,
                configure: (inout MQTTClientConfiguration) -> Void = { _ in }) async throws -> MQTTClient {
        var c = MQTTClientConfiguration(port: nodes[i].port, clientID: id)
        c.version = version
        c.cleanStart = clean
        configure(&c)
        return try await MQTTClient.connect(c)
    }

    /// Publishes `payload` at QoS 1 again every 200 ms while the cluster refuses it (no
    /// JetStream leader yet), until it is acknowledged or `timeout` passes.
    static func publishUntilAcknowledged(_ client: MQTTClient, _ topic: String, _ payload: String, timeout: Duration) async throws {
        try await waitFor(timeout, "\(topic) acknowledged", every: .milliseconds(200)) { () async throws -> Bool? in
            do {
                try await client.publish(topic, payload: ByteBuffer(string: payload), qos: .atLeastOnce)
                return true
            } catch MQTTClientError.refused {
                return nil
            }
        }
    }

    /// A Prometheus figure of node `i` (the sum of the lines that start with `name`).
    func metric(_ i: Int, _ name: String) async throws -> Int {
        let text = try await Self.get(nodes[i].metrics, "/metrics")
        return text.split(separator: "\n").filter { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }
            .compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }.reduce(0, +)
    }

    static func get(_ port: Int, _ path: String) async throws -> String {
        let fetch = """
            import sys, urllib.request
            try:
                print(urllib.request.urlopen('http://127.0.0.1:%s%s' % (sys.argv[1], sys.argv[2]), timeout=5).read().decode())
            except Exception as e:
                print('error', e)
            """
        return try await run(debianPython, ["-c", fetch, "\(port)", path]).stdout
    }

    /// Publishes QoS 0 probes on `probeTopic` from `publisher` until every client in
    /// `subscribers` has one: the NATS interest of their nodes has reached the publisher's.
    static func waitForInterest(publisher: MQTTClient, probeTopic: String, subscribers: [MQTTClient]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for s in subscribers {
                group.addTask {
                    _ = try await BridgeTests.collect(from: s, timeout: .seconds(30)) { got in got.contains { $0.topic == probeTopic } }
                }
            }
            group.addTask {
                for _ in 0..<300 {
                    try await publisher.publish(probeTopic, payload: ByteBuffer(string: "probe"))
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            for _ in subscribers { try await group.next() }
            group.cancelAll()
        }
    }
}
