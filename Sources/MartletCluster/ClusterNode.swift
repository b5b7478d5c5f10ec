import CMartletNATS
import Foundation
import Logging
import MartletBroker
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Why a node could not join its cluster at start.
public struct ClusterError: Error, CustomStringConvertible {
    public var description: String
}

/// libnats' connection handle. libnats locks inside every call on a connection, so the
/// handle is used from any thread; it is never freed while the node exists.
struct NATSHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// One NATS subscription's handle: used only under the node's interest lock.
struct NATSSubscription: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// The text a C call wrote into `buffer` (up to its terminating zero).
func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// This broker as one node of a cluster over NATS JetStream (`cluster:`).
///
/// - Messages published here go to `mqtt.0.<topic>` (QoS 0, core NATS) or, QoS 1/2, to
///   `mqtts.<topic>`, stored by the stream `MARTLET_MESSAGES` with `replicas` copies and then
///   published again on `mqtt.1.<topic>`; a client's QoS 1/2 PUBLISH is acknowledged once
///   JetStream has stored it.
/// - The node subscribes only the subjects its subscribers' filters need (`filterAdded`), and
///   gets none of its own messages back (no echo; the stream's copies of its QoS 1/2 messages
///   are dropped). A share group with members here is a NATS queue group on its filter's
///   subjects, on a second connection with echo, so each message goes to one node of the
///   group, this one included.
/// - Retained messages are also kept in the bucket `martlet_retained`; every node follows the
///   bucket into its own retained store, so SUBSCRIBE is answered locally.
public final class ClusterNode: ClusterLink {
    public static let stream = "MARTLET_MESSAGES"
    public static let retainedBucket = "martlet_retained"
    /// Where nodes announce the client ids their connections take (payload: the client id).
    public static let claimsSubject = "martlet.claims"
    /// Persistent sessions' records, by client id.
    public static let sessionsBucket = "martlet_sessions"
    /// Wills of the connections on each node, `<run>.<client id>`.
    public static let willsBucket = "martlet_wills"
    /// Each running node's heartbeat, by run; `gone-<run>` marks a dead run taken care of.
    public static let nodesBucket = "martlet_nodes"

    public let configuration: ClusterConfiguration
    /// This run of this node: node id and a random suffix (a restarted node is a new writer).
    public let runID: String
    let logger: Logger
    let handle: NATSHandle
    /// The buckets read and written synchronously (off the event loops).
    var buckets: Buckets { bucketHandles.withLockedValue { $0! } }
    let bucketHandles = NIOLockedValueBox<Buckets?>(nil)
    /// Keys of the sessions bucket (followed by a watch): a session ending here removes its
    /// record only if there is one.
    let sessionKeys = NIOLockedValueBox<Set<String>>([])
    /// Blocking work (bucket reads, stream replays, heartbeats) runs here, never on an event loop.
    let background = DispatchQueue(label: "martlet.cluster", attributes: .concurrent)
    let broker: NIOLockedValueBox<MQTTBroker?>
    /// The persistent sessions' records this node holds, written by compare-and-set.
    let ownership: SessionOwnership

    /// The queue subscriptions of the share groups with members here, by group.
    private let shares = NIOLockedValueBox<[String: [NATSSubscription]]>([:])
    /// Per NATS subject, how many filters need it, and the subscription.
    private let interest = NIOLockedValueBox<[String: (count: Int, subscription: NATSSubscription?)]>([:])
    /// The NATS subjects this node follows for its subscribers now.
    var interestSubjects: [String] { interest.withLockedValue { Array($0.keys) } }
    /// Wall-clock ms when the NATS connection went down (0: it is up).
    let disconnectedAt = NIOLockedValueBox<Int64>(0)
    /// Sequence numbers of the messages this node sends, given out with the publish under one lock.
    private let sequence = NIOLockedValueBox<UInt64>(0)
    /// The last sequence number received from each writer (QoS 0), and under "" the last
    /// stream sequence (QoS 1/2): an older or equal one is a copy for another of this node's
    /// overlapping subscriptions (they arrive back to back, on one thread).
    private let lastReceived = NIOLockedValueBox<[String: UInt64]>([:])
    /// What waits for JetStream's acknowledgements, by token.
    private let pendingAcks = NIOLockedValueBox<(next: UInt64, waiting: [UInt64: PendingAck])>((1, [:]))
    private let retainedLoaded = NIOLockedValueBox<Bool>(false)
    /// Per subject, the stream sequence of the last stored message this node received on it:
    /// the stream says with each message which one came before on its subject, so a message
    /// lost on the way (a server died between storing and passing it on) shows as a gap.
    let lastOnSubject = NIOLockedValueBox<[String: UInt64]>([:])

