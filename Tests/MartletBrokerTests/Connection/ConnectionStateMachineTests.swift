@testable import MartletBroker
import MartletMQTT
import NIOCore
import Testing

/// The connection's rules driven event by event: no socket, no event loop, time passed in.
@Suite struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func machine(_ configure: (inout BrokerConfiguration) -> Void = { _ in }, refusal: Refusal? = nil) -> Machine {
        var configuration = BrokerConfiguration()
        configure(&configuration)
        let settings = ConnectionSettings(configuration: configuration, listener: configuration.listeners[0])
        return Machine(settings: settings, refusal: refusal, now: start)
    }

    func connect(_ id: String = "c", version: ProtocolVersion = .v3_1_1, cleanStart: Bool = true, keepAlive: UInt16 = 10,
                 will: Will? = nil, properties: Properties = []) -> MQTTPacket {
        .connect(ConnectPacket(protocolVersion: version, cleanStart: cleanStart, keepAlive: keepAlive, clientIdentifier: id,
                               will: will, properties: properties))
    }

    /// CONNECT accepted by an anonymous listener, then the session attached.
    func connected(_ m: inout Machine, version: ProtocolVersion = .v3_1_1, keepAlive: UInt16 = 10, will: Will? = nil) {
        _ = m.packetReceived(connect(version: version, keepAlive: keepAlive, will: will))
        var action = m.authenticated(.accepted)
        if case .authorizeWill = action { action = m.willAuthorized(true) }
        guard case .attach = action else {
            Issue.record("expected attach, got \(action)")
            return
        }
        _ = m.sessionAttached(sessionPresent: false)
    }

    func connAckCode(_ action: Machine.Action) -> ReasonCode? {
        guard case .close(let closing) = action, case .connack(let ack)? = closing.farewell else { return nil }
        return ack.reasonCode
    }

    // MARK: CONNECT

    @Test("MQTT-3.1.0-1: a first packet other than CONNECT closes the connection as a protocol error, with no session to lose")
    func firstPacketMustBeConnect() {
        var m = machine()
        let action = m.packetReceived(.pingreq)
        guard case .close(let closing) = action else { Issue.record("\(action)"); return }
        #expect(closing.reason.counter == \.protocolErrors)
        #expect(closing.farewell == nil)
        #expect(closing.lost == nil)
        #expect(m.isClosed)
    }

    @Test("CONNECT goes to authentication with its credentials; the listener's refusal answers CONNACK first")
    func connectAuthenticatesOrIsRefused() {
        var m = machine()
        let action = m.packetReceived(.connect(ConnectPacket(clientIdentifier: "c", username: "u", password: ByteBuffer(string: "pw"))))
        #expect(action == .authenticate(username: "u", password: Array("pw".utf8), allowAnonymous: true, identityIsUsername: false))
        #expect(m.isAuthenticating)

        var refused = machine(refusal: Refusal(v3: .serverUnavailable, v5: .serverBusy, why: "max_connections"))
        let r1 = refused.packetReceived(connect(version: .v5))
        #expect(connAckCode(r1) == .serverBusy)
        var refused3 = machine(refusal: Refusal(v3: .serverUnavailable, v5: .serverBusy, why: "max_connections"))
        let r2 = refused3.packetReceived(connect())
        #expect(connAckCode(r2) == ReasonCode(ConnectReturnCode.serverUnavailable.rawValue))
    }

    @Test("MQTT-4.12.0-1 and MQTT 5 3.1.2.11.10: an authentication method is refused with 0x8C; data without a method with 0x82")
    func enhancedAuthenticationRefused() {
        var m = machine()
        var p = Properties()
        p.authenticationMethod = "SCRAM-SHA-1"
        let r3 = m.packetReceived(connect(version: .v5, properties: p))
        #expect(connAckCode(r3) == .badAuthenticationMethod)
        var n = machine()
        var q = Properties()
        q.authenticationData = ByteBuffer(string: "x")
        let r4 = n.packetReceived(connect(version: .v5, properties: q))
        #expect(connAckCode(r4) == .protocolError)
    }

    @Test("MQTT-3.2.2-12: a will above max_qos is refused with 0x9B (v5)")
    func willAboveMaximumQoS() {
        var m = machine { $0.maximumQoS = .atLeastOnce }
        let will = Will(topic: "w", payload: ByteBuffer(), qos: .exactlyOnce)
        let r5 = m.packetReceived(connect(version: .v5, will: will))
        #expect(connAckCode(r5) == .qosNotSupported)
    }

    @Test("MQTT-3.1.3-8: an empty client id with clean session 0 is refused (0x02); MQTT-3.1.3-6: with clean session 1 one is assigned")
    func emptyClientIdentifier() {
        var m = machine()
        _ = m.packetReceived(connect("", cleanStart: false))
        let r6 = m.authenticated(.accepted)
        #expect(connAckCode(r6) == ReasonCode(ConnectReturnCode.identifierRejected.rawValue))

        var n = machine()
        _ = n.packetReceived(connect("", version: .v5))
        guard case .attach(let request) = n.authenticated(.accepted) else { Issue.record("not attached"); return }
        #expect(request.clientID.hasPrefix("martlet-"))
        guard case .send(.connack(let ack)) = n.sessionAttached(sessionPresent: false) else { Issue.record("no CONNACK"); return }
        #expect(ack.properties.assignedClientIdentifier == request.clientID)
    }

    @Test("a failed authentication is refused with the version's code: 0x04 / 0x86 for bad credentials, 0x05 / 0x87 not authorized")
    func authenticationOutcomes() {
        var m = machine()
        _ = m.packetReceived(connect())
        let r7 = m.authenticated(.badCredentials)
        #expect(connAckCode(r7) == ReasonCode(ConnectReturnCode.badUserNameOrPassword.rawValue))
        var n = machine()
        _ = n.packetReceived(connect(version: .v5))
        let r8 = n.authenticated(.notAuthorized)
        #expect(connAckCode(r8) == .notAuthorized)
        var o = machine()
        _ = o.packetReceived(connect(version: .v5))
        let r9 = o.authenticationFailed("thread pool gone")
        #expect(connAckCode(r9) == .serverUnavailable)
    }

    @Test("the will's topic goes to the ACL before the session is attached; a refusal is 0x87 and no will is kept")
    func willAuthorization() {
        var m = machine()
        _ = m.packetReceived(connect(version: .v5, will: Will(topic: "w/t", payload: ByteBuffer())))
        let r10 = m.authenticated(.accepted)
        #expect(r10 == .authorizeWill(topic: "w/t", username: nil, clientID: "c"))
        let r11 = m.willAuthorized(false)
        #expect(connAckCode(r11) == .notAuthorized)
        let r12 = m.channelInactive()
        #expect(r12 == nil)
    }

    @Test("MQTT-3.2.2-21: above max_keepalive a v5 client is given the server's keepalive, a 3.1.1 client is refused")
    func maximumKeepalive() {
        var m = machine { $0.maximumKeepalive = 30 }
        _ = m.packetReceived(connect(version: .v5, keepAlive: 0))
        guard case .attach = m.authenticated(.accepted) else { Issue.record("not attached"); return }
        guard case .send(.connack(let ack)) = m.sessionAttached(sessionPresent: true) else { Issue.record("no CONNACK"); return }
        #expect(ack.properties.serverKeepAlive == 30)
        #expect(ack.sessionPresent)

        var n = machine { $0.maximumKeepalive = 30 }
        _ = n.packetReceived(connect(keepAlive: 60))
        let r13 = n.authenticated(.accepted)
        #expect(connAckCode(r13) == ReasonCode(ConnectReturnCode.identifierRejected.rawValue))
    }

    @Test("MQTT 3.1 has no Session Present: CONNACK byte 1 stays 0 for a resumed 3.1 session")
    func mqtt31HasNoSessionPresent() {
        var m = machine()
        _ = m.packetReceived(connect(version: .v3_1))
        _ = m.authenticated(.accepted)
        let r14 = m.sessionAttached(sessionPresent: true)
        #expect(r14 == .send(.connack(ConnAckPacket(sessionPresent: false))))
    }

    @Test("MQTT-3.1.2-2: an unknown protocol level is answered CONNACK 0x01 in the 3.1.1 format, then closed")
    func unsupportedProtocolLevel() {
        var m = machine()
        guard case .close(let closing) = m.decodeFailed(.unsupportedProtocolVersion(9)) else { Issue.record("not closed"); return }
        #expect(closing.farewell == .connack(ConnAckPacket(reasonCode: ReasonCode(ConnectReturnCode.unacceptableProtocolVersion.rawValue))))
        #expect(closing.version == .v3_1_1)
    }

    // MARK: Authenticating and attaching

    @Test("packets after CONNECT wait while it is authenticated and attached, and are handed back in order after CONNACK")
    func packetsBufferedUntilAttached() {
        var m = machine()
        _ = m.packetReceived(connect())
        let publish = MQTTPacket.publish(PublishPacket(topic: "t", payload: ByteBuffer(), qos: .atLeastOnce, packetIdentifier: 1))
        let r15 = m.packetReceived(publish)
        #expect(r15 == .none)
        _ = m.authenticated(.accepted)
        let r16 = m.packetReceived(.pingreq)
        #expect(r16 == .none)
        #expect(m.isAwaitingSession)
        _ = m.sessionAttached(sessionPresent: false)
        let replay = m.takeBufferedPackets()
        #expect(replay == [publish, .pingreq])
        let r17 = m.packetReceived(replay[0])
        #expect(r17 == .route(PublishPacket(topic: "t", payload: ByteBuffer(), qos: .atLeastOnce, packetIdentifier: 1), clientID: "c"))
        let r18 = m.packetReceived(replay[1])
        #expect(r18 == .send(.pingresp))
    }

    @Test("MQTT-3.1.0-2: a second CONNECT while the first is authenticated closes; more than 1,024 waiting packets close with 0x93")
    func boundsBeforeConnAck() {
        var m = machine()
        _ = m.packetReceived(connect())
        guard case .close(let closing) = m.packetReceived(connect()) else { Issue.record("not closed"); return }
        #expect(closing.reason == .protocolError(.protocolError, "second CONNECT (MQTT-3.1.0-2)"))

        var n = machine()
        _ = n.packetReceived(connect())
        for _ in 0..<Machine.maximumBufferedPackets {
            let action = n.packetReceived(.pingreq)
            #expect(action == .none)
        }
        guard case .close(let over) = n.packetReceived(.pingreq), case .protocolError(let code, _) = over.reason else {
            Issue.record("not closed")
            return
        }
        #expect(code == .receiveMaximumExceeded)
    }

    @Test("a connection closed while its password is verified ignores the late outcome")
    func lateAuthenticationIgnored() {
        var m = machine()
        _ = m.packetReceived(connect())
        let r20 = m.timerTick(now: start + .seconds(11))
        #expect(r20 != nil)
        let r21 = m.authenticated(.accepted)
        #expect(r21 == .none)
    }

    // MARK: Time

    @Test("MQTT-3.1.2-24: silence of 1.5 × the keepalive closes with 0x8D (v5), and not a moment before")
    func keepaliveExpiry() {
        var m = machine()
        connected(&m, version: .v5, keepAlive: 10)
        m.bytesReceived(now: start + .seconds(5))
        let r22 = m.timerTick(now: start + .seconds(20))
        #expect(r22 == nil)  // 15 s of silence: exactly 1.5 ×
        let closing = m.timerTick(now: start + .seconds(20) + .milliseconds(1))
        #expect(closing?.reason == .keepAliveTimeout)
        #expect(closing?.farewell == .disconnect(DisconnectPacket(reasonCode: .keepAliveTimeout)))
        #expect(closing?.lost?.clientID == "c")
    }

    @Test("keepalive 0 never expires; a connection paused by flow control is not blamed for silence")
    func keepaliveExceptions() {
        var m = machine()
        connected(&m, keepAlive: 0)
        let r23 = m.timerTick(now: start + .seconds(86_400))
        #expect(r23 == nil)

        var n = machine()
        connected(&n, keepAlive: 10)
        _ = n.packetReceived(.publish(PublishPacket(topic: "t", payload: ByteBuffer())))
        let r24 = n.readBurstEnded(writable: true, shouldPause: { true })
        #expect(r24)
        let r25 = n.timerTick(now: start + .seconds(60))
        #expect(r25 == nil)
        let r26 = n.readWanted()  // NIO asks to read while paused: the read waits
        #expect(!r26)
        let resumed = n.resumed(now: start + .seconds(60))
        #expect(resumed == .init(read: true))
        let r27 = n.timerTick(now: start + .seconds(70))
        #expect(r27 == nil)  // the pause reset the silence
        let r28 = n.timerTick(now: start + .seconds(75))
        #expect(r28 == nil)
        let r29 = n.timerTick(now: start + .seconds(75) + .milliseconds(1))
        #expect(r29?.reason == .keepAliveTimeout)
    }

    @Test("connect_timeout closes a connection that has not finished CONNECT, counted, without a DISCONNECT")
    func connectTimeout() {
        var m = machine { $0.connectTimeout = .seconds(10) }
        let r30 = m.timerTick(now: start + .seconds(10))
        #expect(r30 == nil)
        let closing = m.timerTick(now: start + .seconds(10) + .milliseconds(1))
        #expect(closing?.reason == .connectTimeout)
        #expect(closing?.reason.counter == \.connectTimeouts)
        #expect(closing?.farewell == nil)
    }

    @Test("write_timeout closes a connection whose socket stayed unwritable that long; writable again resets it")
    func writeTimeout() {
        var m = machine { $0.writeTimeout = .seconds(60) }
        connected(&m, keepAlive: 0)
        _ = m.writabilityChanged(writable: false, now: start)
        let r31 = m.timerTick(now: start + .seconds(60))
        #expect(r31 == nil)
        let r32 = m.writabilityChanged(writable: true, now: start + .seconds(59))
        #expect(r32 == .init(read: false, drainSession: true))
        let r33 = m.timerTick(now: start + .seconds(100))
        #expect(r33 == nil)
        _ = m.writabilityChanged(writable: false, now: start + .seconds(100))
        let r34 = m.timerTick(now: start + .seconds(160) + .milliseconds(1))
        #expect(r34?.reason == .writeTimeout)
    }

    // MARK: Takeover and closing

    @Test("MQTT-3.1.4-3: a connection taken over closes with 0x8E (v5), hands its will and delay over, and does not report itself lost")
    func takeover() {
        var m = machine()
        var p = Properties()
        p.willDelayInterval = 30
        connected(&m, version: .v5, will: Will(topic: "w", payload: ByteBuffer(string: "gone"), properties: p))
        let (closing, will) = m.takenOver()
        #expect(closing?.farewell == .disconnect(DisconnectPacket(reasonCode: .sessionTakenOver)))
        #expect(closing?.lost == nil)
        #expect(will?.0.topic == "w")
        #expect(will?.0.properties.willDelayInterval == nil)  // the delay travels beside it
        #expect(will?.1 == 30)
        let r35 = m.channelInactive()
        #expect(r35 == nil)
    }

    @Test("MQTT-3.14.4-3: DISCONNECT discards the will; v5 0x04 keeps it; MQTT-3.14.2-2: expiry on DISCONNECT after 0 is a protocol error")
    func disconnectRules() {
        let will = Will(topic: "w", payload: ByteBuffer())
        var m = machine()
        connected(&m, will: will)
        guard case .close(let c3) = m.packetReceived(.disconnect(DisconnectPacket())) else { Issue.record("not closed"); return }
        #expect(c3.lost?.will == nil)
        #expect(c3.reason.counter == nil)

        var n = machine()
        connected(&n, version: .v5, will: will)
        guard case .close(let c5) = n.packetReceived(.disconnect(DisconnectPacket(reasonCode: .disconnectWithWillMessage))) else {
            Issue.record("not closed")
            return
        }
        #expect(c5.lost?.will?.topic == "w")

        var o = machine()
        connected(&o, version: .v5)
        var p = Properties()
        p.sessionExpiryInterval = 60
        guard case .close(let bad) = o.packetReceived(.disconnect(DisconnectPacket(properties: p))) else { Issue.record("not closed"); return }
        #expect(bad.farewell == .disconnect(DisconnectPacket(reasonCode: .protocolError)))
    }

    @Test("a closed connection's socket going away reports nothing twice; one dropped without DISCONNECT reports its will")
    func channelInactiveReportsOnce() {
        let will = Will(topic: "w", payload: ByteBuffer())
        var m = machine()
        connected(&m, will: will)
        let r36 = m.channelInactive()
        #expect(r36?.will?.topic == "w")
        let r37 = m.channelInactive()
        #expect(r37 == nil)
        let r38 = m.close(.slowConsumer)
        #expect(r38 == nil)
    }

    @Test("server-only packets from a client close with 0x82; PUBLISH with a subscription identifier too (MQTT-3.3.4-6)")
    func serverPacketsFromClient() {
        var m = machine()
        connected(&m, version: .v5)
        guard case .close(let c) = m.packetReceived(.pingresp) else { Issue.record("not closed"); return }
        #expect(c.farewell == .disconnect(DisconnectPacket(reasonCode: .protocolError)))

        var n = machine()
        connected(&n, version: .v5)
        var p = Properties()
        p.elements.append(Property(.subscriptionIdentifier, .variableByteInteger(3)))
        guard case .close = n.packetReceived(.publish(PublishPacket(topic: "t", payload: ByteBuffer(), properties: p))) else {
            Issue.record("not closed")
            return
        }
    }

    @Test("MQTT 5 3.3.2.3.4: a topic alias sets a topic, an empty topic uses it, an unknown one is 0x82 and one above the maximum 0x94")
    func topicAliases() {
        var m = machine { $0.maximumTopicAlias = 2 }
        connected(&m, version: .v5)
        var p = Properties()
        p.topicAlias = 1
        let r39 = m.packetReceived(.publish(PublishPacket(topic: "a/b", payload: ByteBuffer(), properties: p)))
        #expect(r39
            == .route(PublishPacket(topic: "a/b", payload: ByteBuffer(), properties: p), clientID: "c"))
        let r40 = m.packetReceived(.publish(PublishPacket(topic: "", payload: ByteBuffer(), properties: p)))
        #expect(r40
            == .route(PublishPacket(topic: "a/b", payload: ByteBuffer(), properties: p), clientID: "c"))
        p.topicAlias = 2
        guard case .close(let unknown) = m.packetReceived(.publish(PublishPacket(topic: "", payload: ByteBuffer(), properties: p))) else {
            Issue.record("not closed")
            return
        }
        #expect(unknown.farewell == .disconnect(DisconnectPacket(reasonCode: .protocolError)))

        var n = machine { $0.maximumTopicAlias = 2 }
        connected(&n, version: .v5)
        p.topicAlias = 3
        guard case .close(let over) = n.packetReceived(.publish(PublishPacket(topic: "x", payload: ByteBuffer(), properties: p))) else {
            Issue.record("not closed")
            return
        }
        #expect(over.farewell == .disconnect(DisconnectPacket(reasonCode: .topicAliasInvalid)))
    }

    // MARK: Flow control

    @Test("a PUBLISH that met a lagging subscriber holds the rest of the read and stops reads until resumed; held packets are decoded first")
    func inboundPauseAndResume() {
        var m = machine()
        connected(&m)
        _ = m.packetReceived(.publish(PublishPacket(topic: "t", payload: ByteBuffer(), qos: .atLeastOnce, packetIdentifier: 7)))
        let reply = m.routed(Router.PublishVerdict(reply: .puback(PubAckPacket(packetIdentifier: 7)), publisherMustWait: true))
        #expect(reply == .init(packet: .puback(PubAckPacket(packetIdentifier: 7)), holdPublisher: true))
        #expect(m.holdingPackets)
        let r41 = m.readWanted()
        #expect(r41 == false)
        let r42 = m.inputEnded()
        #expect(r42 == false)  // EOF while holding: the held packets are still routed
        let r43 = m.resumed(now: start + .seconds(1))
        #expect(r43 == .init(decodeHeld: true))
        let r44 = m.heldPacketsDecoded(now: start + .seconds(1))
        #expect(r44 == .init(close: true))
    }

    @Test("a publisher paused at the end of a burst reads again on resume, and not before; a socket that does not drain stops reads too")
    func pausedAtEndOfBurst() {
        var m = machine()
        connected(&m)
        let r45 = m.readBurstEnded(writable: true, shouldPause: { Issue.record("asked without a PUBLISH"); return true })
        #expect(!r45)
        _ = m.packetReceived(.publish(PublishPacket(topic: "t", payload: ByteBuffer())))
        let r46 = m.readBurstEnded(writable: false, shouldPause: { true })
        #expect(r46)
        let r47 = m.readWanted()
        #expect(!r47)
        let r48 = m.resumed(now: start)
        #expect(r48 == .init(read: false))  // still not writable
        let r49 = m.writabilityChanged(writable: true, now: start)
        #expect(r49 == .init(read: true, drainSession: true))
        let r50 = m.readWanted()
        #expect(r50)
    }

    @Test("MQTT 5 3.3.4: a QoS 2 PUBLISH over the Receive Maximum closes with 0x93")
    func receiveMaximumExceeded() {
        var m = machine()
        connected(&m, version: .v5)
        let reply = m.routed(Router.PublishVerdict(receiveMaximumExceeded: true))
        #expect(reply.close?.farewell == .disconnect(DisconnectPacket(reasonCode: .receiveMaximumExceeded)))
        #expect(reply.packet == nil)
    }
}
