#if canImport(Glibc)
import Glibc
#endif
import MartletAuth
import MartletBroker
import MartletMQTT
import NIOCore
import Testing

@Suite struct ConfigurationLoaderTests {
    func load(_ yaml: String) throws(ConfigurationError) -> DaemonConfiguration {
        var c = DaemonConfiguration()
        try ConfigurationLoader.load(yaml: yaml, source: "test.yaml", into: &c)
        return c
    }

    @Test func shippedConfigFileLoadsWithItsDocumentedDefaults() throws {
        let path = String(#filePath.prefix(upTo: #filePath.range(of: "/Tests/")!.lowerBound)) + "/config/martlet.yaml"
        let text = try String(decoding: readAll(path), as: UTF8.self)
        let c = try load(text)
        let d = DaemonConfiguration()
        #expect(c.broker.listeners == [.init(host: "127.0.0.1", port: 1883)])
        #expect(c.logLevel == d.logLevel)
        #expect(c.slowConsumerPolicy == d.slowConsumerPolicy)
        // The file turns persistence on (in memory is the built-in default) under data/, which
        // `make run` creates; every other value it shows is the built-in default.
        #expect(c.broker.persistence == BrokerConfiguration.Persistence(path: "data/martlet.db", sync: .durable, commitInterval: .milliseconds(2)))
        var rest = c.broker
        rest.persistence = nil
        #expect(rest == d.broker)
    }

    @Test func backpressureKeysAndPerListenerPolicy() throws {
        var c = try load("""
            listeners:
              - port: 1883
              - port: 1884
                slow_consumer_policy: disconnect
                max_connections: 10
            slow_consumer_policy: drop-old
            max_queued_bytes: 1000
            max_queued_bytes_total: 5000
            inbound_high_water_bytes: 4000
            inbound_low_water_bytes: 2000
            max_connections: 50
            max_connection_rate: 20
            max_topic_levels: 8
            write_timeout_ms: 250
            """)
        try c.finish(source: "test.yaml")
        #expect(c.broker.listeners.map(\.slowConsumerPolicy) == [.dropOld, .disconnect])
        #expect(c.broker.listeners.map(\.maximumConnections) == [0, 10])
        #expect(c.broker.maximumQueuedBytes == 1000)
        #expect(c.broker.maximumQueuedBytesTotal == 5000)
        #expect(c.broker.inboundHighWaterBytes == 4000)
        #expect(c.broker.maximumConnections == 50)
        #expect(c.broker.maximumConnectionRate == 20)
        #expect(c.broker.maximumTopicLevels == 8)
        #expect(c.broker.writeTimeout == .milliseconds(250))
    }

    @Test("metrics, allow_anonymous, use_identity_as_username and security paths refuse bad values, naming the key")
    func badSecurityAndMetricsValues() throws {
        #expect(throws: ConfigurationError(source: "test.yaml", key: "metrics.port", line: 2, message: "expected a port in 0...65535, got \"http\"")) {
            _ = try load("metrics:\n  port: http\n")
        }
        #expect(throws: ConfigurationError(source: "test.yaml", key: "metrics.path", line: 2, message: "unknown key")) {
            _ = try load("metrics:\n  path: /m\n")
        }
        #expect(throws: ConfigurationError(source: "test.yaml", key: "listeners[0].allow_anonymous", line: 2, message: "expected true or false, got \"maybe\"")) {
            _ = try load("listeners:\n  - allow_anonymous: maybe\n")
        }
        #expect(throws: ConfigurationError.self) { _ = try load("listeners:\n  - port: 1883\n    use_identity_as_username: true\n") }
        // Behind a proxy that terminates TLS, the identity comes in the PROXY v2 header.
        #expect(try load("listeners:\n  - port: 1883\n    proxy_protocol: true\n    use_identity_as_username: true\n").broker.listeners[0].useIdentityAsUsername)
        #expect(throws: ConfigurationError(source: "test.yaml", key: "sys_interval_s", line: 1, message: "expected an integer in 0...86400, got \"-1\"")) {
            _ = try load("sys_interval_s: -1\n")
        }
        #expect(throws: ConfigurationError(source: "test.yaml", key: "tcp_defer_accept_s", line: 1, message: "expected an integer in 0...60, got \"61\"")) {
            _ = try load("tcp_defer_accept_s: 61\n")
        }
        #expect(try load("tcp_defer_accept_s: 0\n").broker.tcpDeferAccept == 0)
        #expect(throws: ConfigurationError(source: "test.yaml", key: "log_format", line: 1, message: "expected text or json, got \"xml\"")) {
            _ = try load("log_format: xml\n")
        }
        #expect(throws: ConfigurationError(source: "test.yaml", key: "pause_publishers_for_slow_subscribers", line: 1, message: "expected true or false, got \"sometimes\"")) {
            _ = try load("pause_publishers_for_slow_subscribers: sometimes\n")
        }
        #expect(throws: ConfigurationError(source: "test.yaml", key: "subscriber_stall_timeout_ms", line: 1, message: "expected an integer in 10...3600000, got \"5\"")) {
            _ = try load("subscriber_stall_timeout_ms: 5\n")
        }
        #expect(throws: ConfigurationError(source: "test.yaml", key: "listen_per_thread", line: 1, message: "expected true or false, got \"2\"")) {
            _ = try load("listen_per_thread: 2\n")
        }
        #expect(try load("listen_per_thread: false\n").broker.listenPerThread == false)
        let paced = try load("pause_publishers_for_slow_subscribers: false\nsubscriber_stall_timeout_ms: 250\n")
        #expect(paced.broker.pausePublishersForSlowSubscribers == false)
        #expect(paced.broker.subscriberStallTimeout == .milliseconds(250))
        let c = try load("metrics:\n  port: 9999\n")
        #expect(c.broker.metrics == .init(host: "127.0.0.1", port: 9999))
    }

    @Test func keysThatMustAgreeAreChecked() throws {
        var c = try load("inbound_high_water_bytes: 100\ninbound_low_water_bytes: 100\n")
        #expect(throws: ConfigurationError(source: "test.yaml", key: "inbound_low_water_bytes", line: nil, message: "must be below inbound_high_water_bytes (100)")) {
            try c.finish(source: "test.yaml")
        }
        var d = try load("max_queued_bytes_total: 10\n")
        #expect(throws: ConfigurationError.self) { try d.finish(source: "test.yaml") }
        #expect(throws: ConfigurationError(source: "test.yaml", key: "listeners[0].slow_consumer_policy", line: 2, message: "expected one of drop-new, drop-old, disconnect, got \"drop-all\"")) {
            _ = try load("listeners:\n  - slow_consumer_policy: drop-all\n")
        }
    }

    @Test func valuesAndListeners() throws {
        let c = try load("""
            listeners:
              - host: 0.0.0.0
                port: 1884
              - port: 0
            max_inflight: 5
            connect_timeout_ms: 250
            log_level: debug
            """)
        #expect(c.broker.listeners == [.init(host: "0.0.0.0", port: 1884), .init(host: "127.0.0.1", port: 0)])
        #expect(c.broker.maximumInflight == 5)
        #expect(c.broker.connectTimeout == .milliseconds(250))
        #expect(c.logLevel == "debug")
    }

    @Test func tlsListener() throws {
        let c = try load("""
            listeners:
              - port: 8883
                tls:
                  cert: /etc/martlet/server.pem
                  key: /etc/martlet/server.key
                  cafile: /etc/martlet/ca.pem
                  require_certificate: true
                  min_version: "1.3"
            """)
        let tls = try #require(c.broker.listeners.first?.tls)
        #expect(tls.certificateChainFile == "/etc/martlet/server.pem")
        #expect(tls.privateKeyFile == "/etc/martlet/server.key")
        #expect(tls.caFile == "/etc/martlet/ca.pem")
        #expect(tls.peerVerification == .required)
        #expect(tls.minimumVersion == .tls13)
    }

    @Test func emptyFileKeepsDefaults() throws {
        #expect(try load("").broker.maximumInflight == 20)
        #expect(try load("# only a comment\n").broker.listeners.count == 1)
    }

    @Test(arguments: [
        ("max_inflght: 3\n", "max_inflght", 1, "unknown key"),
        ("threads: 1\nmax_inflight: many\n", "max_inflight", 2, "expected an integer in 1...65535, got \"many\""),
        ("max_packet_size: 8\n", "max_packet_size", 1, "expected an integer in 16...268435460, got \"8\""),
        ("log_level: loud\n", "log_level", 1, "expected one of trace, debug, info, notice, warning, error, critical, got \"loud\""),
        ("listeners:\n  - host: a\n    port: 70000\n", "listeners[0].port", 3, "expected a port in 0...65535, got \"70000\""),
        ("listeners:\n  - host: a\n    colour: red\n", "listeners[0].colour", 3, "unknown key"),
        ("listeners:\n  - port: 8883\n    tls:\n      cert: a.pem\n", "listeners[0].tls", 4, "a TLS listener needs cert and key"),
        ("listeners:\n  - port: 8883\n    tls:\n      cert: a.pem\n      key: a.key\n      require_certificate: true\n", "listeners[0].tls.require_certificate", 4, "requires cafile or capath"),
        ("listeners:\n  - port: 8883\n    tls:\n      cert: a.pem\n      key: a.key\n      min_version: 1.1\n", "listeners[0].tls.min_version", 6, "expected \"1.2\" or \"1.3\", got \"1.1\""),
        ("listeners: 1883\n", "listeners", 1, "expected a list of {host, port}"),
        ("max_inflight: [1, 2]\n", "max_inflight", 1, "expected an integer in 1...65535, got a list"),
        ("max_retained_messages: -1\n", "max_retained_messages", 1, "expected an integer in 0...1000000000, got \"-1\""),
        ("session_other_identity: maybe\n", "session_other_identity", 1, "expected refuse or discard, got \"maybe\""),
        ("max_topic_alias_out: -1\n", "max_topic_alias_out", 1, "expected an integer in 0...65535, got \"-1\""),
        ("reason_strings: perhaps\n", "reason_strings", 1, "expected true or false, got \"perhaps\""),
        ("server_reference: \"a b\"\n", "server_reference", 1, "expected another server's host[:port], or empty, got \"a b\""),
        ("server_moved: 2\n", "server_moved", 1, "expected true or false, got \"2\""),
        ("shared_subscription_strategy: fair\n", "shared_subscription_strategy", 1, "expected balanced, round_robin, random or sticky, got \"fair\""),
        ("receive_maximum: 0\n", "receive_maximum", 1, "expected an integer in 1...65535, got \"0\""),
        ("max_topic_alias: 70000\n", "max_topic_alias", 1, "expected an integer in 0...65535, got \"70000\""),
        ("max_qos: 3\n", "max_qos", 1, "expected an integer in 0...2, got \"3\""),
        ("retain_available: sometimes\n", "retain_available", 1, "expected true or false, got \"sometimes\""),
        ("response_information: \"replies/#\"\n", "response_information", 1, "expected a topic prefix, got \"replies/#\""),
        ("listeners:\n  - port: 8080\n    websocket: maybe\n", "listeners[0].websocket", 3, "expected true or false, got \"maybe\""),
        ("listeners:\n  - port: 8080\n    path: mqtt\n", "listeners[0].path", 3, "expected a URL path such as /mqtt, got \"mqtt\""),
        ("listeners:\n  - port: 8080\n    allowed_origins: https://a.example\n", "listeners[0].allowed_origins", 3,
         "expected a list of origins such as https://app.example.com, got \"https://a.example\""),
        ("max_http_header_bytes: 10\n", "max_http_header_bytes", 1, "expected an integer in 256...1048576, got \"10\""),
        ("trusted_proxies: 10.0.0.1\n", "trusted_proxies", 1, "expected a list of addresses or networks (CIDR)"),
        ("trusted_proxies: [10.0.0.1, lb.local]\n", "trusted_proxies[1]", 1, "expected an IP address or a network such as 10.0.0.0/8, got \"lb.local\""),
        ("listeners:\n  - port: 1883\n    proxy_protocol: yes please\n", "listeners[0].proxy_protocol", 3, "expected true or false, got \"yes please\""),
        ("persistence: a.db\n", "persistence", 1, "expected {path, sync, commit_interval_ms, max_pending_records}"),
        ("persistence:\n  path: a.db\n  max_pending_records: 0\n", "persistence.max_pending_records", 3, "expected an integer in 1...100000000, got \"0\""),
        ("persistence:\n  sync: durable\n", "persistence.path", 2, "missing: the store's file"),
        ("persistence:\n  path: a.db\n  sync: sometimes\n", "persistence.sync", 3, "expected durable or periodic, got \"sometimes\""),
        ("persistence:\n  path: a.db\n  commit_interval_ms: -5\n", "persistence.commit_interval_ms", 3, "expected an integer in 0...60000, got \"-5\""),
        ("persistence:\n  path: a.db\n  sync: periodic\n  commit_interval_ms: 0\n", "persistence.commit_interval_ms", 2, "must be at least 1 with sync: periodic"),
        ("persistence:\n  path: a.db\n  colour: red\n", "persistence.colour", 3, "unknown key"),
        ("admin_token_file: \"\"\n", "admin_token_file", 1, "expected a file path, got \"\""),
        ("admin_user: \"\"\n", "admin_user", 1, "expected a user name, got \"\""),
        ("metrics:\n  port: 9883\n  tls: {cert: a.pem}\n", "metrics.tls", 3, "a TLS listener needs cert and key"),
    ])
    func badInputNamesTheKeyAndLine(_ yaml: String, _ key: String, _ line: Int, _ message: String) {
        #expect(throws: ConfigurationError(source: "test.yaml", key: key, line: line, message: message)) {
            try load(yaml)
        }
    }

    @Test("WebSocket listeners: websocket, path (default /mqtt), allowed_origins, and max_http_header_bytes are read")
    func webSocketKeys() throws {
        let c = try load("listeners:\n  - port: 8080\n    websocket: true\n    path: /ws\n    allowed_origins: [\"https://app.example\"]\n  - port: 8081\n    websocket: true\nmax_http_header_bytes: 4096\n").broker
        #expect(c.listeners.map(\.webSocket) == [true, true])
        #expect(c.listeners.map(\.webSocketPath) == ["/ws", "/mqtt"])
        #expect(c.listeners[0].allowedOrigins == ["https://app.example"] && c.listeners[1].allowedOrigins.isEmpty)
        #expect(c.maximumHTTPHeaderBytes == 4096 && BrokerConfiguration().maximumHTTPHeaderBytes == 8192)
    }

    @Test("proxy_protocol per listener and trusted_proxies (addresses and networks) are read")
    func proxyKeys() throws {
        let c = try load("listeners:\n  - port: 1883\n    proxy_protocol: true\n  - port: 1884\ntrusted_proxies: [10.0.0.0/8, \"::1\", 192.168.1.5]\n").broker
        #expect(c.listeners.map(\.proxyProtocol) == [true, false])
        #expect(c.trustedProxies.map(\.description) == ["10.0.0.0/8", "::1", "192.168.1.5"])
        #expect(try load("").broker.trustedProxies.isEmpty)
    }

    @Test("persistence: the path, the sync mode and the commit interval are read; each mode has its own default interval")
    func persistenceKeys() throws {
        let periodic = try load("persistence:\n  path: /var/lib/martlet/store.db\n  sync: periodic\n  commit_interval_ms: 250\n  max_pending_records: 5000\n").broker.persistence
        #expect(periodic == .init(path: "/var/lib/martlet/store.db", sync: .periodic, commitInterval: .milliseconds(250), maximumPendingRecords: 5000))
        let durable = try #require(try load("persistence:\n  path: s.db\n").broker.persistence)
        #expect(durable.sync == .durable && durable.effectiveCommitInterval == .milliseconds(2))
        #expect(BrokerConfiguration.Persistence(path: "s.db", sync: .periodic).effectiveCommitInterval == .seconds(1))
        #expect(try load("").broker.persistence == nil)
    }

    @Test("the session, MQTT 5 limit and response keys are read")
    func sessionAndV5Keys() throws {
        let c = try load("""
            session_other_identity: discard
            receive_maximum: 5
            max_topic_alias: 0
            max_qos: 1
            retain_available: false
            response_information: replies/
            shared_subscription_strategy: round_robin
            reason_strings: false
            server_reference: "b2.example:1883"
            server_moved: true
            max_topic_alias_out: 3
            """)
        #expect(c.broker.sessionOtherIdentity == .discard)
        #expect(c.broker.receiveMaximum == 5 && c.broker.maximumTopicAlias == 0)
        #expect(c.broker.maximumQoS == .atLeastOnce && !c.broker.retainAvailable)
        #expect(c.broker.responseInformationPrefix == "replies/")
        #expect(c.broker.sharedSubscriptionStrategy == .roundRobin)
        #expect(!c.broker.reasonStrings && BrokerConfiguration().reasonStrings)
        #expect(c.broker.serverReference == "b2.example:1883" && c.broker.serverMoved)
        #expect(c.broker.maximumTopicAliasOut == 3)
    }

    @Test func notYAMLAtAll() {
        #expect(throws: ConfigurationError.self) { try load("a: [1, 2\n") }
        #expect(throws: ConfigurationError.self) { try load("- just\n- a list\n") }
    }

    @Test func environmentOverridesTheFile() throws {
        var c = try load("max_inflight: 5\nmax_queued_messages: 7\n")
        try ConfigurationLoader.applyEnvironment(["MARTLET_MAX_INFLIGHT": "9", "OTHER": "x"], into: &c)
        #expect(c.broker.maximumInflight == 9)
        #expect(c.broker.maximumQueuedMessages == 7)
        #expect(throws: ConfigurationError(source: "environment", key: "MARTLET_THREADS", line: nil, message: "expected an integer in 0...1024, got \"-1\"")) {
            try ConfigurationLoader.applyEnvironment(["MARTLET_THREADS": "-1"], into: &c)
        }
    }
}

func readAll(_ path: String) throws -> [UInt8] {
    guard let f = fopen(path, "r") else { throw ConfigurationError(source: path, key: "", line: nil, message: "missing") }
    defer { fclose(f) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while case let n = fread(&chunk, 1, chunk.count, f), n > 0 { out += chunk[0..<n] }
    return out
}