    let statistics: ClusterStatistics

    final class PendingAck: Sendable {
        let done: @Sendable (Bool) -> Void
        private let state: NIOLockedValueBox<(remaining: Int, ok: Bool)>
        init(parts: Int, done: @escaping @Sendable (Bool) -> Void) {
            self.done = done
            self.state = NIOLockedValueBox((parts, true))
        }
        /// One part settled; true when that was the last.
        func settle(_ ok: Bool) -> (finished: Bool, ok: Bool) {
            state.withLockedValue { s in
                s.remaining -= 1
                if !ok { s.ok = false }
                return (s.remaining == 0, s.ok)
            }
        }
    }

    private init(configuration: ClusterConfiguration, handle: NATSHandle, runID: String, logger: Logger) {
        self.configuration = configuration
        self.handle = handle
        self.runID = runID
        self.logger = logger
        let broker = NIOLockedValueBox<MQTTBroker?>(nil)
        let statistics = ClusterStatistics()
        self.broker = broker
        self.statistics = statistics
        self.ownership = SessionOwnership(
            runID: runID, store: Self.sessionStore(handle), label: "martlet.cluster.sessions",
            logger: logger, statistics: statistics
        ) { clientID, claimedAt in
            broker.withLockedValue { $0 }?.releaseToCluster(clientID: clientID, claimedAt: claimedAt)
        }
    }

    // MARK: Joining

    /// Connects to NATS, checks JetStream and creates (or checks) the stream and the bucket,
    /// retrying for up to `startup_timeout_ms`; throws the last error after that.
    public static func join(_ configuration: ClusterConfiguration, logger: Logger) throws -> ClusterNode {
        var random = SystemRandomNumberGenerator()
        let runID = "\(configuration.nodeID)-\(String(random.next() & 0xFFFF_FFFF, radix: 16))"
        let deadline = Date().addingTimeInterval(Double(configuration.startupTimeout) / 1000)
        // The context is set before the connection exists: libnats may call back at once.
        let box = ContextBox()
        let context = Unmanaged.passRetained(box).toOpaque()
        let handle = try retrying(until: deadline) { () throws(ClusterError) -> NATSHandle in
            try connect(configuration, runID: runID, context: context)
        }
        let node = ClusterNode(configuration: configuration, handle: handle, runID: runID, logger: logger)
        box.node.withLockedValue { $0 = node }
        let replicas = configuration.replicas
        try retrying(until: deadline) { () throws(ClusterError) in
            try node.check { mn_jetstream_check(node.handle.pointer, $0, $1) }
            try node.check {
                mn_ensure_stream(node.handle.pointer, stream, "mqtts.>", "mqtt.1.>", Int32(replicas), Int64(configuration.streamMaximumAge),
                                 Int64(configuration.streamMaximumBytes), $0, $1)
            }
            for bucket in [retainedBucket, sessionsBucket, willsBucket, nodesBucket] {
                try node.check { mn_ensure_bucket(node.handle.pointer, bucket, Int32(replicas), $0, $1) }
            }
        }
        try node.openBuckets()
        logger.info("joined the cluster", metadata: [
            "node": "\(configuration.nodeID)", "run": "\(runID)", "nats": "\(configuration.servers.joined(separator: ","))",
            "replicas": "\(replicas)",
        ])
        return node
    }

    private static func retrying<T>(until deadline: Date, _ body: () throws(ClusterError) -> T) throws(ClusterError) -> T {
        while true {
            do {
                return try body()
            } catch {
                // Replica counts do not fix themselves by waiting.
                if Date() >= deadline || error.description.contains("replicas;") { throw error }
                Thread.sleep(forTimeInterval: 0.25)
            }
        }
    }

