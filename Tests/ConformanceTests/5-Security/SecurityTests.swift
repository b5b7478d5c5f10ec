import Foundation
import MartletAuth
import MartletBroker
import MartletMQTT
import MartletTLS
import NIOCore
import NIOPosix
import Testing
import MartletTestSupport

/// Authentication and ACLs end to end: CONNACK codes, SUBACK and PUBACK refusals,
/// deliveries filtered, reload.
@Suite struct SecurityTests {
    static func files(passwords: [(String, String)], acl: String) throws -> (passwordFile: String, aclFile: String) {
        let dir = scratchPath("martlet-security")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var file = PasswordFile()
        for (user, password) in passwords { file.set(user: user, password: password, iterations: 1000) }
        try file.rendered.write(toFile: dir + "/passwords", atomically: true, encoding: .utf8)
        try acl.write(toFile: dir + "/acl", atomically: true, encoding: .utf8)
        return (dir + "/passwords", dir + "/acl")
    }

    static func connect(_ port: Int, _ version: ProtocolVersion = .v3_1_1, id: String, user: String? = nil, password: String? = nil) async throws -> (RawClient, ConnAckPacket?) {
        let c = try await RawClient.connect(port: port, version: version)
        try await c.send(.connect(ConnectPacket(
            protocolVersion: version, clientIdentifier: id, username: user, password: password.map { ByteBuffer(string: $0) })))
        guard case .connack(let ack) = try await c.next() else { return (c, nil) }
        return (c, ack)
    }

    static let v3NotAuthorized = ReasonCode(ConnectReturnCode.notAuthorized.rawValue)
    static let v3BadPassword = ReasonCode(ConnectReturnCode.badUserNameOrPassword.rawValue)

    @Test("authentication: anonymous refused when not allowed, bad password refused, right password accepted; failures counted")
    func authentication() async throws {
        let (passwords, _) = try Self.files(passwords: [("alice", "wonderland")], acl: "")
        try await withBroker({
            $0.passwordFile = passwords
            $0.listeners[0].allowAnonymous = false
        }) { broker, port in
            #expect(try await Self.connect(port, id: "anon").1?.reasonCode == Self.v3NotAuthorized)
            #expect(try await Self.connect(port, .v5, id: "anon5").1?.reasonCode == .notAuthorized)
            #expect(try await Self.connect(port, id: "a", user: "alice", password: "nope").1?.reasonCode == Self.v3BadPassword)
            #expect(try await Self.connect(port, .v5, id: "a5", user: "alice", password: "nope").1?.reasonCode == .badUserNameOrPassword)
            #expect(try await Self.connect(port, id: "m", user: "mallory", password: "wonderland").1?.reasonCode == Self.v3BadPassword)
            #expect(try await Self.connect(port, id: "a", user: "alice", password: "wonderland").1?.reasonCode == .success)
            // A second connect with the same credentials (the verification cache) and a wrong one after it.
            #expect(try await Self.connect(port, id: "a2", user: "alice", password: "wonderland").1?.reasonCode == .success)
            #expect(try await Self.connect(port, id: "a3", user: "alice", password: "wonderlan").1?.reasonCode == Self.v3BadPassword)
            try await waitFor(.seconds(10), "the auth failure counter") { broker.counters.authFailures == 6 ? true : nil }
        }
    }

