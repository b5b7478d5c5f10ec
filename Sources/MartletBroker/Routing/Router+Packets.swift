import MartletMQTT
import NIOCore

/// The packets of a connected client that concern its session: PUBLISH in, the QoS
/// acknowledgements of both directions, SUBSCRIBE and UNSUBSCRIBE. Replies go back to the
/// connection's state machine as verdicts; the connection sends them.
extension Router {
    /// What routing a client's PUBLISH came to, for its connection's state machine.
    struct PublishVerdict: Sendable, Equatable {
        /// PUBACK or PUBREC, sent after anything routing wrote.
        var reply: MQTTPacket?
        /// The message was queued for a lagging subscriber (or for a loop that has one, or
        /// past the unrouted bound): its publisher should stop being read now.
        var publisherMustWait = false
        /// One QoS 2 message more than the Receive Maximum: not routed.
        var receiveMaximumExceeded = false
    }

    /// What the session made of an acknowledgement, SUBSCRIBE or UNSUBSCRIBE.
    struct Answer: Sendable, Equatable {
        var reply: MQTTPacket?
        /// After the SUBACK, the retained messages of the new subscriptions (`sendRetained`).
        var sendRetained = false
        /// The packet breaks a rule that closes the connection (DISCONNECT 0x82); nothing of it
        /// was applied.
        var protocolError: String?
    }

    func received(_ publish: PublishPacket, clientID: String, connectionID: Int) -> PublishVerdict {
        guard let session = sessions[clientID], session.connectionID == connectionID, session.isOnline else { return PublishVerdict() }
        publisherMustWait = false
        receiveMaximumExceeded = false
        publishing = session
        store?.touched = false
        let reply = holdIfNeeded(receivedPublish(publish, from: session), session)
        publishing = nil
        return PublishVerdict(reply: reply, publisherMustWait: publisherMustWait, receiveMaximumExceeded: receiveMaximumExceeded)
    }

    func received(_ packet: MQTTPacket, clientID: String, connectionID: Int) -> Answer {
        guard let session = sessions[clientID], session.connectionID == connectionID, session.isOnline else { return Answer() }
        switch packet {
        case .puback(let ack):
            if let flight = session.inflight.acknowledge(ack.packetIdentifier) {
                storeRemoved(flight.delivery, session)
                flightClosed(session)
            }
        case .pubrec(let rec):
            let (outcome, flight) = session.inflight.received(pubrec: rec.packetIdentifier, failed: rec.reasonCode.isFailure)
            switch outcome {
            case .release, .releasedAlready:
                if outcome == .release, let flight, flight.delivery.storeSeq != 0, session.stored {
                    record(.stage(seq: flight.delivery.storeSeq, packetIdentifier: rec.packetIdentifier, .awaitingPubComp))
                }
                return Answer(reply: .pubrel(PubRelPacket(packetIdentifier: rec.packetIdentifier)))
            case .ended:
                if let flight { storeRemoved(flight.delivery, session) }
                flightClosed(session)
            case .unknown:
                return Answer(reply: .pubrel(PubRelPacket(packetIdentifier: rec.packetIdentifier, reasonCode: .packetIdentifierNotFound)))
            }
        case .pubcomp(let comp):
            if let flight = session.inflight.complete(comp.packetIdentifier) {
                storeRemoved(flight.delivery, session)
                flightClosed(session)
            }
        case .pubrel(let rel):
            let known = session.inboundQoS2.released(rel.packetIdentifier)
            if known && session.stored {
                record(.inboundQoS2(clientID: session.clientID, packetIdentifier: rel.packetIdentifier, added: false))
            }
            return Answer(reply: .pubcomp(PubCompPacket(packetIdentifier: rel.packetIdentifier, reasonCode: known ? .success : .packetIdentifierNotFound)))
        case .subscribe(let subscribe):
            return receivedSubscribe(subscribe, from: session)
        case .unsubscribe(let unsubscribe):
            var codes: [ReasonCode] = []
            for filter in unsubscribe.topicFilters {
                let existed = session.subscriptions.removeValue(forKey: filter) != nil
                if existed && session.stored { record(.unsubscribed(clientID: session.clientID, filter: filter)) }
                if existed, let share = SharedSubscription(filter) {
                    core.shared.unsubscribe(filter, filter: String(share.filter), clientID: session.clientID)
                    session.sharedGroups -= 1
                } else if existed {
                    trie.remove(filter: filter, subscriber: session)
                }
                codes.append(existed ? .success : .noSubscriptionExisted)
            }
            saveClusterSession(session)
            return Answer(reply: .unsuback(UnsubAckPacket(packetIdentifier: unsubscribe.packetIdentifier, reasonCodes: session.version == .v5 ? codes : [])))
        default:
            break
        }
        return Answer()
    }

