import Foundation
@testable import MartletCluster
import MartletClient
import MartletMQTT
import NIOCore
import Synchronization
import Testing
import MartletTestSupport

/// Three martletd nodes with `cluster:` over three clustered nats-servers with JetStream (R3),
/// all real processes on loopback: messages and retained messages cross nodes, a NATS server
/// is killed under load, JetStream loses its quorum, and a node is killed and restarted.
@Suite(.serialized) struct ClusterTests {
    static func payloads(_ messages: [ReceivedMessage], topicPrefix: String) -> [String] {
        messages.filter { $0.topic.hasPrefix(topicPrefix) }.map { String(buffer: $0.payload) }
    }

    static func withCluster(nodes: Int = 3, natsExtra: String = "", settings: String = "",
                            _ body: (ClusterFixture) async throws -> Void) async throws {
        let cluster = try ClusterFixture(natsExtra: natsExtra)
        defer { cluster.stop() }
        try await cluster.startNATS()
        for i in 0..<nodes { try await cluster.addNode("node\(i)", server: i % cluster.servers.count, settings: settings) }
        try await body(cluster)
    }

    @Test("A publisher on node 0, subscribers on nodes 1 (v5) and 2 (3.1.1) with overlapping filters: every QoS 0/1/2 message arrives once, in order per topic, with its v5 properties; publishers are acknowledged")
    func crossNode() async throws {
        try await Self.withCluster { cluster in
            let publisher = try await cluster.client(0, "pub")
            let sub1 = try await cluster.client(1, "sub1")
            let sub2 = try await cluster.client(2, "sub2", version: .v3_1_1)
            // Two filters of one session that both match: one copy per session (MQTT), and
            // the node receives the NATS message once for its two subscriptions.
            _ = try await sub1.subscribe([Subscription("t/#", qos: .exactlyOnce), Subscription("t/+/x", qos: .exactlyOnce)])
            _ = try await sub2.subscribe("t/#", qos: .exactlyOnce)
            try await ClusterFixture.waitForInterest(publisher: publisher, probeTopic: "t/probe", subscribers: [sub1, sub2])

            var properties = Properties()
            properties.appendUserProperty("origin", "node0")
            properties.contentType = "text/plain"
            var expected: [String] = []
            for qos in QoS.allCases {
                for i in 0..<40 {
                    let text = "q\(qos.rawValue)-\(i)"
                    expected.append(text)
                    try await publisher.publish("t/\(qos.rawValue)/x", payload: ByteBuffer(string: text), qos: qos, properties: properties)
                }
            }
            let all = expected
            for (name, sub) in [("v5", sub1), ("3.1.1", sub2)] {
                let got = try await BridgeTests.collect(from: sub, timeout: .seconds(30)) { m in
                    Self.payloads(m, topicPrefix: "t/").filter { $0 != "probe" }.count >= all.count
                }
                // In order per topic (MQTT orders a publisher's messages per topic; a node routes
                // each topic on its own event loop).
                for qos in QoS.allCases {
                    let topic = "t/\(qos.rawValue)/x"
                    #expect(got.filter { $0.topic == topic }.map { String(buffer: $0.payload) } == all.filter { $0.hasPrefix("q\(qos.rawValue)-") },
                            "\(name) subscriber, \(topic)")
                }
                if name == "v5", let first = got.first(where: { $0.topic == "t/1/x" }) {
                    #expect(first.properties.userProperties.contains { $0.name == "origin" && $0.value == "node0" })
                    #expect(first.properties.contentType == "text/plain")
                    #expect(first.qos == .atLeastOnce)
                }
            }
            #expect(try await cluster.metric(1, "martlet_cluster_copies_dropped_total") > 0)
            #expect(try await cluster.metric(0, "martlet_cluster_refused_total") == 0)
            try await publisher.disconnect()
            try await sub1.disconnect()
            try await sub2.disconnect()
        }
    }

    @Test("Retained messages are cluster-wide: kept on node 0, sent to a new subscription on node 2 and to a node started later; an empty retained message clears it on every node")
    func retainedAcrossNodes() async throws {
        try await Self.withCluster(nodes: 2) { cluster in
            let publisher = try await cluster.client(0, "pub")
            try await publisher.publish("status/a", payload: ByteBuffer(string: "up"), qos: .atLeastOnce, retain: true)
            try await publisher.publish("status/b/deep", payload: ByteBuffer(string: "deep"), qos: .atLeastOnce, retain: true)
            // Acknowledged means stored in the bucket: a node started now has both.
            try await cluster.addNode("late", server: 2)
            for node in [1, 2] {
                let sub = try await cluster.client(node, "sub\(node)")
                _ = try await sub.subscribe("status/#", qos: .atLeastOnce)
                let got = try await BridgeTests.collect(from: sub, timeout: .seconds(20)) { $0.count >= 2 }
                #expect(Set(got.map { "\($0.topic)=\(String(buffer: $0.payload))" }) == ["status/a=up", "status/b/deep=deep"], "node \(node)")
                #expect(got.allSatisfy { $0.retain })
                try await sub.disconnect()
            }
            try await publisher.publish("status/a", payload: ByteBuffer(), qos: .atLeastOnce, retain: true)
            for node in [1, 2] {
                try await waitFor(.seconds(20), "status/a cleared on node \(node)", every: .milliseconds(200)) { () async throws -> Bool? in
                    let sub = try await cluster.client(node, "check\(node)")
                    _ = try await sub.subscribe("status/#", qos: .atLeastOnce)
                    let got = try await BridgeTests.collect(from: sub, timeout: .seconds(10)) { $0.count >= 1 }
                    try await sub.disconnect()
                    return got.map(\.topic) == ["status/b/deep"] ? true : nil
                }
            }
        }
    }

    @Test("The NATS server of the publisher's node (0), then of the subscriber's node (1), killed (SIGKILL) while QoS 1 flows from one node to the other: the node reconnects to another server; publishes are refused, not lost, while the stream elects a leader; every acknowledged message arrives", arguments: [0, 1])
    func natsServerKilled(killed: Int) async throws {
        try await Self.withCluster(nodes: 2) { cluster in
            let publisher = try await cluster.client(0, "pub") { $0.reconnect = ReconnectPolicy(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(200)) }
            let sub = try await cluster.client(1, "sub")
            _ = try await sub.subscribe("load/#", qos: .atLeastOnce)
            try await ClusterFixture.waitForInterest(publisher: publisher, probeTopic: "load/probe", subscribers: [sub])
            // Node 0 is on server 0 (the first of its list that answers), node 1 on server 1.
            let connections = try await ClusterFixture.get(cluster.servers[0].http, "/connz")
            #expect(connections.contains("\"name\": \"node0-") && !connections.contains("\"name\": \"node1-"))
            var acknowledged: [String] = []
            var refused = 0
            var afterKill = 0
            var i = 0
            let deadline = ContinuousClock.now + .seconds(90)
            // 100 acknowledged before the kill, then on until 300 more are acknowledged.
            while afterKill < 300 && ContinuousClock.now < deadline {
                if i == 100 { cluster.killNATS(killed) }
                do {
                    try await publisher.publish("load/x", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce)
                    acknowledged.append("\(i)")
                    if i >= 100 { afterKill += 1 }
                } catch MQTTClientError.refused {
                    refused += 1
                }
                i += 1
            }
            #expect(afterKill == 300, "refused \(refused)")
            let wanted = Set(acknowledged)
            let names = Mutex<Set<String>>([])
            do {
                _ = try await BridgeTests.collect(from: sub, timeout: .seconds(30)) { m in
                    let got = Set(Self.payloads(m, topicPrefix: "load/x"))
                    names.withLock { $0 = got }
                    return wanted.isSubset(of: got)
                }
            } catch MQTTClientError.timeout {}
            let missing = wanted.subtracting(names.withLock { $0 })
            let gaps = try await cluster.metric(1, "martlet_cluster_gaps_total")
            let filled = try await cluster.metric(1, "martlet_cluster_gap_messages_total")
            #expect(missing.isEmpty, "acknowledged, not delivered: \(missing.sorted { Int($0)! < Int($1)! }); gaps \(gaps), read \(filled)")
            #expect(try await cluster.metric(1, "martlet_cluster_connected") == 1)
        }
    }

    @Test("The subscriber's node cut off (its NATS server stopped) while the last message on a topic is stored and passed on: nothing later on that topic shows the gap, so once the node reconnects (the server killed) it reads what it missed from the stream and the acknowledged message arrives")
    func lastMessageWhileCutOff() async throws {
        try await Self.withCluster(nodes: 3) { cluster in
            // Node i is on server i. The subscriber's server must not lead the stream: the
            // message is then stored at once, while its node is still cut off (libnats gives
            // up on a silent server after about 4 s of unanswered pings).
            let leader = try await cluster.streamLeader()
            let (p, s) = (leader, (leader + 1) % 3)
            let publisher = try await cluster.client(p, "pub")
            let sub = try await cluster.client(s, "sub")
            _ = try await sub.subscribe("tail/#", qos: .atLeastOnce)
            try await ClusterFixture.waitForInterest(publisher: publisher, probeTopic: "tail/probe", subscribers: [sub])
            try await publisher.publish("tail/x", payload: ByteBuffer(string: "before"), qos: .atLeastOnce)
            cluster.servers[s].process?.kill(signal: SIGSTOP)
            try await publisher.publish("tail/x", payload: ByteBuffer(string: "last"), qos: .atLeastOnce)
            cluster.killNATS(s)
            let got = try await BridgeTests.collect(from: sub, timeout: .seconds(30)) { Self.payloads($0, topicPrefix: "tail/x").contains("last") }
            #expect(Self.payloads(got, topicPrefix: "tail/x").contains("last"))
            #expect(try await cluster.metric(s, "martlet_cluster_gap_messages_total") >= 1)
        }
    }

    @Test("Two of three NATS servers killed: JetStream has no quorum, so QoS 1 publishes are refused (v5 0x80; 3.1.1 gets no PUBACK), counted, QoS 0 still crosses; with no server left a CONNECT resuming a session is refused with Server unavailable; with the servers back, QoS 1 is acknowledged again")
    func noQuorum() async throws {
        try await Self.withCluster(nodes: 2) { cluster in
            // Both nodes are served by server 2 once 0 and 1 are gone.
            let publisher = try await cluster.client(0, "pub")
            let publisher3 = try await cluster.client(0, "pub3", version: .v3_1_1)
            let sub = try await cluster.client(1, "sub")
            _ = try await sub.subscribe("q/#", qos: .atLeastOnce)
            try await ClusterFixture.waitForInterest(publisher: publisher, probeTopic: "q/probe", subscribers: [sub])
            cluster.killNATS(0)
            cluster.killNATS(1)
            // Refused once the node's connection has moved to server 2 and JetStream answers
            // (or times out) without a quorum.
            try await waitFor(.seconds(30), "a refused QoS 1 publish", every: .milliseconds(100)) { () async throws -> Bool? in
                do {
                    try await publisher.publish("q/x", payload: ByteBuffer(string: "lost?"), qos: .atLeastOnce)
                    return nil
                } catch MQTTClientError.refused(let code) {
                    #expect(code == .unspecifiedError)
                    return true
                }
            }
            for _ in 0..<5 {
                await #expect(throws: MQTTClientError.refused(.unspecifiedError)) {
                    try await publisher.publish("q/x", payload: ByteBuffer(string: "refused"), qos: .atLeastOnce)
                }
            }
            // 3.1.1 cannot say no: no PUBACK.
            let unanswered = try await publisher3.send("q/x", payload: ByteBuffer(string: "unanswered"), qos: .atLeastOnce)
            // QoS 0 crosses on core NATS.
            try await ClusterFixture.waitForInterest(publisher: publisher, probeTopic: "q/zero", subscribers: [sub])
            let refusals = try await waitFor(.seconds(5), "refusals counted") { () async throws -> Int? in
                let n = try await cluster.metric(0, "martlet_cluster_refused_total")
                return n >= 7 ? n : nil
            }
            #expect(refusals >= 7)
            // With the last server gone too, a client resuming a session this node does not
            // hold cannot have its record read: the CONNECT is refused (Server unavailable)
            // rather than given an empty session. (A bucket's replicas answer reads without a
            // quorum, so one server is enough to read.)
            cluster.killNATS(2)
            await #expect(throws: MQTTClientError.connectionRefused(.serverUnavailable)) {
                _ = try await cluster.client(1, "resumer", clean: false) { c in
                    c.sessionExpiryInterval = 3600
                    c.connectTimeout = .seconds(30)
                }
            }
            // Routers fold their counters into the broker's at each sweep (every 500 ms): the
            // refusal is counted within one sweep, not at once.
            let unavailable = try await waitFor(.seconds(5), "the refusal counted", every: .milliseconds(100)) { () async throws -> Int? in
                let n = try await cluster.metric(1, "martlet_cluster_sessions_unavailable_total")
                return n >= 1 ? n : nil
            }
            #expect(unavailable == 1)
            try await cluster.startNATS([0, 1, 2])
            try await ClusterFixture.publishUntilAcknowledged(publisher, "q/x", "back", timeout: .seconds(60))
            // The 3.1.1 publisher's next message is acknowledged; acknowledgements go in
            // order, so the refused one before it was never acknowledged.
            let later = try await publisher3.send("q/x", payload: ByteBuffer(string: "later"), qos: .atLeastOnce)
            try await later.get()
            let settled = Settled()
            unanswered.whenComplete { _ in settled.value.store(true, ordering: .relaxed) }
            let answered = settled.value.load(ordering: .relaxed)
            #expect(!answered)
            let got = try await BridgeTests.collect(from: sub, timeout: .seconds(20)) { Self.payloads($0, topicPrefix: "q/x").contains("later") }
            #expect(Self.payloads(got, topicPrefix: "q/x").contains("back"))
            try await publisher3.disconnect()
        }
    }

    @Test("A node killed (SIGKILL) and restarted: the other nodes go on exchanging messages, and the restarted node serves the cluster's retained messages and subscribers again")
    func nodeKilled() async throws {
        try await Self.withCluster { cluster in
            let publisher = try await cluster.client(0, "pub")
            try await publisher.publish("keep/1", payload: ByteBuffer(string: "kept"), qos: .atLeastOnce, retain: true)
            cluster.killNode(2)
            let sub = try await cluster.client(1, "sub")
            _ = try await sub.subscribe("live/#", qos: .atLeastOnce)
            try await ClusterFixture.waitForInterest(publisher: publisher, probeTopic: "live/probe", subscribers: [sub])
            try await publisher.publish("live/x", payload: ByteBuffer(string: "while 2 is down"), qos: .atLeastOnce)
            _ = try await BridgeTests.collect(from: sub, timeout: .seconds(20)) { Self.payloads($0, topicPrefix: "live/x") == ["while 2 is down"] }
            try await cluster.startNode(2)
            let sub2 = try await cluster.client(2, "sub2")
            _ = try await sub2.subscribe("keep/#", qos: .atLeastOnce)
            let retained = try await BridgeTests.collect(from: sub2, timeout: .seconds(20)) { $0.count >= 1 }
            #expect(retained.map { String(buffer: $0.payload) } == ["kept"])
            _ = try await sub2.subscribe("live/#", qos: .atLeastOnce)
            try await ClusterFixture.waitForInterest(publisher: publisher, probeTopic: "live/probe", subscribers: [sub2])
        }
    }

    @Test("Two CONNECTs with one client id race on two nodes (mosquitto_sub, MQTT 5), five times: each time exactly one connection stays and the other is closed with DISCONNECT 0x8E Session taken over")
    func racingConnects() async throws {
        try await Self.withCluster(nodes: 2) { cluster in
            let reader = try cluster.recordReader()
            defer { reader.close() }
            for round in 0..<5 {
                let id = "racer-\(round)"
                // Persistent sessions (v5, expiry 3600): each node writes the record when its
                // connection takes the session.
                let args = { (node: Int) in ["-p", "\(cluster.nodes[node].port)", "-i", id, "-t", "race/x", "-V", "mqttv5", "-d", "-W", "4", "-c", "-x", "3600"] }
                let a = try ChildProcess(mosquittoSub, args(0))
                let b = try ChildProcess(mosquittoSub, args(1))
                let results = [try await a.finish(timeout: .seconds(20)), try await b.finish(timeout: .seconds(20))]
                let takenOver = results.filter { $0.stdout.contains("Received DISCONNECT (142)") }
                let stayed = results.indices.filter { results[$0].stdout.contains("received CONNACK (0)") && !results[$0].stdout.contains("Received DISCONNECT") }
                #expect(takenOver.count == 1 && stayed.count == 1, "round \(round): \(results.map(\.stdout))")
                // One owner: the record names the node whose connection stayed.
                if let winner = stayed.first {
                    let owner = try await cluster.settledRecordOwner(reader, clientID: id)
                    #expect(owner?.hasPrefix("node\(winner)-") == true, "round \(round): record owned by \(owner ?? "none"), connection stayed on node\(winner)")
                }
            }
            // Counted by the routers, folded into the broker's totals at their next sweep.
            let takeovers = try await waitFor(.seconds(5), "the takeovers counted", every: .milliseconds(100)) { () async throws -> Int? in
                let n = try await cluster.metric(0, "martlet_cluster_takeovers_total") + cluster.metric(1, "martlet_cluster_takeovers_total")
                return n >= 5 ? n : nil
            }
            #expect(takeovers == 5)
        }
    }

    @Test("A node cut off from NATS (its server stopped, then killed) while its client's persistent session moves to another node: the other node takes the session record; once the cut-off node reconnects it finds the record taken and closes its old connection, and new messages reach only the new one")
    func cutOffNodeReleasesMovedSession() async throws {
        let cluster = try ClusterFixture()
        defer { cluster.stop() }
        try await cluster.startNATS()
        // Node 0 must not be found dead while its server is stopped (its wills do not matter here).
        for i in 0..<2 { try await cluster.addNode("node\(i)", server: i, nodeTimeout: 60_000) }
        // Reads through servers 1 and 2 only: server 0 is stopped below.
        let reader = try cluster.recordReader(servers: [1, 2])
        defer { reader.close() }
        let old = try await cluster.client(0, "mover", clean: false) { $0.sessionExpiryInterval = 3600 }
        _ = try await old.subscribe("move/#", qos: .atLeastOnce)
        #expect(try await cluster.settledRecordOwner(reader, clientID: "mover")?.hasPrefix("node0-") == true)

        // Node 0 hears nothing from now on: the claim of the new connection never reaches it.
        cluster.servers[0].process?.kill(signal: SIGSTOP)
        let new = try await cluster.client(1, "mover", clean: false) { c in
            c.sessionExpiryInterval = 3600
            c.connectTimeout = .seconds(30)
        }
        #expect(new.connack.sessionPresent)
        let taken = try await cluster.settledRecordOwner(reader, clientID: "mover")
        #expect(taken?.hasPrefix("node1-") == true, "record owner \(taken ?? "none")")
        // Node 0 cannot hear node 1's claim. Once it is on another server (libnats may give up
        // on the stopped one by itself; killing it makes sure) it reads the record again (or
        // hears node 1's claim again) and releases its connection.
        let closed = Mutex(false)
        let watcher = Task {
            await old.waitUntilClosed()
            closed.withLock { $0 = true }
        }
        cluster.killNATS(0)
        try await waitFor(.seconds(30), "node 0 closes the old connection", every: .milliseconds(100)) { closed.withLock { $0 } ? true : nil }
        watcher.cancel()
        let released = try await cluster.metric(0, "martlet_cluster_sessions_lost_total") + cluster.metric(0, "martlet_cluster_takeovers_total")
        #expect(released >= 1)
        #expect(try await cluster.settledRecordOwner(reader, clientID: "mover")?.hasPrefix("node1-") == true)

        // Messages go to the session's one connection, on node 1.
        let publisher = try await cluster.client(1, "pub-move")
        // Refused (not lost) while the stream elects a new leader: sent until acknowledged.
        try await ClusterFixture.publishUntilAcknowledged(publisher, "move/x", "after", timeout: .seconds(30))
        let got = try await BridgeTests.collect(from: new, timeout: .seconds(10)) { $0.contains { String(buffer: $0.payload) == "after" } }
        #expect(got.filter { String(buffer: $0.payload) == "after" }.count == 1)
    }

    @Test("A node killed (SIGKILL) with two persistent sessions: a surviving node removes the one whose expiry interval (3 s) passes, by compare-and-set, and keeps the other; resuming them on another node finds one gone (session present 0) and one there")
    func deadNodeSessionsExpire() async throws {
        try await Self.withCluster(nodes: 2) { cluster in
            let reader = try cluster.recordReader()
            defer { reader.close() }
            for (id, expiry) in [("short", UInt32(3)), ("long", UInt32(3600))] {
                let client = try await cluster.client(0, id, clean: false) { $0.sessionExpiryInterval = expiry }
                _ = try await client.subscribe("\(id)/#", qos: .atLeastOnce)
                #expect(try await cluster.settledRecordOwner(reader, clientID: id)?.hasPrefix("node0-") == true)
            }
            cluster.killNode(0)
            try await waitFor(.seconds(30), "the short session's record removed", every: .milliseconds(200)) { () async throws -> Bool? in
                ClusterNode.sessionStore(reader.handle).read(ClusterSubjects.key(topic: "short")).status == 1 ? true : nil
            }
            #expect(try await cluster.metric(1, "martlet_cluster_sessions_expired_total") == 1)
            #expect(try await cluster.settledRecordOwner(reader, clientID: "long")?.hasPrefix("node0-") == true)
            let short = try await cluster.client(1, "short", clean: false) { $0.sessionExpiryInterval = 3 }
            #expect(!short.connack.sessionPresent)
            let long = try await cluster.client(1, "long", clean: false) { $0.sessionExpiryInterval = 3600 }
            #expect(long.connack.sessionPresent)
        }
    }

    @Test("A node with a persistent subscriber (holding 60 unacknowledged QoS 1 messages) killed with SIGKILL: the client resumes its session on another node and receives every acknowledged message, also those published while it was away; its will is published once, by one surviving node")
    func persistentSessionSurvivesNodeKill() async throws {
        try await Self.withCluster { cluster in
            let watcher = try await cluster.client(1, "watcher")
            _ = try await watcher.subscribe("wills/#", qos: .atLeastOnce)
            // Acknowledges nothing: its node holds everything it was sent.
            let subscriber = try await cluster.client(0, "durable", clean: false) { c in
                c.sessionExpiryInterval = 3600
                c.manualAcknowledgement = true
                c.will = Will(topic: "wills/durable", payload: ByteBuffer(string: "gone"), qos: .atLeastOnce)
            }
            _ = try await subscriber.subscribe("orders/#", qos: .atLeastOnce)
            let publisher = try await cluster.client(1, "pub")
            try await ClusterFixture.waitForInterest(publisher: publisher, probeTopic: "orders/probe", subscribers: [subscriber])
            var acknowledged: [String] = []
            for i in 0..<60 {
                try await publisher.publish("orders/\(i % 3)", payload: ByteBuffer(string: "before-\(i)"), qos: .atLeastOnce)
                acknowledged.append("before-\(i)")
            }
            // The node has sent some of them (its in-flight window), unacknowledged.
            _ = try await BridgeTests.collect(from: subscriber, timeout: .seconds(20)) { Self.payloads($0, topicPrefix: "orders/").count >= 10 }
            cluster.killNode(0)
            for i in 0..<40 {
                try await publisher.publish("orders/\(i % 3)", payload: ByteBuffer(string: "away-\(i)"), qos: .atLeastOnce)
                acknowledged.append("away-\(i)")
            }
            let resumed = try await cluster.client(2, "durable", clean: false) { $0.sessionExpiryInterval = 3600 }
            #expect(resumed.connack.sessionPresent)
            let wanted = Set(acknowledged)
            let got = try await BridgeTests.collect(from: resumed, timeout: .seconds(30)) { m in
                wanted.isSubset(of: Set(Self.payloads(m, topicPrefix: "orders/")))
            }
            let payloads = Self.payloads(got, topicPrefix: "orders/")
            #expect(wanted.isSubset(of: Set(payloads)), "missing \(wanted.subtracting(payloads).sorted())")
            // Per topic, the first arrival of each message keeps the publisher's order.
            for t in 0..<3 {
                var seen = Set<String>()
                let firsts = got.filter { $0.topic == "orders/\(t)" }.map { String(buffer: $0.payload) }.filter { seen.insert($0).inserted }
                let sent = acknowledged.enumerated().filter { $0.offset % 3 == t || ($0.offset >= 60 && ($0.offset - 60) % 3 == t) }
                    .map(\.element).filter { firsts.contains($0) }
                #expect(firsts == sent.filter { firsts.contains($0) }, "orders/\(t)")
            }
            // The will: published once, by whichever surviving node found node 0 dead first.
            let wills = try await BridgeTests.collect(from: watcher, timeout: .seconds(30)) { $0.contains { $0.topic == "wills/durable" } }
            #expect(wills.filter { $0.topic == "wills/durable" }.map { String(buffer: $0.payload) } == ["gone"])
            try await waitFor(.seconds(10), "node 0 found dead", every: .milliseconds(100)) { () async throws -> Bool? in
                try await cluster.metric(1, "martlet_cluster_dead_nodes_total") + cluster.metric(2, "martlet_cluster_dead_nodes_total") == 1 ? true : nil
            }
            let published = try await cluster.metric(1, "martlet_cluster_wills_published_total") + cluster.metric(2, "martlet_cluster_wills_published_total")
            #expect(published == 1)
            #expect(try await cluster.metric(2, "martlet_cluster_sessions_resumed_total") == 1)
        }
    }

    @Test("A share group with members on all three nodes (MQTT 5 4.8.2 across the cluster): 300 QoS 1 messages published on node 0, each reaches exactly one member in the whole cluster, members on every node get some; a plain subscriber gets all 300")
    func sharedAcrossNodes() async throws {
        try await Self.withCluster { cluster in
            // Members hand what they get to one inbox (tagged by node), read without a stream.
            let inbox = SharedInbox()
            let nodes = [0, 1, 1, 2]
            var members: [MQTTClient] = []
            for (i, node) in nodes.enumerated() {
                let m = try await cluster.client(node, "member\(i)") { c in
                    c.onMessage = { inbox.add(node: node, topic: $0.topic, payload: String(buffer: $0.payload)) }
                }
                _ = try await m.subscribe("$share/g/work/#", qos: .atLeastOnce)
                members.append(m)
            }
            let plain = try await cluster.client(2, "plain")
            _ = try await plain.subscribe("work/#", qos: .atLeastOnce)
            let publisher = try await cluster.client(0, "pub")
            // The group's queue subscriptions are known everywhere once members on every node
            // have had a probe.
            try await waitFor(.seconds(30), "probes on every node", every: .milliseconds(50)) { () async throws -> Bool? in
                try await publisher.publish("work/probe", payload: ByteBuffer(string: "probe"), qos: .atLeastOnce)
                return Set(inbox.items.withLock { $0 }.filter { $0.topic == "work/probe" }.map(\.node)).count == 3 ? true : nil
            }
            for i in 0..<300 {
                try await publisher.publish("work/\(i % 5)", payload: ByteBuffer(string: "job-\(i)"), qos: .atLeastOnce)
            }
            let all = Set((0..<300).map { "job-\($0)" })
            let everything = try await BridgeTests.collect(from: plain, timeout: .seconds(30)) { m in
                all.isSubset(of: Set(m.map { String(buffer: $0.payload) }))
            }
            #expect(all.isSubset(of: Set(everything.map { String(buffer: $0.payload) })))
            func jobs() -> [(node: Int, payload: String)] {
                inbox.items.withLock { $0 }.filter { $0.topic != "work/probe" }.map { ($0.node, $0.payload) }
            }
            try await waitFor(.seconds(30), "every job at a member", every: .milliseconds(50)) { () async throws -> Bool? in
                Set(jobs().map(\.payload)) == all ? true : nil
            }
            // Any second copy would have arrived by now.
            try await Task.sleep(for: .seconds(1))
            let received = jobs()
            #expect(received.count == 300, "\(received.count) copies of 300 jobs")
            let perNode = (0..<3).map { n in received.filter { $0.node == n }.count }
            #expect(perNode.allSatisfy { $0 > 0 }, "per node \(perNode)")
        }
    }

    @Test("martletd does not start without its cluster: no NATS server answering, JetStream off, or fewer JetStream servers than replicas; each names the problem")
    func refusesToStart() async throws {
        // Nothing listens.
        let nowhere = try ClusterFixture(servers: 1, clustered: false)
        defer { nowhere.stop() }
        let config = "\(nowhere.directory)/bad.yaml"
        func attempt(_ cluster: String) async throws -> ProcessResult {
            try """
                listeners: [{host: 127.0.0.1, port: \(randomTestPort())}]
                \(cluster.replacingOccurrences(of: "startup_timeout_ms: 30000", with: "startup_timeout_ms: 1500"))
                """.write(toFile: config, atomically: true, encoding: .utf8)
            return try await run(DaemonTests.martletd, ["--config", config], timeout: .seconds(30))
        }
        var result = try await attempt(nowhere.clusterEntry("solo", server: 0, replicas: 1))
        #expect(result.status != 0)
        #expect(result.stderr.contains("cluster: cannot connect to NATS"), "\(result.stderr)")

        // A server without JetStream.
        let plain = try ClusterFixture(servers: 1, clustered: false, jetStream: false)
        defer { plain.stop() }
        try await plain.startNATS()
        result = try await attempt(plain.clusterEntry("solo", server: 0, replicas: 1))
        #expect(result.status != 0)
        #expect(result.stderr.contains("JetStream is not available"), "\(result.stderr)")

        // One JetStream server, three replicas asked for.
        let single = try ClusterFixture(servers: 1, clustered: false)
        defer { single.stop() }
        try await single.startNATS()
        result = try await attempt(single.clusterEntry("solo", server: 0, replicas: 3))
        #expect(result.status != 0)
        #expect(result.stderr.contains("cannot create the stream"), "\(result.stderr)")
    }

    @Test("A node whose NATS server is gone still stops on SIGTERM within its graceful shutdown period (nothing waits on a server that cannot answer), exit status 0")
    func stopsWithoutNATS() async throws {
        let cluster = try ClusterFixture(servers: 1, clustered: false)
        defer { cluster.stop() }
        try await cluster.startNATS()
        // JetStream requests wait up to ack_timeout_ms: longer than the shutdown period here.
        try await cluster.addNode("solo", server: 0, replicas: 1, ackTimeout: 20_000, logLevel: "debug")
        let node = try #require(cluster.nodes[0].process)
        cluster.killNATS(0)
        try await waitFor(.seconds(10), "the node sees NATS gone", every: .milliseconds(100)) { () async throws -> Bool? in
            try await cluster.metric(0, "martlet_cluster_connected") == 0 ? true : nil
        }
        node.kill(signal: SIGTERM)
        let result = try await node.finish(timeout: .seconds(30))
        #expect(result.status == 0)
        #expect(result.stderr.contains("cluster connection closed"), "\(result.stderr.suffix(2000))")
        // ServiceLifecycle cancels a shutdown that outlasts its period (10 s) and says so.
        #expect(!result.stderr.contains("Graceful shutdown took longer"), "\(result.stderr.suffix(2000))")
    }
}

/// Whether a future has completed, read from the test's task.
final class Settled: Sendable {
    let value = Atomic<Bool>(false)
}

/// What the members of a share group received, with the node each is on.
final class SharedInbox: Sendable {
    let items = Mutex<[(node: Int, topic: String, payload: String)]>([])

    func add(node: Int, topic: String, payload: String) {
        items.withLock { $0.append((node, topic, payload)) }
    }
}