    @Test("a password is verified off the event loop: a client on the same loop is served meanwhile, and packets sent right after CONNECT wait for CONNACK")
    func passwordVerifiedOffTheLoop() async throws {
        // 1,000,000 PBKDF2 rounds: about half a second of CPU unloaded (more on a busy CI
        // machine), so the loop's answer to another client can be seen to come first. The test
        // waits on the broker's auth_pending gauge, not on the clock.
        let dir = scratchPath("martlet-security")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // Derived on NIO's thread pool: half a second of CPU on a concurrency thread would hold
        // up other tests' tasks (and their keepalive timing).
        let rendered = try await NIOThreadPool.singleton.runIfActive {
            var file = PasswordFile()
            file.set(user: "slow", password: "s3cret", iterations: 1_000_000)
            return file.rendered
        }
        try rendered.write(toFile: dir + "/passwords", atomically: true, encoding: .utf8)
        try await withBroker({
            $0.passwordFile = dir + "/passwords"
            $0.eventLoops = 1
            // However slow the machine, the CONNECT is not timed out while its key is derived.
            $0.connectTimeout = .seconds(120)
        }) { broker, port in
            let (fast, _) = try await RawClient.connected(port: port, clientID: "fast")
            // CONNECT and SUBSCRIBE in one write.
            let slow = try await RawClient.connect(port: port)
            var bytes = ByteBuffer()
            try MQTTPacket.connect(ConnectPacket(clientIdentifier: "slow", username: "slow", password: ByteBuffer(string: "s3cret")))
                .write(to: &bytes, version: .v3_1_1)
            try MQTTPacket.subscribe(SubscribePacket(packetIdentifier: 7, subscriptions: [.init("t", qos: .atMostOnce)]))
                .write(to: &bytes, version: .v3_1_1)
            try await slow.send(Array(bytes.readableBytesView))
            // The broker has read the CONNECT and handed the key to the thread pool.
            try await waitFor(.seconds(60), "slow's verification to start") { broker.counters.authenticating == 1 ? true : nil }
            try await fast.send(h("C0 00"))
            #expect(try await fast.read(count: 2) == h("D0 00"))
            #expect(slow.pendingBytes.isEmpty, "CONNACK came before the other client's PINGRESP: the loop was blocked")
            guard case .connack(let ack) = try await slow.next(timeout: .seconds(120)) else { Issue.record("expected CONNACK"); return }
            #expect(ack.reasonCode == .success)
            guard case .suback(let suback) = try await slow.next() else { Issue.record("expected SUBACK"); return }
            #expect(suback.packetIdentifier == 7)
            #expect(broker.counters.authenticating == 0)

            // A client that goes away while its password (another one: not in the verification
            // cache) is being verified: its connection closes, and the result, when it comes,
            // is dropped — nothing sent, nothing counted.
            let gone = try await RawClient.connect(port: port)
            try await gone.send(.connect(ConnectPacket(clientIdentifier: "gone", username: "slow", password: ByteBuffer(string: "not-s3cret"))))
            try await waitFor(.seconds(60), "gone's verification to start") { broker.counters.authenticating == 1 ? true : nil }
            await gone.close()
            try await waitFor(.seconds(10), "the gone client's connection to close") { broker.counters.connections == 2 ? true : nil }
            try await waitFor(.seconds(120), "gone's verification to end") { broker.counters.authenticating == 0 ? true : nil }
            #expect(broker.counters.authFailures == 0)
            #expect(broker.counters.connections == 2)
        }
    }

    @Test("ACL on shared subscriptions: the filter inside $share/{name}/ is what the ACL checks (0x87 / 0x80 when refused), and a member reads only what it may")
    func sharedSubscriptionACL() async throws {
        let (passwords, acl) = try Self.files(
            passwords: [("alice", "a"), ("bob", "b")],
            acl: """
                user alice
                topic read jobs/#
                user bob
                topic write jobs/#
                topic write other/#
                """)
        try await withBroker({
            $0.passwordFile = passwords
            $0.aclFile = acl
        }) { _, port in
            let (alice, _) = try await Self.connect(port, .v5, id: "alice", user: "alice", password: "a")
            #expect(try await alice.subscribe("$share/g/jobs/#", qos: .atLeastOnce).reasonCodes == [.grantedQoS1])
            #expect(try await alice.subscribe("$share/g/other/#", id: 2).reasonCodes == [.notAuthorized])
            let (v3, _) = try await Self.connect(port, id: "alice3", user: "alice", password: "a")
            #expect(try await v3.subscribe("$share/g/other/#").reasonCodes == [.subscribeFailure])
            let (bob, _) = try await Self.connect(port, id: "bob", user: "bob", password: "b")
            try await bob.publish("jobs/1", "for the group", qos: .atLeastOnce, id: 1)
            try await bob.publish("other/1", "not subscribed", qos: .atLeastOnce, id: 2)
            #expect(try await alice.nextPublish().payloadString == "for the group")
            try await alice.expectSilence()
        }
    }