    /// SUBACK is out: the session's retained feed starts.
    func sendRetained(clientID: String, connectionID: Int) {
        guard let session = sessions[clientID], session.connectionID == connectionID else { return }
        drain(session)
    }

    func receivedPublish(_ publish: PublishPacket, from session: Session) -> MQTTPacket? {
        local.messagesReceived += 1
        if !mayWrite(publish.topic, username: session.username, clientID: session.clientID) {
            // Not routed. v5 says why in the acknowledgement; 3.1.1 cannot, so the flow
            // completes as if delivered (as mosquitto does) and the refusal is counted.
            local.publishDenied += 1
            let code: ReasonCode = session.version == .v5 ? .notAuthorized : .success
            switch publish.delivery {
            case .atMostOnce: return nil
            case .atLeastOnce(let id): return .puback(PubAckPacket(packetIdentifier: id, reasonCode: code))
            case .exactlyOnce(let id): return .pubrec(PubRecPacket(packetIdentifier: id, reasonCode: code))
            }
        }
        var properties = publish.properties
        if !properties.isEmpty { properties.removeAll([.topicAlias, .subscriptionIdentifier]) }
        let message = Message(
            topic: publish.topic, payload: publish.payload, qos: publish.qos, retain: publish.retain,
            properties: properties, publisherID: session.clientID)
        switch publish.delivery {
        case .atMostOnce:
            self.publish(message)
            return nil
        case .atLeastOnce(let id):
            self.publish(message, forward: false)
            return forwardToCluster(message, acknowledging: .puback(PubAckPacket(packetIdentifier: id, reasonCode: routedCode(session))),
                                    for: session)
        case .exactlyOnce(let id):
            switch session.inboundQoS2.arrived(id, receiveMaximum: session.version == .v5 ? config.receiveMaximum : nil) {
            case .deliver:
                if session.stored {
                    // Exactly once across a restart: the id is stored before PUBREC goes.
                    record(.inboundQoS2(clientID: session.clientID, packetIdentifier: id, added: true))
                    store!.touched = true
                }
                self.publish(message, forward: false)
                return forwardToCluster(message, acknowledging: .pubrec(PubRecPacket(packetIdentifier: id, reasonCode: routedCode(session))),
                                        for: session)
            case .duplicate:
                return .pubrec(PubRecPacket(packetIdentifier: id))
            case .overReceiveMaximum:
                receiveMaximumExceeded = true
                return nil
            }
        }
    }

    /// PUBACK / PUBREC's code for the message just routed: v5 0x10 when the broker knows no
    /// subscription matched it (MQTT 5 3.4.2.1: a MAY), 0x00 otherwise. A cluster node does
    /// not know what the other nodes' subscribers match: always 0x00 there.
    func routedCode(_ session: Session) -> ReasonCode {
        session.version == .v5 && !routeReached && core.cluster == nil ? .noMatchingSubscribers : .success
    }

