import MartletAuth
import MartletBroker
import Testing

/// `cluster:` in the config file: every key read, defaults, and errors that name the key.
@Suite struct ClusterConfigurationTests {
    func load(_ yaml: String) throws(ConfigurationError) -> ClusterConfiguration? {
        var c = DaemonConfiguration()
        try ConfigurationLoader.load(yaml: yaml, source: "test.yaml", into: &c)
        return c.broker.cluster
    }

    @Test("every key loads; what is left out has its default; without `cluster` there is none")
    func full() throws {
        let c = try #require(try load("""
            cluster:
              node_id: edge-1
              nats: ["nats://127.0.0.1:4222", "tls://nats.example.com:4443", "nats://[::1]:4222"]
              replicas: 5
              credentials_file: /etc/martlet/node.creds
              tls: {cafile: /etc/ssl/ca.pem, cert: /etc/ssl/n.pem, key: /etc/ssl/n.key}
              ack_timeout_ms: 1500
              max_pending_acks: 1000
              startup_timeout_ms: 0
              stream_max_age_s: 600
              stream_max_bytes: 2GiB
              checkpoint_interval_ms: 250
              session_load_timeout_ms: 3000
              heartbeat_interval_ms: 200
              node_timeout_ms: 900
            """))
        #expect(c.nodeID == "edge-1")
        #expect(c.servers == ["nats://127.0.0.1:4222", "tls://nats.example.com:4443", "nats://[::1]:4222"])
        #expect(c.replicas == 5)
        #expect(c.credentialsFile == "/etc/martlet/node.creds")
        #expect(c.caFile == "/etc/ssl/ca.pem" && c.certificateFile == "/etc/ssl/n.pem" && c.keyFile == "/etc/ssl/n.key")
        #expect(c.ackTimeout == 1500 && c.maximumPendingAcks == 1000 && c.startupTimeout == 0)
        #expect(c.streamMaximumAge == 600 && c.streamMaximumBytes == 2 << 30)
        #expect(c.checkpointInterval == 250 && c.heartbeatInterval == 200 && c.nodeTimeout == 900)
        #expect(c.sessionLoadTimeout == 3000)

        let d = try #require(try load("cluster: {node_id: a, nats: [\"nats://h:4222\"]}"))
        #expect(d.replicas == 3 && d.ackTimeout == 5000 && d.maximumPendingAcks == 65_536 && d.startupTimeout == 15_000)
        #expect(d.streamMaximumAge == 3600 && d.streamMaximumBytes == 1 << 30 && d.caFile == nil)
        #expect(d.checkpointInterval == 1000 && d.heartbeatInterval == 1000 && d.nodeTimeout == 5000)
        #expect(d.sessionLoadTimeout == 10_000)
        #expect(try load("threads: 1") == nil)
    }

    @Test("a bad entry names its key", arguments: [
        ("cluster: [a]", "cluster"),
        ("cluster: {nats: [\"nats://h:1\"]}", "cluster.node_id"),
        ("cluster: {node_id: a}", "cluster.nats"),
        ("cluster: {node_id: \"a b\", nats: [\"nats://h:1\"]}", "cluster.node_id"),
        ("cluster: {node_id: a, nats: []}", "cluster.nats"),
        ("cluster: {node_id: a, nats: [\"http://h:1\"]}", "cluster.nats[0]"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\", \"nats://h:99999\"]}", "cluster.nats[1]"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], replicas: 0}", "cluster.replicas"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], replicas: 6}", "cluster.replicas"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], ack_timeout_ms: 10}", "cluster.ack_timeout_ms"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], stream_max_bytes: 1KiB}", "cluster.stream_max_bytes"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], tls: {cert: /c.pem}}", "cluster.tls"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], tls: {ca: /c.pem}}", "cluster.tls.ca"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], replica: 3}", "cluster.replica"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], checkpoint_interval_ms: 5}", "cluster.checkpoint_interval_ms"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], session_load_timeout_ms: 0}", "cluster.session_load_timeout_ms"),
        ("cluster: {node_id: a, nats: [\"nats://h:1\"], heartbeat_interval_ms: 1000, node_timeout_ms: 1500}", "cluster.node_timeout_ms"),
    ])
    func badEntry(yaml: String, key: String) {
        do {
            _ = try load(yaml)
            Issue.record("\(yaml) loaded")
        } catch {
            #expect(error.key == key, "\(yaml): \(error)")
        }
    }
}