    @Test("a share group member that may no longer read a topic (ACL reloaded) is passed over: another member gets the message")
    func sharedMemberWithoutRead() async throws {
        let (passwords, acl) = try Self.files(
            passwords: [("alice", "a"), ("carol", "c"), ("bob", "b")],
            acl: "user alice\ntopic read jobs/#\nuser carol\ntopic read jobs/#\nuser bob\ntopic write jobs/#\n")
        try await withBroker({
            $0.passwordFile = passwords
            $0.aclFile = acl
            $0.sharedSubscriptionStrategy = .roundRobin
        }) { broker, port in
            let (alice, _) = try await Self.connect(port, .v5, id: "alice", user: "alice", password: "a")
            let (carol, _) = try await Self.connect(port, .v5, id: "carol", user: "carol", password: "c")
            _ = try await alice.subscribe("$share/g/jobs/#")
            _ = try await carol.subscribe("$share/g/jobs/#")
            let (bob, _) = try await Self.connect(port, id: "bob", user: "bob", password: "b")
            try "user alice\ntopic read jobs/#\nuser bob\ntopic write jobs/#\n".write(toFile: acl, atomically: true, encoding: .utf8)
            try broker.reloadSecurity()
            // Routers take the new ACL within a sweep: wait for a round in which all ten go to alice.
            var round = 0
            try await waitFor(.seconds(10), "a round of ten, all at alice") { () -> Bool? in
                round += 1
                for i in 1...10 { try await bob.publish("jobs/\(round)", "\(round).\(i)") }
                var got = 0
                while got < 10, let p = try? await alice.nextPublish(timeout: .milliseconds(300)) {
                    if p.topic == "jobs/\(round)" { got += 1 }
                }
                while (try? await carol.nextPublish(timeout: .milliseconds(50))) != nil {}
                return got == 10 ? true : nil
            }
            #expect((broker.sharedGroups.first?.redelivered ?? 0) >= 5)
        }
    }

