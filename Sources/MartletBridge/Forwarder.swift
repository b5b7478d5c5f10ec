import DequeModule
import Logging
import MartletBroker
import MartletClient
import MartletMQTT
import NIOCore

/// Passes messages between a bridge's two clients, on their (shared) event loop.
///
/// Out (local → remote): each message waits in `outWaiting` until the remote is connected and
/// its Receive Maximum leaves room, goes out remapped at the lower of the rule's and its own
/// QoS, and is acknowledged to this broker when the remote acknowledges it. `outWaiting` holds
/// at most the local session's in-flight window of QoS 1/2 messages (the broker sends no more
/// until they are acknowledged), so the backlog stays in the session's bounded, stored outbox.
/// A QoS 0 message has no acknowledgement to hold it back: while the remote is disconnected
/// it is dropped and counted (`link_down`); while the remote's socket is full it waits, up to
/// `max_queued_messages` waiting, past which it is dropped and counted (`remote_busy`).
///
/// In (remote → local) is the same with the roles swapped and this broker's Receive Maximum.
final class Forwarder {
    var local: MQTTClient?
    private var remote: MQTTClient?
    private var remoteReady = false
    /// Set when the bridge stops: nothing more is forwarded.
    var stopped = false
    /// Messages with the topic rule that matched them (looked up once, on arrival).
    private var outWaiting = Deque<(message: ReceivedMessage, rule: BridgeConfiguration.Topic)>()
    private var inWaiting = Deque<(message: ReceivedMessage, rule: BridgeConfiguration.Topic)>()
    private var remoteInflight = 0
    private var remoteMaximum = 65_535
    /// The remote's Maximum Packet Size (nil: none).
    private var remotePacketLimit: Int?
    private var localInflight = 0
    private var localMaximum = 65_535
    private var echoes = EchoFilter()
    private let rulesOut: [BridgeConfiguration.Topic]
    private let rulesIn: [BridgeConfiguration.Topic]
    private let version: ProtocolVersion
    private let statistics: BridgeStatistics
    private let logger: Logger
    /// QoS 0 messages kept waiting behind QoS 1/2 ones at most (past it they are dropped).
    private let waitingLimit: Int

    init(configuration: BridgeConfiguration, statistics: BridgeStatistics, logger: Logger) {
        rulesOut = configuration.topics.filter(\.forwardsOut)
        rulesIn = configuration.topics.filter(\.forwardsIn)
        version = configuration.protocolVersion
        waitingLimit = configuration.maximumQueuedMessages
        self.statistics = statistics
        self.logger = logger
    }

    func remoteConnected(_ remote: MQTTClient) {
        self.remote = remote
        remoteReady = true
        let connack = remote.connack
        remoteMaximum = Int(connack.properties.receiveMaximum ?? 65_535)
        remotePacketLimit = connack.properties.maximumPacketSize.map { Int($0) }
        if let local { localMaximum = Int(local.connack.properties.receiveMaximum ?? 65_535) }
        pumpOut()
    }

    func remoteLost() {
        remoteReady = false
    }

    // MARK: Out

    func fromLocal(_ message: ReceivedMessage) {
        guard !stopped else { return }
        guard let rule = rulesOut.first(where: { Topic.matches(filter: $0.localFilter, topic: message.topic) }),
              rule.remoteTopic(forLocal: message.topic) != nil
        else {
            local?.acknowledge(message)
            return
        }
        if min(message.qos, rule.qos) == .atMostOnce {
            if !remoteReady {
                statistics.droppedLinkDown.add(1, ordering: .relaxed)
                return
            }
            if outWaiting.count >= waitingLimit {
                statistics.droppedRemoteBusy.add(1, ordering: .relaxed)
                return
            }
        }
        outWaiting.append((message, rule))
        pumpOut()
    }

    /// The remote's socket takes writes again.
    func remoteWritable() { pumpOut() }