    func check(_ call: (UnsafeMutablePointer<CChar>, Int) -> Int32) throws(ClusterError) {
        var error = [CChar](repeating: 0, count: 512)
        let status = error.withUnsafeMutableBufferPointer { call($0.baseAddress!, $0.count) }
        if status != 0 { throw ClusterError(description: cText(error)) }
    }

    private static func connect(_ configuration: ClusterConfiguration, runID: String, context: UnsafeMutableRawPointer) throws(ClusterError) -> NATSHandle {
        var error = [CChar](repeating: 0, count: 512)
        let urls = configuration.servers.map { strdup($0) }
        defer { urls.forEach { free($0) } }
        let strings: [String?] = [runID, configuration.credentialsFile, configuration.caFile, configuration.certificateFile, configuration.keyFile]
        let c = strings.map { $0.map { strdup($0)! } }
        defer { c.forEach { free($0) } }
        var pointers = urls.map { UnsafePointer<CChar>($0) }
        let node: OpaquePointer? = pointers.withUnsafeMutableBufferPointer { list in
            var settings = mn_settings()
            settings.urls = list.baseAddress
            settings.url_count = Int32(list.count)
            settings.name = UnsafePointer(c[0])
            settings.credentials_file = UnsafePointer(c[1])
            settings.ca_file = UnsafePointer(c[2])
            settings.cert_file = UnsafePointer(c[3])
            settings.key_file = UnsafePointer(c[4])
            settings.ack_wait_ms = Int64(configuration.ackTimeout)
            settings.max_pending_acks = Int32(configuration.maximumPendingAcks)
            settings.context = context
            settings.on_message = { context, message in
                guard let message else { return }
                if let node = ContextBox.node(context) { node.received(message) } else { natsMsg_Destroy(message) }
            }
            settings.on_shared = { context, group, message in
                guard let message else { return }
                if let node = ContextBox.node(context), let group {
                    node.receivedShared(group: String(cString: group), message)
                } else {
                    natsMsg_Destroy(message)
                }
            }
            settings.on_ack = { context, token, ok, error in
                ContextBox.node(context)?.acknowledged(token, ok: ok != 0, error: error.map { String(cString: $0) })
            }
            settings.on_state = { context, state in ContextBox.node(context)?.stateChanged(connected: state == 1) }
            return error.withUnsafeMutableBufferPointer { mn_connect(&settings, $0.baseAddress, $0.count) }
        }
        guard let node else { throw ClusterError(description: cText(error)) }
        return NATSHandle(pointer: node)
    }

    /// Starts handing the cluster's traffic to `broker`: follows the retained bucket (the
    /// current values are in the broker's store when this returns) and makes the metrics.
    public func attach(_ broker: MQTTBroker) throws {
        self.broker.withLockedValue { $0 = broker }
        let context = Unmanaged.passRetained(WatchBox(node: self)).toOpaque()
        try check { mn_watch_bucket(handle.pointer, Self.retainedBucket, 0, context, { context, key, value, length, op in
            Unmanaged<WatchBox>.fromOpaque(context!).takeUnretainedValue().node.retainedChanged(
                key: key.map { String(cString: $0) }, value: value, length: Int(length), deleted: op != 0)
        }, $0, $1) }
        // Kept for the node's lifetime.
        guard mn_subscribe(handle.pointer, Self.claimsSubject, nil, nil) != nil else {
            throw ClusterError(description: "cannot subscribe \(Self.claimsSubject)")
        }
        let deadline = Date().addingTimeInterval(Double(configuration.startupTimeout) / 1000)
        while !retainedLoaded.withLockedValue({ $0 }) {
            if Date() >= deadline { throw ClusterError(description: "the retained messages of the cluster did not load within startup_timeout_ms") }
            Thread.sleep(forTimeInterval: 0.01)
        }
        try followSessionKeys()
        startHeartbeats()
        broker.addMetricsSource { [self] in Array(statistics.render(connected: mn_connected(handle.pointer) != 0,
                                                                   pendingAcks: pendingAcks.withLockedValue { $0.waiting.count },
                                                                   subjects: interest.withLockedValue { $0.count },
                                                                   sessionsHeld: ownership.count).utf8) }
    }

