import MartletAuth
import MartletMQTT
import NIOCore

/// CONNECT: what is refused before authentication, the outcome of authentication, the
/// client id, the will's ACL check, keepalive, and CONNACK once the session is attached.
extension ConnectionStateMachine {
    mutating func connectReceived(_ connect: ConnectPacket) -> Action {
        let v = connect.protocolVersion
        if let refusal {
            return refuse(v, clientLimit: connect.properties.maximumPacketSize ?? .max, v3: refusal.v3, v5: refusal.v5, refusal.why)
        }
        if !configuration.serverReference.isEmpty {
            // Redirected (MQTT 5 4.11): the client should connect to the referenced server.
            let moved = configuration.serverMoved
            guard case .close(var closing) = refuse(
                v, clientLimit: connect.properties.maximumPacketSize ?? .max, v3: .serverUnavailable,
                v5: moved ? .serverMoved : .useAnotherServer, "redirected to \(configuration.serverReference)") else { return .none }
            if v == .v5, case .connack(var ack)? = closing.farewell {
                ack.properties.serverReference = configuration.serverReference
                // Within the client's Maximum Packet Size (MQTT-3.1.2-24): the Reason String
                // gives way first.
                let limit = Int(connect.properties.maximumPacketSize ?? .max)
                if MQTTPacket.connack(ack).encodedLength(version: .v5) > limit { ack.properties.reasonString = nil }
                closing.farewell = .connack(ack)
            }
            return .close(closing)
        }
        if v == .v5, connect.properties.authenticationMethod == nil, connect.properties.authenticationData != nil {
            return refuse(v, clientLimit: connect.properties.maximumPacketSize ?? .max, v3: .serverUnavailable, v5: .protocolError, "authentication data without an authentication method (MQTT 5 3.1.2.11.10)")
        }
        if v == .v5, let method = connect.properties.authenticationMethod {
            // No enhanced authentication: refused and closed (MQTT-4.12.0-1).
            return refuse(v, clientLimit: connect.properties.maximumPacketSize ?? .max, v3: .notAuthorized, v5: .badAuthenticationMethod, "unsupported authentication method \(method)")
        }
        if let will = connect.will {
            if will.qos > configuration.maximumQoS {
                return refuse(v, clientLimit: connect.properties.maximumPacketSize ?? .max, v3: .serverUnavailable, v5: .qosNotSupported, "will QoS above max_qos (MQTT-3.2.2-12)")
            }
            if will.retain, !configuration.retainAvailable {
                return refuse(v, clientLimit: connect.properties.maximumPacketSize ?? .max, v3: .serverUnavailable, v5: .retainNotSupported, "retained will while retain_available is false (MQTT-3.2.2-13)")
            }
            if !Topic.isWithin(will.topic, maximumLength: configuration.maximumTopicLength, maximumLevels: configuration.maximumTopicLevels) {
                if v == .v5 {
                    return refuse(v, clientLimit: connect.properties.maximumPacketSize ?? .max, v3: .serverUnavailable, v5: .topicNameInvalid, "will topic beyond max_topic_length or max_topic_levels")
                }
                return closeAction(.protocolError(.topicNameInvalid, "will topic beyond max_topic_length or max_topic_levels"))
            }
        }
        // The certificate's identity, or the user name and password of CONNECT. Without an
        // identity (no verified certificate, or one with neither CN nor SAN) a listener that
        // takes it as the user name refuses the client, as mosquitto does.
        if listener.useIdentityAsUsername && certificateIdentity == nil {
            return refuse(v, v3: .badUserNameOrPassword, v5: .badUserNameOrPassword, "no verified client certificate identity (use_identity_as_username)")
        }
        let username = listener.useIdentityAsUsername ? certificateIdentity : connect.username
        state = .authenticating(connect, username: username)
        return .authenticate(
            username: username, password: connect.password.map { Array($0.readableBytesView) },
            allowAnonymous: listener.allowAnonymous, identityIsUsername: listener.useIdentityAsUsername && username != nil)
    }

