import Foundation
import MartletAuth
import MartletBroker
import MartletMQTT
import MartletTestSupport
import Testing

/// `bridges:` in the config file: every key read, defaults, and errors that name the key.
@Suite struct BridgeConfigurationTests {
    func load(_ yaml: String) throws(ConfigurationError) -> [BridgeConfiguration] {
        var c = DaemonConfiguration()
        try ConfigurationLoader.load(yaml: yaml, source: "test.yaml", into: &c)
        return c.broker.bridges
    }

    func error(_ yaml: String) -> ConfigurationError? {
        do {
            _ = try load(yaml)
            return nil
        } catch {
            return error
        }
    }

    @Test("the issue's example loads: every key, sizes with units, prefixes, and the defaults of what it leaves out")
    func fullExample() throws {
        let passwordFile = scratchPath("bridge-password")
        try "s3cret\nignored second line\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
        let bridges = try load("""
            bridges:
              - name: cloud
                host: broker.example.com
                port: 8883
                protocol: mqttv311
                client_id: site1-bridge
                username: site1
                password_file: \(passwordFile)
                tls: {cafile: /etc/ssl/ca.pem, cert: /etc/ssl/c.pem, key: /etc/ssl/c.key, server_name: broker.example.com}
                clean_start: true
                session_expiry_s: 7200
                keepalive_s: 20
                topics:
                  - {filter: "sensors/#", direction: out, qos: 1, local_prefix: "", remote_prefix: "site1/"}
                  - {filter: "commands/#", direction: in, qos: 2, local_prefix: "site1/", remote_prefix: ""}
                  - {filter: "sync/+", direction: both}
                max_queued_messages: 5000
                max_queued_bytes: 64MiB
                queue_policy: drop-new
                reconnect_initial_ms: 100
                reconnect_max_ms: 5000
              - name: plain
                host: 10.0.0.2
                topics: [{filter: "#", direction: out}]
            """)
        #expect(bridges.count == 2)
        let b = bridges[0]
        #expect(b.name == "cloud" && b.host == "broker.example.com" && b.port == 8883)
        #expect(b.protocolVersion == .v3_1_1)
        #expect(b.effectiveClientID == "site1-bridge" && b.localClientID == "$bridge/cloud")
        #expect(b.username == "site1" && b.password == "s3cret")
        #expect(b.tls?.caFile == "/etc/ssl/ca.pem" && b.tls?.serverName == "broker.example.com" && b.tls?.peerVerification == .required)
        #expect(b.cleanStart && b.sessionExpiry == 7200 && b.keepAlive == 20)
        #expect(b.topics == [
            .init(filter: "sensors/#", direction: .out, qos: .atLeastOnce, localPrefix: "", remotePrefix: "site1/"),
            .init(filter: "commands/#", direction: .in, qos: .exactlyOnce, localPrefix: "site1/", remotePrefix: ""),
            .init(filter: "sync/+", direction: .both, qos: .atLeastOnce),
        ])
        #expect(b.maximumQueuedMessages == 5000 && b.maximumQueuedBytes == 64 << 20 && b.queuePolicy == .dropNew)
        #expect(b.reconnectInitialDelay == .milliseconds(100) && b.reconnectMaximumDelay == .seconds(5))
        let d = bridges[1]
        #expect(d.port == 1883 && d.protocolVersion == .v5 && d.effectiveClientID == "martlet-bridge-plain")
        #expect(!d.cleanStart && d.sessionExpiry == 3600 && d.keepAlive == 30 && d.tls == nil)
        #expect(d.maximumQueuedMessages == 100_000 && d.maximumQueuedBytes == 64 << 20 && d.queuePolicy == .dropOld)
    }

    @Test("a bad bridge entry names its key", arguments: [
        ("bridges: {name: x}", "bridges"),
        ("bridges: [{host: h, topics: [{filter: a, direction: out}]}, {host: h, topics: [{filter: b, direction: in}]}]", "bridges[1].name"),
        ("bridges: [{name: x, topics: [{filter: a, direction: out}]}]", "bridges[0].host"),
        ("bridges: [{name: x, host: h}]", "bridges[0].topics"),
        ("bridges: [{name: x, host: h, port: 0, topics: [{filter: a, direction: out}]}]", "bridges[0].port"),
        ("bridges: [{name: x, host: h, protocol: mqttv31, topics: [{filter: a, direction: out}]}]", "bridges[0].protocol"),
        ("bridges: [{name: x, host: h, colour: red, topics: [{filter: a, direction: out}]}]", "bridges[0].colour"),
        ("bridges: [{name: x, host: h, topics: [{filter: a, direction: sideways}]}]", "bridges[0].topics[0].direction"),
        ("bridges: [{name: x, host: h, topics: [{filter: a}]}]", "bridges[0].topics[0].direction"),
        ("bridges: [{name: x, host: h, topics: [{direction: in}]}]", "bridges[0].topics[0].filter"),
        ("bridges: [{name: x, host: h, topics: [{filter: 'a/#/b', direction: in}]}]", "bridges[0].topics[0].filter"),
        ("bridges: [{name: x, host: h, topics: [{filter: '$share/g/a', direction: in}]}]", "bridges[0].topics[0].filter"),
        ("bridges: [{name: x, host: h, topics: [{filter: a, direction: in, qos: 3}]}]", "bridges[0].topics[0].qos"),
        ("bridges: [{name: x, host: h, topics: [{filter: a, direction: in, local_prefix: 'a/+/'}]}]", "bridges[0].topics[0].local_prefix"),
        ("bridges: [{name: x, host: h, max_queued_bytes: 12XB, topics: [{filter: a, direction: out}]}]", "bridges[0].max_queued_bytes"),
        ("bridges: [{name: x, host: h, queue_policy: disconnect, topics: [{filter: a, direction: out}]}]", "bridges[0].queue_policy"),
        ("bridges: [{name: x, host: h, tls: {cert: c.pem}, topics: [{filter: a, direction: out}]}]", "bridges[0].tls.cert"),
        ("bridges: [{name: x, host: h, password_file: /nonexistent/pw, topics: [{filter: a, direction: out}]}]", "bridges[0].password_file"),
        ("bridges: [{name: x, host: h, reconnect_initial_ms: 9000, reconnect_max_ms: 100, topics: [{filter: a, direction: out}]}]", "bridges[0].reconnect_initial_ms"),
        ("bridges: [{name: 'a b', host: h, topics: [{filter: a, direction: out}]}]", "bridges[0].name"),
        ("bridges: [{name: x, host: h, topics: [{filter: a, direction: out}]}, {name: x, host: g, topics: [{filter: b, direction: in}]}]", "bridges[1].name"),
    ])
    func namesTheKey(yaml: String, key: String) {
        let e = error(yaml)
        #expect(e?.key == key, "\(yaml): \(e.map { "\($0)" } ?? "loaded")")
    }

    @Test("without a name, a bridge is named after its host and port; protocol takes mosquitto's mqttv50 too")
    func defaults() throws {
        let bridges = try load("bridges: [{host: 127.0.0.1, port: 1884, protocol: mqttv50, topics: [{filter: 'a/#', direction: out}]}]")
        #expect(bridges[0].name == "127.0.0.1_1884" && bridges[0].protocolVersion == .v5)
        #expect(bridges[0].localClientID == "$bridge/127.0.0.1_1884" && bridges[0].effectiveClientID == "martlet-bridge-127.0.0.1_1884")
    }

    @Test("sizes: bytes, KiB, MiB, GiB")
    func sizes() {
        #expect(ConfigurationLoader.byteSize("67108864") == 64 << 20)
        #expect(ConfigurationLoader.byteSize("512KiB") == 512 << 10)
        #expect(ConfigurationLoader.byteSize("64MiB") == 64 << 20)
        #expect(ConfigurationLoader.byteSize("2 GiB") == 2 << 30)
        #expect(ConfigurationLoader.byteSize("-1") == nil)
        #expect(ConfigurationLoader.byteSize("lots") == nil)
    }
}