    /// Sends what is buffered and closes the connection.
    public func close() {
        _ = mn_flush(handle.pointer, 2000)
        mn_close(handle.pointer)
    }

    // MARK: Interest

    public func filterAdded(_ filter: String) {
        for subject in ClusterSubjects.subjects(filter: filter) {
            interest.withLockedValue { table in
                if let entry = table[subject] {
                    table[subject] = (entry.count + 1, entry.subscription)
                    return
                }
                let subscription = mn_subscribe(handle.pointer, subject, nil, nil).map(NATSSubscription.init)
                if subscription == nil { logger.error("cannot subscribe in NATS", metadata: ["subject": "\(subject)"]) }
                table[subject] = (1, subscription)
            }
        }
    }

    public func filterRemoved(_ filter: String) {
        for subject in ClusterSubjects.subjects(filter: filter) {
            interest.withLockedValue { table in
                guard let entry = table[subject] else { return }
                if entry.count > 1 {
                    table[subject] = (entry.count - 1, entry.subscription)
                } else {
                    table[subject] = nil
                    if let subscription = entry.subscription { mn_unsubscribe(subscription.pointer) }
                    // Messages on subjects no longer followed are not gaps when interest returns.
                    lastOnSubject.withLockedValue { $0.removeAll() }
                }
            }
        }
    }

    public func shareAdded(_ key: String, filter: String) {
        // A queue group name of hex digits: any group name and filter make a valid one.
        let queue = "share-" + key.utf8.map { String($0, radix: 16) }.joined()
        let subscriptions = ClusterSubjects.subjects(filter: filter).compactMap {
            mn_subscribe(handle.pointer, $0, queue, key).map(NATSSubscription.init)
        }
        shares.withLockedValue { $0[key] = subscriptions }
    }

    public func shareRemoved(_ key: String, filter: String) {
        for subscription in shares.withLockedValue({ $0.removeValue(forKey: key) }) ?? [] {
            mn_unsubscribe(subscription.pointer)
        }
    }

    // MARK: Sending

    public func forward(_ message: Message, acknowledged: (@Sendable (Bool) -> Void)?) {
        let stored = message.qos != .atMostOnce
        let retained = message.retain
        var pending: PendingAck?
        if let acknowledged { pending = PendingAck(parts: retained ? 2 : 1, done: acknowledged) }
        let subject = stored ? ClusterSubjects.storedSubject(topic: message.topic) : ClusterSubjects.subject(topic: message.topic, stored: false)
        var properties = ByteBuffer()
        if !message.properties.isEmpty { try? message.properties.write(to: &properties) }
        var token: UInt64 = 0
        let sent: Bool = sequence.withLockedValue { sequence in
            sequence += 1
            var headers: [(String, String)] = [("Martlet-Node", runID), ("Martlet-Seq", String(sequence)), ("Mqtt-Qos", String(message.qos.rawValue))]
            if retained { headers.append(("Mqtt-Retain", "1")) }
            if let publisher = message.publisherID { headers.append(("Mqtt-Publisher", publisher)) }
            if properties.readableBytes > 0 { headers.append(("Mqtt-Properties", Data(properties.readableBytesView).base64EncodedString())) }
            if stored {
                token = register(pending)
                headers.append(("Martlet-Ack", String(token)))
                return publish(subject: subject, headers: headers, payload: message.payload, stored: true)
            }
            return publish(subject: subject, headers: headers, payload: message.payload, stored: false)
        }
        statistics.forwarded.add(1, ordering: .relaxed)
        if !sent && stored { self.acknowledged(token, ok: false, error: "not sent") }
        if retained { forwardRetained(message, pending: pending) }
    }