    /// The credentials were checked: the client id is settled, then the will's topic goes
    /// to the ACL.
    mutating func authenticated(_ outcome: Authenticator.Outcome) -> Action {
        guard case .authenticating(let connect, let username) = state else { return .none }
        let v = connect.protocolVersion
        switch outcome {
        case .accepted:
            break
        case .notAuthorized:
            return refuse(v, v3: .notAuthorized, v5: .notAuthorized, "not authorized (user \(username ?? "(anonymous)"))")
        case .badCredentials:
            return refuse(v, v3: .badUserNameOrPassword, v5: .badUserNameOrPassword, "bad user name or password (user \(username ?? ""))")
        }
        var clientID = connect.clientIdentifier
        var assigned = false
        if clientID.isEmpty {
            // 3.1.1 assigns an id only to clean sessions (MQTT-3.1.3-7/8); v5 always may.
            guard connect.cleanStart || v == .v5 else {
                return refuse(v, v3: .identifierRejected, v5: .clientIdentifierNotValid, "empty client id without clean session (MQTT-3.1.3-8)")
            }
            clientID = "martlet-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
            assigned = true
        }
        guard Session.isBridge(clientID) == (listener.bridgeQueue != nil) else {
            return refuse(v, v3: .identifierRejected, v5: .clientIdentifierNotValid, "client ids starting with $bridge/ are the broker's bridges'")
        }
        guard clientID.utf8.count <= configuration.maximumClientIdentifierLength else {
            return refuse(v, v3: .identifierRejected, v5: .clientIdentifierNotValid, "client id longer than max_client_id_length")
        }
        let expiry: UInt32 = v == .v5 ? connect.properties.sessionExpiryInterval ?? 0 : (connect.cleanStart ? 0 : Session.neverExpires)
        let will = connect.will.map { w -> Message in
            var properties = w.properties
            properties.set(.willDelayInterval, nil)
            return Message(topic: w.topic, payload: w.payload, qos: w.qos, retain: w.retain, properties: properties, publisherID: clientID)
        }
        let c = Admission(
            connected: Connected(
                clientID: clientID, version: v, will: will, willDelay: v == .v5 ? connect.will?.properties.willDelayInterval ?? 0 : 0,
                keepAlive: nil, sessionExpiryAtConnect: expiry, assignedClientID: assigned, serverKeepAlive: nil,
                wantsResponseInformation: v == .v5 && connect.properties.requestResponseInformation == 1,
                maximumPacketSize: connect.properties.maximumPacketSize ?? .max),
            username: username, cleanStart: connect.cleanStart, keepAliveAsked: connect.keepAlive,
            receiveMaximum: Int(connect.properties.receiveMaximum ?? UInt16.max),
            maximumPacketSize: connect.properties.maximumPacketSize.map { Int($0) } ?? .max,
            topicAliasMaximum: Int(connect.properties.topicAliasMaximum ?? 0))
        if let will {
            state = .authorizingWill(c)
            return .authorizeWill(topic: will.topic, username: username, clientID: clientID)
        }
        return admit(c)
    }

    /// Checking the password failed (not: the password was wrong).
    mutating func authenticationFailed(_ why: String) -> Action {
        guard case .authenticating(let connect, _) = state else { return .none }
        return refuse(connect.protocolVersion, v3: .serverUnavailable, v5: .serverUnavailable, "cannot verify the password: \(why)")
    }

    mutating func willAuthorized(_ allowed: Bool) -> Action {
        guard case .authorizingWill(let c) = state else { return .none }
        guard allowed else {
            return refuse(c.connected.version, v3: .notAuthorized, v5: .notAuthorized,
                          "the ACL does not allow the will topic \(c.connected.will?.topic ?? "")")
        }
        return admit(c)
    }

    /// Keepalive settled (above `max_keepalive`: v5 is told the server's value in CONNACK,
    /// MQTT-3.2.2-21; 3.1.1 cannot be, and is refused), then the session is attached.
    private mutating func admit(_ admission: Admission) -> Action {
        var c = admission.connected
        var keepAlive = admission.keepAliveAsked
        if configuration.maximumKeepalive > 0 && (keepAlive == 0 || keepAlive > configuration.maximumKeepalive) {
            guard c.version == .v5 else {
                return refuse(c.version, v3: .identifierRejected, v5: .unspecifiedError, "keepalive \(keepAlive) s above max_keepalive")
            }
            keepAlive = configuration.maximumKeepalive
            c.serverKeepAlive = keepAlive
        }
        c.keepAlive = keepAlive == 0 ? nil : .milliseconds(Int64(keepAlive) * 1500)
        state = .attaching(c)
        return .attach(Router.ConnectRequest(
            clientID: c.clientID, version: c.version, cleanStart: admission.cleanStart, expiryInterval: c.sessionExpiryAtConnect,
            receiveMaximum: admission.receiveMaximum, maximumPacketSize: admission.maximumPacketSize,
            policy: listener.slowConsumerPolicy, username: admission.username, topicAliasMaximum: admission.topicAliasMaximum,
            will: c.will, willDelay: c.willDelay, queueBounds: listener.bridgeQueue))
    }

