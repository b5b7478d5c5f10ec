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
        configuration.reasonStrings = false  // the tests compare whole packets; `reasonStrings` turns it on
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
        let v5 = refused.packetReceived(connect(version: .v5))
        #expect(connAckCode(v5) == .serverBusy)
        var refused3 = machine(refusal: Refusal(v3: .serverUnavailable, v5: .serverBusy, why: "max_connections"))
        let v3 = refused3.packetReceived(connect())
        #expect(connAckCode(v3) == ReasonCode(ConnectReturnCode.serverUnavailable.rawValue))
    }

    @Test("MQTT-4.12.0-1 and MQTT 5 3.1.2.11.10: an authentication method is refused with 0x8C; data without a method with 0x82")
    func enhancedAuthenticationRefused() {
        var m = machine()
        var p = Properties()
        p.authenticationMethod = "SCRAM-SHA-1"
        let action = m.packetReceived(connect(version: .v5, properties: p))
        #expect(connAckCode(action) == .badAuthenticationMethod)
        var n = machine()
        var q = Properties()
        q.authenticationData = ByteBuffer(string: "x")
        let action2 = n.packetReceived(connect(version: .v5, properties: q))
        #expect(connAckCode(action2) == .protocolError)
    }

    @Test("MQTT-3.2.2-12: a will above max_qos is refused with 0x9B (v5)")
    func willAboveMaximumQoS() {
        var m = machine { $0.maximumQoS = .atLeastOnce }
        let will = Will(topic: "w", payload: ByteBuffer(), qos: .exactlyOnce)
        let action = m.packetReceived(connect(version: .v5, will: will))
        #expect(connAckCode(action) == .qosNotSupported)
    }

    @Test("MQTT-3.1.3-8: an empty client id with clean session 0 is refused (0x02); MQTT-3.1.3-6: with clean session 1 one is assigned")
    func emptyClientIdentifier() {
        var m = machine()
        _ = m.packetReceived(connect("", cleanStart: false))
        let afterAuthentication = m.authenticated(.accepted)
        #expect(connAckCode(afterAuthentication) == ReasonCode(ConnectReturnCode.identifierRejected.rawValue))

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
        let afterAuthentication = m.authenticated(.badCredentials)
        #expect(connAckCode(afterAuthentication) == ReasonCode(ConnectReturnCode.badUserNameOrPassword.rawValue))
        var n = machine()
        _ = n.packetReceived(connect(version: .v5))
        let afterAuthentication2 = n.authenticated(.notAuthorized)
        #expect(connAckCode(afterAuthentication2) == .notAuthorized)
        var o = machine()
        _ = o.packetReceived(connect(version: .v5))
        let afterFailure = o.authenticationFailed("thread pool gone")
        #expect(connAckCode(afterFailure) == .serverUnavailable)
    }

    @Test("the will's topic goes to the ACL before the session is attached; a refusal is 0x87 and no will is kept")
    func willAuthorization() {
        var m = machine()
        _ = m.packetReceived(connect(version: .v5, will: Will(topic: "w/t", payload: ByteBuffer())))
        let afterAuthentication = m.authenticated(.accepted)
        #expect(afterAuthentication == .authorizeWill(topic: "w/t", username: nil, clientID: "c"))
        let afterWillCheck = m.willAuthorized(false)
        #expect(connAckCode(afterWillCheck) == .notAuthorized)
        let lost = m.channelInactive()
        #expect(lost == nil)
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
        let afterAuthentication = n.authenticated(.accepted)
        #expect(connAckCode(afterAuthentication) == ReasonCode(ConnectReturnCode.identifierRejected.rawValue))
    }

    @Test("MQTT 3.1 has no Session Present: CONNACK byte 1 stays 0 for a resumed 3.1 session")
    func mqtt31HasNoSessionPresent() {
        var m = machine()
        _ = m.packetReceived(connect(version: .v3_1))
        _ = m.authenticated(.accepted)
        let connack = m.sessionAttached(sessionPresent: true)
        #expect(connack == .send(.connack(ConnAckPacket(sessionPresent: false))))
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
        let action = m.packetReceived(publish)
        #expect(action == .none)
        _ = m.authenticated(.accepted)
        let action2 = m.packetReceived(.pingreq)
        #expect(action2 == .none)
        #expect(m.isAwaitingSession)
        _ = m.sessionAttached(sessionPresent: false)
        let replay = m.takeBufferedPackets()
        #expect(replay == [publish, .pingreq])
        let action3 = m.packetReceived(replay[0])
        #expect(action3 == .route(PublishPacket(topic: "t", payload: ByteBuffer(), qos: .atLeastOnce, packetIdentifier: 1), clientID: "c"))
        let action4 = m.packetReceived(replay[1])
        #expect(action4 == .send(.pingresp))
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
        let tick = m.timerTick(now: start + .seconds(11))
        #expect(tick != nil)
        let afterAuthentication = m.authenticated(.accepted)
        #expect(afterAuthentication == .none)
    }

    // MARK: Time

    @Test("MQTT-3.1.2-24: silence of 1.5 × the keepalive closes with 0x8D (v5), and not a moment before")
    func keepaliveExpiry() {
        var m = machine()
        connected(&m, version: .v5, keepAlive: 10)
        m.bytesReceived(now: start + .seconds(5))
        let tick = m.timerTick(now: start + .seconds(20))
        #expect(tick == nil)  // 15 s of silence: exactly 1.5 ×
        let closing = m.timerTick(now: start + .seconds(20) + .milliseconds(1))
        #expect(closing?.reason == .keepAliveTimeout)
        #expect(closing?.farewell == .disconnect(DisconnectPacket(reasonCode: .keepAliveTimeout)))
        #expect(closing?.lost?.clientID == "c")
    }

    @Test("keepalive 0 never expires; a connection paused by flow control is not blamed for silence")
    func keepaliveExceptions() {
        var m = machine()
        connected(&m, keepAlive: 0)
        let tick = m.timerTick(now: start + .seconds(86_400))
        #expect(tick == nil)

        var n = machine()
        connected(&n, keepAlive: 10)
        _ = n.packetReceived(.publish(PublishPacket(topic: "t", payload: ByteBuffer())))
        let pausedNow = n.readBurstEnded(writable: true, shouldPause: { true })
        #expect(pausedNow)
        let tick2 = n.timerTick(now: start + .seconds(60))
        #expect(tick2 == nil)
        let mayRead = n.readWanted()  // NIO asks to read while paused: the read waits
        #expect(!mayRead)
        let resumed = n.resumed(now: start + .seconds(60))
        #expect(resumed == .init(read: true))
        let tick3 = n.timerTick(now: start + .seconds(70))
        #expect(tick3 == nil)  // the pause reset the silence
        let tick4 = n.timerTick(now: start + .seconds(75))
        #expect(tick4 == nil)
        let tick5 = n.timerTick(now: start + .seconds(75) + .milliseconds(1))
        #expect(tick5?.reason == .keepAliveTimeout)
    }

    @Test("connect_timeout closes a connection that has not finished CONNECT, counted, without a DISCONNECT")
    func connectTimeout() {
        var m = machine { $0.connectTimeout = .seconds(10) }
        let tick = m.timerTick(now: start + .seconds(10))
        #expect(tick == nil)
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
        let tick = m.timerTick(now: start + .seconds(60))
        #expect(tick == nil)
        let writability = m.writabilityChanged(writable: true, now: start + .seconds(59))
        #expect(writability == .init(read: false, drainSession: true))
        let tick2 = m.timerTick(now: start + .seconds(100))
        #expect(tick2 == nil)
        _ = m.writabilityChanged(writable: false, now: start + .seconds(100))
        let tick3 = m.timerTick(now: start + .seconds(160) + .milliseconds(1))
        #expect(tick3?.reason == .writeTimeout)
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
        let lost = m.channelInactive()
        #expect(lost == nil)
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
        let lost = m.channelInactive()
        #expect(lost?.will?.topic == "w")
        let lost2 = m.channelInactive()
        #expect(lost2 == nil)
        let closing = m.close(.slowConsumer)
        #expect(closing == nil)
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
        let action = m.packetReceived(.publish(PublishPacket(topic: "a/b", payload: ByteBuffer(), properties: p)))
        #expect(action
            == .route(PublishPacket(topic: "a/b", payload: ByteBuffer(), properties: p), clientID: "c"))
        let action2 = m.packetReceived(.publish(PublishPacket(topic: "", payload: ByteBuffer(), properties: p)))
        #expect(action2
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
        let mayRead = m.readWanted()
        #expect(mayRead == false)
        let closesNow = m.inputEnded()
        #expect(closesNow == false)  // EOF while holding: the held packets are still routed
        let resumption = m.resumed(now: start + .seconds(1))
        #expect(resumption == .init(decodeHeld: true))
        let afterHeld = m.heldPacketsDecoded(now: start + .seconds(1))
        #expect(afterHeld == .init(close: true))
    }

    @Test("a publisher paused at the end of a burst reads again on resume, and not before; a socket that does not drain stops reads too")
    func pausedAtEndOfBurst() {
        var m = machine()
        connected(&m)
        let pausedNow = m.readBurstEnded(writable: true, shouldPause: { Issue.record("asked without a PUBLISH"); return true })
        #expect(!pausedNow)
        _ = m.packetReceived(.publish(PublishPacket(topic: "t", payload: ByteBuffer())))
        let pausedNow2 = m.readBurstEnded(writable: false, shouldPause: { true })
        #expect(pausedNow2)
        let mayRead = m.readWanted()
        #expect(!mayRead)
        let resumption = m.resumed(now: start)
        #expect(resumption == .init(read: false))  // still not writable
        let writability = m.writabilityChanged(writable: true, now: start)
        #expect(writability == .init(read: true, drainSession: true))
        let mayRead2 = m.readWanted()
        #expect(mayRead2)
    }

    @Test("MQTT 5 3.3.4: a QoS 2 PUBLISH over the Receive Maximum closes with 0x93")
    func receiveMaximumExceeded() {
        var m = machine()
        connected(&m, version: .v5)
        let reply = m.routed(Router.PublishVerdict(receiveMaximumExceeded: true))
        #expect(reply.close?.farewell == .disconnect(DisconnectPacket(reasonCode: .receiveMaximumExceeded)))
        #expect(reply.packet == nil)
    }

    @Test("reason_strings: a v5 refusal and a server DISCONNECT say why in a Reason String, unless it would pass the client's Maximum Packet Size (MQTT-3.2.2-19, MQTT-3.14.2-3)")
    func reasonStrings() {
        var m = machine { $0.reasonStrings = true }
        connected(&m, version: .v5, keepAlive: 10)
        let closing = m.timerTick(now: start + .seconds(16))
        guard case .disconnect(let d)? = closing?.farewell else { Issue.record("no DISCONNECT"); return }
        #expect(d.reasonCode == .keepAliveTimeout && d.properties.reasonString?.hasPrefix("keepalive expired") == true)

        var small = Properties()
        small.maximumPacketSize = 8
        var n = machine { $0.reasonStrings = true; $0.maximumQoS = .atLeastOnce }
        let refused = n.packetReceived(connect(version: .v5, will: Will(topic: "w", payload: ByteBuffer(), qos: .exactlyOnce), properties: small))
        guard case .close(let c) = refused, case .connack(let ack)? = c.farewell else { Issue.record("not refused"); return }
        #expect(ack.reasonCode == .qosNotSupported)
        #expect(ack.properties.reasonString == nil)  // it would not fit in 8 bytes

        var o = machine { $0.reasonStrings = true; $0.maximumQoS = .atLeastOnce }
        let refusedLarge = o.packetReceived(connect(version: .v5, will: Will(topic: "w", payload: ByteBuffer(), qos: .exactlyOnce)))
        guard case .close(let c2) = refusedLarge, case .connack(let ack2)? = c2.farewell else { Issue.record("not refused"); return }
        #expect(ack2.reasonCode == .qosNotSupported)
        #expect(ack2.properties.reasonString == "will QoS above max_qos (MQTT-3.2.2-12)")
    }
}