    /// The retained copy goes to the bucket: a put, or a delete for an empty payload.
    private func forwardRetained(_ message: Message, pending: PendingAck?) {
        let subject = "$KV.\(Self.retainedBucket).\(ClusterSubjects.key(topic: message.topic))"
        let token = register(pending)
        let sent: Bool
        if message.payload.readableBytes == 0 {
            sent = publish(subject: subject, headers: [("KV-Operation", "DEL"), ("Martlet-Ack", String(token))], payload: ByteBuffer(), stored: true)
        } else {
            let expiry = message.properties.isEmpty ? nil : message.properties.messageExpiryInterval.flatMap { $0 > 0 ? $0 : nil }
            let record = RetainedRecord(qos: message.qos, expiresAtWall: expiry.map { Self.wallClock() + Int64($0) * 1000 }, writer: runID,
                                        properties: message.properties, payload: message.payload)
            sent = publish(subject: subject, headers: [("Martlet-Ack", String(token))], payload: ByteBuffer(bytes: record.encoded()), stored: true)
        }
        if !sent { acknowledged(token, ok: false, error: "not sent") }
    }

    private func register(_ pending: PendingAck?) -> UInt64 {
        pendingAcks.withLockedValue { p in
            let token = p.next
            p.next += 1
            if let pending { p.waiting[token] = pending }
            return token
        }
    }

    func publish(subject: String, headers: [(String, String)], payload: ByteBuffer, stored: Bool) -> Bool {
        var msg: OpaquePointer?
        let status = payload.withUnsafeReadableBytes { bytes in
            natsMsg_Create(&msg, subject, nil, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(bytes.count))
        }
        guard status == NATS_OK, let msg else { return false }
        for (name, value) in headers { natsMsgHeader_Set(msg, name, value) }
        return (stored ? mn_publish_stored(handle.pointer, msg) : mn_publish(handle.pointer, msg)) == 0
    }

    func acknowledged(_ token: UInt64, ok: Bool, error: String?) {
        if !ok {
            statistics.storeFailures.add(1, ordering: .relaxed)
            logger.debug("JetStream did not store a message", metadata: ["error": "\(error ?? "")"])
        }
        guard let pending = pendingAcks.withLockedValue({ $0.waiting.removeValue(forKey: token) }) else { return }
        let (finished, allOK) = pending.settle(ok)
        if finished { pending.done(allOK) }
    }

    public func claimed(_ clientID: String, at time: Int64) {
        _ = publish(subject: Self.claimsSubject, headers: [("Martlet-Node", runID), ("Martlet-Claimed", String(time))],
                    payload: ByteBuffer(string: clientID), stored: false)
    }

    // MARK: Receiving

    func received(_ msg: OpaquePointer) {
        defer { natsMsg_Destroy(msg) }
        guard let broker = broker.withLockedValue({ $0 }) else { return }
        func header(_ name: String) -> String? {
            var value: UnsafePointer<CChar>?
            guard natsMsgHeader_Get(msg, name, &value) == NATS_OK, let value else { return nil }
            return String(cString: value)
        }
        let subject = String(cString: natsMsg_GetSubject(msg))
        let writer = header("Martlet-Node")
        if subject == Self.claimsSubject {
            guard writer != runID else { return }
            let length = Int(natsMsg_GetDataLength(msg))
            guard let time = header("Martlet-Claimed").flatMap(Int64.init), let data = natsMsg_GetData(msg) else { return }
            let clientID = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
            ownership.release(clientID, olderThan: time)
            broker.releaseToCluster(clientID: clientID, claimedAt: time)
            return
        }
        guard ClusterSubjects.topic(subject: subject) != nil else { return }
        if let streamSequence = header("Nats-Sequence").flatMap(UInt64.init) {
            // Stored, then published again by the stream: each once (stream order).
            let fresh = lastReceived.withLockedValue { last in
                if let previous = last[""], streamSequence <= previous { return false }
                last[""] = streamSequence
                return true
            }
            guard fresh else {
                statistics.copiesDropped.add(1, ordering: .relaxed)
                return
            }
            checkForGap(subject: subject, sequence: streamSequence, previousOnSubject: header("Nats-Last-Sequence").flatMap(UInt64.init) ?? 0)
            // This node's own messages were routed here when they came.
            if writer == runID { return }
        } else if writer == runID {
            return
        } else if let writer, let seq = header("Martlet-Seq").flatMap(UInt64.init) {
            let fresh = lastReceived.withLockedValue { last in
                if let previous = last[writer], seq <= previous { return false }
                last[writer] = seq
                return true
            }
            guard fresh else {
                statistics.copiesDropped.add(1, ordering: .relaxed)
                return
            }
        }
        guard let message = Self.message(msg) else { return }
        statistics.received.add(1, ordering: .relaxed)
        broker.deliverFromCluster(message)
    }