    private func pumpOut() {
        guard let remote, let local else { return }
        let isV5 = version == .v5
        while remoteReady, !stopped, let (message, rule) = outWaiting.first {
            // A full socket holds everything back (NIO would buffer without bound); its
            // writability coming back resumes.
            guard remote.isWritable else { break }
            let topic = rule.remoteTopic(forLocal: message.topic)!
            let qos = min(message.qos, rule.qos)
            if qos != .atMostOnce && remoteInflight >= remoteMaximum { break }
            let properties = isV5 ? Self.forwardable(message.properties) : Properties()
            // Exact size only when a rough upper bound (header, topic, payload and properties,
            // 16 bytes spare) could pass the limit.
            if let limit = remotePacketLimit, 16 + topic.utf8.count + message.payload.readableBytes + properties.encodedLength > limit,
               MQTTPacket.publish(PublishPacket(topic: topic, payload: message.payload, qos: qos, retain: message.retain,
                                                packetIdentifier: qos == .atMostOnce ? nil : 1, properties: properties))
                   .encodedLength(version: version) > limit {
                outWaiting.removeFirst()
                statistics.droppedTooLarge.add(1, ordering: .relaxed)
                logger.warning("message larger than the remote's Maximum Packet Size dropped", metadata: ["topic": "\(message.topic)"])
                local.acknowledge(message)
                continue
            }
            guard let acknowledged = remote.publishNow(topic, payload: message.payload, qos: qos, retain: message.retain, properties: properties) else {
                remoteReady = false
                break
            }
            outWaiting.removeFirst()
            if !isV5 { echoes.sent(topic: topic, payload: message.payload, now: .now()) }
            guard qos != .atMostOnce else {
                statistics.sent.add(1, ordering: .relaxed)
                continue
            }
            remoteInflight += 1
            statistics.inflight.add(1, ordering: .relaxed)
            let started = NIODeadline.now()
            acknowledged.assumeIsolated().whenComplete { [self] result in
                remoteInflight -= 1
                statistics.inflight.subtract(1, ordering: .relaxed)
                switch result {
                case .success:
                    statistics.sent.add(1, ordering: .relaxed)
                    statistics.acknowledgementNanoseconds.add(Int((NIODeadline.now() - started).nanoseconds), ordering: .relaxed)
                    statistics.acknowledgements.add(1, ordering: .relaxed)
                    self.local?.acknowledge(message)
                case .failure(MQTTClientError.refused(let code)):
                    statistics.droppedRefused.add(1, ordering: .relaxed)
                    logger.warning("the remote refused a message", metadata: ["topic": "\(topic)", "reason": "\(code)"])
                    self.local?.acknowledge(message)
                case .failure:
                    return  // the bridge is stopping: the local session sends it again next time
                }
                pumpOut()
            }
        }
    }

    // MARK: In

    func fromRemote(_ message: ReceivedMessage) {
        guard !stopped else { return }
        guard let rule = rulesIn.first(where: { Topic.matches(filter: $0.remoteFilter, topic: message.topic) }),
              rule.localTopic(forRemote: message.topic) != nil
        else {
            remote?.acknowledge(message)
            return
        }
        if version != .v5, echoes.isEcho(topic: message.topic, payload: message.payload, now: .now()) {
            statistics.echoesDropped.add(1, ordering: .relaxed)
            remote?.acknowledge(message)
            return
        }
        if min(message.qos, rule.qos) == .atMostOnce, inWaiting.count >= waitingLimit {
            statistics.droppedLocalBusy.add(1, ordering: .relaxed)
            return
        }
        inWaiting.append((message, rule))
        pumpIn()
    }

    /// This broker's end of the link takes writes again.
    func localWritable() { pumpIn() }

    private func pumpIn() {
        guard let local else { return }
        while !stopped, let (message, rule) = inWaiting.first {
            guard local.isWritable else { break }
            let topic = rule.localTopic(forRemote: message.topic)!
            let qos = min(message.qos, rule.qos)
            if qos != .atMostOnce && localInflight >= localMaximum { break }
            guard let acknowledged = local.publishNow(topic, payload: message.payload, qos: qos, retain: message.retain,
                                                      properties: Self.forwardable(message.properties)) else { break }
            inWaiting.removeFirst()
            guard qos != .atMostOnce else {
                statistics.received.add(1, ordering: .relaxed)
                continue
            }
            localInflight += 1
            acknowledged.assumeIsolated().whenComplete { [self] result in
                localInflight -= 1
                switch result {
                case .success:
                    statistics.received.add(1, ordering: .relaxed)
                case .failure(MQTTClientError.refused(let code)):
                    statistics.droppedRefused.add(1, ordering: .relaxed)
                    logger.warning("this broker refused a message from the remote", metadata: ["topic": "\(topic)", "reason": "\(code)"])
                case .failure:
                    return  // stopping: the remote sends it again on the resumed session
                }
                remote?.acknowledge(message)
                pumpIn()
            }
        }
    }

    /// The properties a forwarded message keeps: what the publisher set for its receivers
    /// (expiry, content type, payload format, response topic, correlation data, user
    /// properties), not what belonged to the connection it came on (topic alias,
    /// subscription identifiers).
    static func forwardable(_ properties: Properties) -> Properties {
        var p = properties
        p.set(.topicAlias, nil)
        p.set(.subscriptionIdentifier, nil)
        return p
    }
}