    /// The session is attached: CONNACK, with the v5 properties that say what this server
    /// supports and its limits.
    mutating func sessionAttached(sessionPresent: Bool) -> Action {
        guard case .attaching(let c) = state else { return .none }
        var properties = Properties()
        if c.version == .v5 {
            if c.assignedClientID { properties.assignedClientIdentifier = c.clientID }
            if let k = c.serverKeepAlive { properties.serverKeepAlive = k }
            properties.maximumPacketSize = UInt32(clamping: configuration.maximumPacketSize)
            if configuration.receiveMaximum < 65_535 { properties.receiveMaximum = UInt16(configuration.receiveMaximum) }
            if configuration.maximumTopicAlias > 0 { properties.topicAliasMaximum = UInt16(configuration.maximumTopicAlias) }
            if configuration.maximumQoS < .exactlyOnce { properties.maximumQoS = configuration.maximumQoS.rawValue }
            if !configuration.retainAvailable { properties.retainAvailable = 0 }
            if c.wantsResponseInformation && !configuration.responseInformationPrefix.isEmpty {
                properties.responseInformation = configuration.responseInformationPrefix + c.clientID
            }
        }
        state = .connected(c)
        // MQTT 3.1 has no Session Present: the byte is reserved and stays 0.
        return .send(.connack(ConnAckPacket(sessionPresent: sessionPresent && c.version != .v3_1, reasonCode: .success, properties: properties)))
    }

    /// The client id's session belongs to another identity (`session_other_identity: refuse`):
    /// CONNACK 0x05 / v5 0x87 and closed; the will is not published.
    mutating func sessionRefused() -> Action {
        guard case .attaching(let c) = state else { return .none }
        return refuse(c.version, v3: .notAuthorized, v5: .notAuthorized, "the client id's session belongs to another identity")
    }

    /// The cluster could not read the session's record (JetStream without a leader, NATS
    /// down): refused rather than started empty, so the client tries again.
    mutating func sessionUnavailable() -> Action {
        guard case .attaching(let c) = state else { return .none }
        return refuse(c.version, v3: .serverUnavailable, v5: .serverUnavailable, "the cluster could not read the session's record")
    }

    /// Packets that arrived before CONNACK, handled once the session is attached.
    mutating func takeBufferedPackets() -> [MQTTPacket] {
        defer { buffered = [] }
        return buffered
    }

    /// Another connection took over this client id: closed with 0x8E; the will (with its
    /// delay) goes to the router that took the session over.
    mutating func takenOver() -> (closing: Closing?, will: (Message, UInt32)?) {
        var will: (Message, UInt32)?
        switch state {
        case .connected(let c), .attaching(let c): will = c.will.map { ($0, c.willDelay) }
        default: will = nil
        }
        var closing = close(.sessionTakenOver)
        closing?.lost = nil
        return (closing, will)
    }

    /// CONNACK with the refusal's code (in the client's version), then closed: no session,
    /// no will.
    private mutating func refuse(_ version: ProtocolVersion, clientLimit: UInt32? = nil, v3: ConnectReturnCode, v5: ReasonCode,
                                 _ why: String) -> Action {
        let limit = clientLimit ?? clientMaximumPacketSize
        state = .closed
        let code = version == .v5 ? v5 : ReasonCode(v3.rawValue)
        var ack = ConnAckPacket(sessionPresent: false, reasonCode: code)
        if version == .v5 {
            explain(&ack.properties, why, within: limit) {
                MQTTPacket.connack(ConnAckPacket(reasonCode: code, properties: $0)).encodedLength(version: .v5)
            }
        }
        return .close(Closing(reason: .refused(why), farewell: .connack(ack), version: version))
    }

    /// The Maximum Packet Size of the CONNECT being handled.
    private var clientMaximumPacketSize: UInt32 {
        switch state {
        case .authenticating(let connect, _): return connect.properties.maximumPacketSize ?? .max
        case .authorizingWill(let a): return a.connected.maximumPacketSize
        case .attaching(let c), .connected(let c): return c.maximumPacketSize
        case .awaitingConnect, .closed: return .max
        }
    }
}