    /// A message the cluster gave this node for the share group `group` (its own included).
    func receivedShared(group: String, _ msg: OpaquePointer) {
        defer { natsMsg_Destroy(msg) }
        guard let broker = broker.withLockedValue({ $0 }), let message = Self.message(msg) else { return }
        statistics.received.add(1, ordering: .relaxed)
        broker.deliverFromCluster(message, group: group)
    }

    /// The MQTT message a NATS message of `subject(topic:stored:)` carries.
    static func message(_ msg: OpaquePointer) -> Message? {
        guard let topic = ClusterSubjects.topic(subject: String(cString: natsMsg_GetSubject(msg))) else { return nil }
        func header(_ name: String) -> String? {
            var value: UnsafePointer<CChar>?
            guard natsMsgHeader_Get(msg, name, &value) == NATS_OK, let value else { return nil }
            return String(cString: value)
        }
        let qos = header("Mqtt-Qos").flatMap(UInt8.init).flatMap(QoS.init(rawValue:)) ?? .atMostOnce
        var properties: Properties = []
        if let text = header("Mqtt-Properties"), let data = Data(base64Encoded: text) {
            var buffer = ByteBuffer(bytes: data)
            properties = (try? Properties.read(from: &buffer, context: .publish)) ?? []
        }
        let length = Int(natsMsg_GetDataLength(msg))
        var payload = ByteBuffer()
        if length > 0, let data = natsMsg_GetData(msg) {
            payload = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: length))
        }
        return Message(topic: topic, payload: payload, qos: qos, retain: header("Mqtt-Retain") == "1",
                       properties: properties, publisherID: header("Mqtt-Publisher"))
    }

    func retainedChanged(key: String?, value: UnsafeRawPointer?, length: Int, deleted: Bool) {
        guard let key else {
            retainedLoaded.withLockedValue { $0 = true }
            return
        }
        guard let broker = broker.withLockedValue({ $0 }), let topic = ClusterSubjects.topic(key: key) else { return }
        if deleted {
            broker.retainedFromCluster(topic: topic, nil)
            return
        }
        guard let value, let record = RetainedRecord(UnsafeRawBufferPointer(start: value, count: length)) else {
            logger.warning("unreadable retained message in the cluster's bucket", metadata: ["key": "\(key)"])
            return
        }
        // This run's own writes are in its store already (in the order they were made).
        guard record.writer != runID else { return }
        let expiresAt = record.expiresAtWall.map { NIODeadline.now() + .milliseconds($0 - Self.wallClock()) }
        if let expiresAt, expiresAt <= .now() { return }
        broker.retainedFromCluster(topic: topic, RetainedMessage(topic: topic, payload: record.payload, qos: record.qos,
                                                                properties: record.properties, expiresAt: expiresAt))
    }

    func stateChanged(connected: Bool) {
        if connected {
            logger.info("NATS connection restored", metadata: ["node": "\(configuration.nodeID)"])
            // Claims, record writes and stored messages of other nodes may have passed meanwhile.
            ownership.verifyAll()
            broker.withLockedValue { $0 }?.reannounceClaims()
            let since = disconnectedAt.withLockedValue { at in
                defer { at = 0 }
                return at
            }
            if since > 0 { catchUp(since: since) }
        } else {
            statistics.disconnects.add(1, ordering: .relaxed)
            disconnectedAt.withLockedValue { if $0 == 0 { $0 = Self.wallClock() } }
            logger.warning("NATS connection lost: reconnecting", metadata: ["node": "\(configuration.nodeID)"])
        }
    }

    static func wallClock() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

/// What libnats' callbacks get as their context: the node, once it exists.
final class ContextBox: Sendable {
    let node = NIOLockedValueBox<ClusterNode?>(nil)

    static func node(_ context: UnsafeMutableRawPointer?) -> ClusterNode? {
        guard let context else { return nil }
        return Unmanaged<ContextBox>.fromOpaque(context).takeUnretainedValue().node.withLockedValue { $0 }
    }
}

final class WatchBox: Sendable {
    let node: ClusterNode
    init(node: ClusterNode) { self.node = node }
}