    func receivedSubscribe(_ subscribe: SubscribePacket, from session: Session) -> Answer {
        let v5 = session.version == .v5
        let identifier = subscribe.properties.subscriptionIdentifiers.first
        var codes: [ReasonCode] = []
        var walks: [RetainedFeed.Walk] = []
        let limits = config
        if subscribe.subscriptions.contains(where: { $0.options.noLocal && SharedSubscription($0.topicFilter) != nil }) {
            return Answer(protocolError: "No Local on a shared subscription (MQTT-3.8.3-4)")
        }
        for var sub in subscribe.subscriptions {
            // Granted at most max_qos (MQTT-3.2.2-9: the server's Maximum QoS).
            if sub.options.qos > limits.maximumQoS { sub.options.qos = limits.maximumQoS }
            do {
                try Topic.validateFilter(sub.topicFilter)
            } catch {
                codes.append(v5 ? .topicFilterInvalid : .subscribeFailure)
                continue
            }
            if !Topic.isWithin(sub.topicFilter, maximumLength: limits.maximumTopicLength, maximumLevels: limits.maximumTopicLevels) {
                codes.append(v5 ? .topicFilterInvalid : .subscribeFailure)
                continue
            }
            let share = SharedSubscription(sub.topicFilter)
            // The ACL sees the filter inside `$share/{name}/`.
            let aclFilter = share.map { String($0.filter) } ?? sub.topicFilter
            if let acl = security.acl, !session.isBridge, !acl.allows(.subscribe, aclFilter, username: session.username, clientID: session.clientID) {
                local.subscribeDenied += 1
                codes.append(v5 ? .notAuthorized : .subscribeFailure)
                continue
            }
            if limits.maximumSubscriptionsPerClient > 0 && session.subscriptions[sub.topicFilter] == nil
                && session.subscriptions.count >= limits.maximumSubscriptionsPerClient {
                codes.append(v5 ? .quotaExceeded : .subscribeFailure)
                continue
            }
            if let share {
                // One member of the group; no retained messages for a shared subscription
                // (MQTT 5 4.8.2).
                if session.subscriptions[sub.topicFilter] == nil { session.sharedGroups += 1 }
                session.subscriptions[sub.topicFilter] = StoredSubscription(options: sub.options, identifier: identifier)
                storeSubscribed(session, sub.topicFilter, sub.options, identifier)
                core.shared.subscribe(sub.topicFilter, filter: String(share.filter), SharedSubscriptions.Member(
                    clientID: session.clientID, router: index, options: sub.options, identifier: identifier,
                    online: session.isOnline, busy: session.sharedBusy, persistent: session.isPersistent))
                codes.append(ReasonCode(sub.options.qos.rawValue))
                continue
            }
            let existed = trie.insert(filter: sub.topicFilter, subscriber: session, options: sub.options, identifier: identifier)
            session.subscriptions[sub.topicFilter] = StoredSubscription(options: sub.options, identifier: identifier)
            storeSubscribed(session, sub.topicFilter, sub.options, identifier)
            codes.append(ReasonCode(sub.options.qos.rawValue))
            switch sub.options.retainHandling {
            case .sendOnSubscribe:
                walks.append(.init(cursor: .init(filter: sub.topicFilter), grantedQoS: sub.options.qos, identifier: identifier))
            case .sendIfNew where !existed:
                walks.append(.init(cursor: .init(filter: sub.topicFilter), grantedQoS: sub.options.qos, identifier: identifier))
            default:
                break
            }
        }
        saveClusterSession(session)
        // Other loops see the new interest now, not at this loop's next flush: a message they
        // route from here on reaches the subscription, and the SUBACK only follows.
        publishSubscribedCount()
        let suback = MQTTPacket.suback(SubAckPacket(packetIdentifier: subscribe.packetIdentifier, reasonCodes: codes))
        guard !walks.isEmpty else { return Answer(reply: suback) }
        // Retained messages follow the SUBACK, flagged RETAIN=1 (MQTT-3.3.1-8), sent as the
        // socket drains (MQTT-3.3.1-6: none dropped however many match).
        if session.retainedFeed == nil { session.retainedFeed = RetainedFeed(walks: []) }
        session.retainedFeed!.walks.append(contentsOf: walks)
        return Answer(reply: suback, sendRetained: true)
    }
}