    @Test("ACL: a refused SUBSCRIBE gets 0x80 / 0x87, a refused PUBLISH is dropped (v3) or answered 0x87 (v5), a refused read is never delivered")
    func accessControl() async throws {
        let (passwords, acl) = try Self.files(
            passwords: [("alice", "a"), ("bob", "b")],
            acl: """
                user alice
                topic readwrite shared/#
                topic read private/#
                user bob
                topic write shared/#
                topic write private/#
                topic read shared/public
                """)
        try await withBroker({
            $0.passwordFile = passwords
            $0.aclFile = acl
        }) { broker, port in
            let (alice, _) = try await Self.connect(port, .v5, id: "alice", user: "alice", password: "a")
            let (bob, _) = try await Self.connect(port, id: "bob", user: "bob", password: "b")
            // Bob subscribes to more than he may read: granted, but only readable topics arrive.
            #expect(try await bob.subscribe("shared/#").reasonCodes == [.subscribeFailure])
            #expect(try await bob.subscribe("shared/public", id: 2).reasonCodes == [.grantedQoS0])
            try await alice.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [
                .init("shared/#", qos: .atLeastOnce), .init("private/#", qos: .atMostOnce), .init("other/#", qos: .atMostOnce),
            ])))
            #expect(try await alice.next() == .suback(SubAckPacket(packetIdentifier: 1, reasonCodes: [.grantedQoS1, .grantedQoS0, .notAuthorized])))
            // v5 PUBLISH to a topic Alice may not write: PUBACK 0x87, nothing routed.
            try await alice.publish("private/x", "no", qos: .atLeastOnce, id: 7)
            #expect(try await alice.next() == .puback(PubAckPacket(packetIdentifier: 7, reasonCode: .notAuthorized)))
            // v3 PUBLISH Bob may not write: acknowledged, not routed.
            try await bob.publish("elsewhere", "no", qos: .atLeastOnce, id: 3)
            #expect(try await bob.next() == .puback(PubAckPacket(packetIdentifier: 3)))
            // Bob writes where Alice reads.
            try await bob.publish("private/note", "for alice")
            #expect(try await alice.nextPublish().payloadString == "for alice")
            // Alice writes shared/secret (Bob may not read it) and shared/public (he may).
            try await alice.publish("shared/secret", "not for bob", qos: .atLeastOnce, id: 8)
            // Her PUBACK and her own subscription's copy, in either order.
            var seen: [String] = []
            for _ in 0..<2 {
                switch try await alice.next() {
                case .puback(let ack): seen.append("puback \(ack.packetIdentifier) \(ack.reasonCode == .success)")
                case .publish(let p): seen.append("publish \(p.payloadString)")
                default: seen.append("other")
                }
            }
            #expect(Set(seen) == ["puback 8 true", "publish not for bob"])
            try await alice.publish("shared/public", "for everyone")
            #expect(try await bob.nextPublish().payloadString == "for everyone")
            try await bob.expectSilence()
            try await waitFor(.seconds(10), "the denial counters") {
                let c = broker.counters
                return c.publishDenied == 2 && c.subscribeDenied == 2 ? true : nil
            }
        }
    }

    static let aliceAndDave = """
        user alice
        topic readwrite alice/#
        user bob
        topic write alice/#
        user dave
        topic readwrite dave/#
        """

    /// alice's persistent session X with `alice/#` at QoS 1, offline, holding a QoS 1 message
    /// and a retained one that bob published meanwhile.
    static func aliceQueued(_ port: Int) async throws {
        let (a, ack) = try await connectPersistent(port, .v3_1_1, id: "X", user: "alice", password: "a")
        #expect(ack?.reasonCode == .success)
        #expect(try await a.subscribe("alice/#", qos: .atLeastOnce).reasonCodes == [.grantedQoS1])
        try await a.send(.disconnect(DisconnectPacket()))
        try await a.expectClosed()
        let (bob, _) = try await connect(port, id: "bob", user: "bob", password: "b")
        try await bob.publish("alice/ok/queued", "for alice", qos: .atLeastOnce, id: 1)
        #expect(try await bob.next() == .puback(PubAckPacket(packetIdentifier: 1)))
        try await bob.publish("alice/ok/r", "retained for alice", qos: .atLeastOnce, retain: true, id: 2)
        #expect(try await bob.next() == .puback(PubAckPacket(packetIdentifier: 2)))
        await bob.close()
    }

    /// A broker with alice, bob and dave and `aliceAndDave`'s ACL, where alice's session X
    /// already holds what bob sent it (`aliceQueued`); `body` gets the ACL file's path too.
    static func withAliceQueued(_ configure: @escaping (inout BrokerConfiguration) -> Void = { _ in },
                                _ body: (MQTTBroker, Int, String) async throws -> Void) async throws {
        let (passwords, acl) = try files(passwords: [("alice", "a"), ("bob", "b"), ("dave", "d")], acl: aliceAndDave)
        try await withBroker({
            $0.passwordFile = passwords
            $0.aclFile = acl
            configure(&$0)
        }) { broker, port in
            try await aliceQueued(port)
            try await body(broker, port, acl)
        }
    }

    static func connectPersistent(_ port: Int, _ version: ProtocolVersion, id: String, user: String?, password: String?) async throws -> (RawClient, ConnAckPacket?) {
        let c = try await RawClient.connect(port: port, version: version)
        var properties = Properties()
        if version == .v5 { properties.sessionExpiryInterval = 3600 }
        try await c.send(.connect(ConnectPacket(
            protocolVersion: version, cleanStart: false, clientIdentifier: id, username: user,
            password: password.map { ByteBuffer(string: $0) }, properties: properties)))
        guard case .connack(let ack) = try await c.next() else { return (c, nil) }
        return (c, ack)
    }

    @Test("a persistent session belongs to the identity that created it: another user or an anonymous client using its client id is refused (0x05 / v5 0x87) and reads nothing; the owner then gets everything queued")
    func sessionOwnedByItsIdentity() async throws {
        try await Self.withAliceQueued { broker, port, _ in
            for (version, user, password) in [(ProtocolVersion.v3_1_1, "dave", "d"), (.v5, "dave", "d"), (.v3_1_1, nil, nil), (.v5, nil, nil)] as [(ProtocolVersion, String?, String?)] {
                let (intruder, ack) = try await Self.connectPersistent(port, version, id: "X", user: user, password: password)
                #expect(ack?.reasonCode == (version == .v5 ? .notAuthorized : Self.v3NotAuthorized))
                #expect(ack?.sessionPresent == false)
                let packets = try await intruder.expectClosed()
                #expect(packets.isEmpty, "\(packets)")
            }
            // Refused while the owner is online too: her connection stays.
            let (alice, ack) = try await Self.connectPersistent(port, .v5, id: "X", user: "alice", password: "a")
            #expect(ack?.sessionPresent == true)
            var payloads: Set<String> = []
            for _ in 0..<2 {
                let p = try await alice.nextPublish()
                payloads.insert(p.payloadString)
                try await alice.send(.puback(PubAckPacket(packetIdentifier: p.packetIdentifier!)))
            }
            #expect(payloads == ["for alice", "retained for alice"])
            let (dave, daveAck) = try await Self.connectPersistent(port, .v3_1_1, id: "X", user: "dave", password: "d")
            #expect(daveAck?.reasonCode == Self.v3NotAuthorized)
            try await dave.expectClosed()
            try await alice.send(.pingreq)
            #expect(try await alice.next() == .pingresp)
            try await waitFor(.seconds(10), "the refusals counted") { broker.counters.sessionTakeoversRefused == 5 ? true : nil }
        }
    }

    @Test("session_other_identity discard: another identity's CONNECT ends the old session and starts clean (nothing of it delivered, its queue counted as dropped)")
    func otherIdentityDiscards() async throws {
        try await Self.withAliceQueued({ $0.sessionOtherIdentity = .discard }) { broker, port, _ in
            let (dave, ack) = try await Self.connectPersistent(port, .v5, id: "X", user: "dave", password: "d")
            #expect(ack?.reasonCode == .success)
            #expect(ack?.sessionPresent == false)
            try await dave.expectSilence()
            try await waitFor(.seconds(10), "alice's queue counted as dropped") { broker.counters.droppedSessionEnded == 2 ? true : nil }
        }
    }

    @Test("a queued message is checked against the ACL as it is sent: after a reload takes the read away, the resumed session does not get it (counted not_authorized)")
    func queuedMessageCheckedAtDelivery() async throws {
        try await Self.withAliceQueued { broker, port, acl in
            try "user alice\ntopic write alice/#\n".write(toFile: acl, atomically: true, encoding: .utf8)
            // Her router takes the reloaded ACL at her CONNECT (before the session resumes).
            try broker.reloadSecurity()
            let (alice, ack) = try await Self.connectPersistent(port, .v3_1_1, id: "X", user: "alice", password: "a")
            #expect(ack?.sessionPresent == true)
            try await alice.expectSilence()
            try await waitFor(.seconds(10), "two not_authorized drops") { broker.counters.droppedNotAuthorized == 2 ? true : nil }
            let report = try #require(try await broker.sessionReport(clientID: "X"))
            #expect(report.dropped[.notAuthorized] == 2)
        }
    }

    @Test("$SYS belongs to the broker: a client PUBLISH there is refused (v5 PUBACK 0x87, 3.1.1 not routed), never retained, counted; a will on $SYS is refused; an ACL rule naming $SYS allows it")
    func sysTopicsCannotBeForged() async throws {
        try await withBroker { broker, port in
            let (monitor, _) = try await RawClient.connected(port: port, clientID: "monitor")
            _ = try await monitor.subscribe("$SYS/#")
            let (v5, _) = try await RawClient.connected(port: port, version: .v5, clientID: "forger5")
            try await v5.publish("$SYS/broker/version", "forged", qos: .atLeastOnce, retain: true, id: 1)
            #expect(try await v5.next() == .puback(PubAckPacket(packetIdentifier: 1, reasonCode: .notAuthorized)))
            let (v3, _) = try await RawClient.connected(port: port, clientID: "forger3")
            try await v3.publish("$SYS/broker/clients/connected", "9999", retain: true)
            try await v3.publish("$SYS", "bare", retain: true)
            try await monitor.expectSilence()
            let (late, _) = try await RawClient.connected(port: port, clientID: "late")
            _ = try await late.subscribe("$SYS/#")
            try await late.expectSilence()
            #expect(broker.retainedCount == 0)
            try await waitFor(.seconds(10), "three refusals counted") { broker.counters.publishDenied == 3 ? true : nil }
            let (willer, ack) = try await RawClient.connected(
                port: port, version: .v5, clientID: "willer", will: Will(topic: "$SYS/broker/uptime", payload: ByteBuffer(string: "0")))
            #expect(ack.reasonCode == .notAuthorized)
            try await willer.expectClosed()
            // Something else starting with $ is an ordinary topic.
            _ = try await monitor.subscribe("$other/#", id: 2)
            try await v3.publish("$other/x", "fine")
            #expect(try await monitor.nextPublish().payloadString == "fine")
        }
        let (passwords, acl) = try Self.files(passwords: [("ops", "o")], acl: "topic read $SYS/#\nuser ops\ntopic write $SYS/custom/#\ntopic write #\n")
        try await withBroker({
            $0.passwordFile = passwords
            $0.aclFile = acl
        }) { _, port in
            let (monitor, _) = try await RawClient.connected(port: port, clientID: "monitor")
            _ = try await monitor.subscribe("$SYS/#")
            let (ops, _) = try await Self.connect(port, .v5, id: "ops", user: "ops", password: "o")
            try await ops.publish("$SYS/broker/version", "no", qos: .atLeastOnce, id: 1)
            #expect(try await ops.next() == .puback(PubAckPacket(packetIdentifier: 1, reasonCode: .notAuthorized)))
            try await ops.publish("$SYS/custom/ok", "granted", qos: .atLeastOnce, id: 2)
            #expect(try await ops.next() == .puback(PubAckPacket(packetIdentifier: 2)))
            #expect(try await monitor.nextPublish().payloadString == "granted")
        }
    }

    @Test("reload: a changed ACL applies to connected clients; a broken file keeps the running one")
    func reload() async throws {
        let (passwords, acl) = try Self.files(passwords: [], acl: "topic read news/#\n")
        try await withBroker({
            $0.passwordFile = passwords
            $0.aclFile = acl
        }) { broker, port in
            let (reader, _) = try await RawClient.connected(port: port, clientID: "reader")
            _ = try await reader.subscribe("news/#")
            let (writer, _) = try await RawClient.connected(port: port, clientID: "writer")
            try await writer.publish("news/1", "refused")
            try await reader.expectSilence()
            try "topic readwrite news/#\n".write(toFile: acl, atomically: true, encoding: .utf8)
            try broker.reloadSecurity()
            // Routers pick the new ACL up within one sweep (100 ms in tests).
            try await waitFor(.seconds(10), "the new ACL to allow writing") {
                try await writer.publish("news/2", "allowed")
                return try? await reader.nextPublish(timeout: .milliseconds(150))
            }
            try "topic sometimes news/#\n".write(toFile: acl, atomically: true, encoding: .utf8)
            #expect(throws: ConfigurationError.self) { try broker.reloadSecurity() }
            try await writer.publish("news/3", "still allowed")
            // An "allowed" sent while waiting may arrive after its wait gave up: skip those.
            var next = try await reader.nextPublish().payloadString
            while next == "allowed" { next = try await reader.nextPublish().payloadString }
            #expect(next == "still allowed")
        }
    }

    @Test("use_identity_as_username: the client certificate's CN is the user the ACL sees")
    func identityAsUsername() async throws {
        let certs = try await DevCertificates.make()
        let (_, acl) = try Self.files(passwords: [], acl: "user martlet-client\ntopic readwrite mtls/#\n")
        var listener = BrokerConfiguration.Listener(host: "127.0.0.1", port: 0, tls: certs.server(requireClientCertificate: true))
        listener.useIdentityAsUsername = true
        listener.allowAnonymous = false
        try await withBroker({
            $0.listeners = [listener]
            $0.aclFile = acl
        }) { _, port in
            let tls = try certs.client(withCertificate: true)
            let (c, ack) = try await RawClient.connected(port: port, clientID: "device", tls: tls)
            #expect(ack.reasonCode == .success)
            #expect(try await c.subscribe("mtls/#").reasonCodes == [.grantedQoS0])
            #expect(try await c.subscribe("other", id: 2).reasonCodes == [.subscribeFailure])
            try await c.publish("mtls/x", "mine")
            #expect(try await c.nextPublish().payloadString == "mine")
        }
    }
}
