import ArgumentParser
import Foundation
import Histogram
import MartletMQTT
import MartletTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// `martlet bench`: load scenarios against any MQTT broker.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure an MQTT broker (any broker) with a load scenario.",
        discussion: """
            Scenarios: fanout (1 → N on one topic), fanin (N → 1 on a wildcard), pairs (N \
            publisher/subscriber pairs), churn (short-lived publishers: connect, publish QoS 1, \
            PUBACK, disconnect, K at a time), idle (N connections held open). A progress line goes \
            to stderr once a second; the summary (or --json) to stdout. Latency is measured from \
            the publisher's write to the subscriber's read, on this machine's monotonic clock.
            """,
        subcommands: [Scenario.Fanout.self, Scenario.Fanin.self, Scenario.Pairs.self, Scenario.Churn.self, Scenario.Idle.self]
    )
}

/// Options every scenario takes.
struct BenchOptions: ParsableArguments {
    @Option(name: .short, help: "Broker host.") var host = "127.0.0.1"
    @Option(name: .short, help: "Broker port.") var port = 1883
    @Option(help: "Subscribers connect to this port instead (with --sub-host: that host): the far side of a bridge, or other nodes of a cluster. Repeat it to spread the subscribers over several ports, in turn.")
    var subPort: [Int] = []
    @Option(help: "Subscribers' broker host (default: --host).") var subHost: String?
    @Option(name: .customShort("V"), help: "mqttv311 or mqttv5.") var protocolVersion = "mqttv311"
    @Option(name: .short, help: "QoS of publications and subscriptions (0 or 1).") var qos = 0
    @Option(help: "Payload bytes (at least 8: the send time travels in it).") var payload = 64
    @Option(help: "Messages per second per publisher; 0 = as fast as the connection (and, for QoS 1, the window) allows.") var rate = 0
    @Option(help: "Seconds of load.") var duration = 5.0
    @Option(help: "QoS 1 messages a publisher may have unacknowledged.") var inflight = 64
    @Option(help: ArgumentHelp(
        "Messages per subscriber (on average over them) that may be published but not yet delivered; 0 = no limit.",
        discussion: "Without it a publisher runs as far ahead as the kernel's socket buffers let it, and what the run measures is those buffers (and what is still in them when it ends counts as lost), not the broker. The default is the usual broker queue limit (max_queued_messages 1000)."))
    var window = 1000
    @Option(help: "Broker process id: report its CPU (and, for idle, its memory).") var brokerPid: Int32?
    @Option(help: "A topic level of this many bytes added to every topic (long topics); 0 = none.") var topicPadding = 0
    @Option(help: "v5: the Topic Alias Maximum every client allows, so the broker may send topic aliases; 0 = none.")
    var topicAliasMaximum = 0
    @Flag(help: "Subscribers keep persistent sessions (3.1.1 clean session 0, v5 session expiry 3600 s), ended after the run: what a broker with persistence stores.")
    var persistentSessions = false
    @Flag(help: "Print the summary as one JSON object.") var json = false
    @Flag(help: "Connect with TLS.") var tls = false
    @Flag(help: "MQTT over WebSocket (path /mqtt; with --tls: wss).") var ws = false
    @Option(help: "CA file to verify the broker (implies --tls).") var cafile: String?
    @Flag(help: "Do not verify the broker's certificate (implies --tls).") var insecure = false

    func validate() throws {
        guard ["mqttv311", "mqttv5"].contains(protocolVersion) else { throw ValidationError("-V must be mqttv311 or mqttv5") }
        guard qos == 0 || qos == 1 else { throw ValidationError("-q must be 0 or 1") }
        guard payload >= 0, rate >= 0, duration > 0, inflight >= 1, window >= 0 else { throw ValidationError("sizes, rates and durations must be positive") }
        guard topicPadding >= 0, (0...65_535).contains(topicAliasMaximum) else { throw ValidationError("--topic-padding must be positive and --topic-alias-maximum at most 65535") }
    }

    var version: ProtocolVersion { protocolVersion == "mqttv5" ? .v5 : .v3_1_1 }
    var qosValue: QoS { QoS(rawValue: UInt8(qos))! }

    /// `resume`: a TLS client offers the session ticket the broker last gave (resumed
    /// handshakes); false: every handshake is a full one.
    func endpoint(resume: Bool = true) throws -> BenchPeer.Endpoint {
        var context: TLSContext?
        if tls || cafile != nil || insecure {
            var t = TLSConfiguration.client(caFile: cafile, serverName: host)
            if insecure { t.peerVerification = .none }
            t.sessionTickets = resume
            context = try TLSContext.client(t)
        }
        var endpoint = BenchPeer.Endpoint(host: host, port: port, version: version, tls: context, topicAliasMaximum: UInt16(topicAliasMaximum))
        if ws { endpoint.webSocketPath = "/mqtt" }
        return endpoint
    }
}

enum Scenario {
    struct Fanout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One publisher, N subscribers on one topic.")
        @OptionGroup var options: BenchOptions
        @Option(name: .short, help: "Subscribers.") var n = 10
        func run() async throws {
            try await runPubSub(options, name: "fanout", publishers: 1, subscribers: n,
                                topic: { _ in "bench/fanout" }, filter: { _ in "bench/fanout" }, factor: n)
        }
    }

    struct Fanin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "N publishers, one subscriber on a wildcard.")
        @OptionGroup var options: BenchOptions
        @Option(name: .short, help: "Publishers.") var n = 10
        func run() async throws {
            try await runPubSub(options, name: "fanin", publishers: n, subscribers: 1,
                                topic: { "bench/fanin/\($0)" }, filter: { _ in "bench/fanin/+" }, factor: 1)
        }
    }

    struct Pairs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "N publisher/subscriber pairs, one topic each.")
        @OptionGroup var options: BenchOptions
        @Option(name: .short, help: "Pairs.") var n = 100
        func run() async throws {
            try await runPubSub(options, name: "pairs", publishers: n, subscribers: n,
                                topic: { "bench/pairs/\($0)" }, filter: { "bench/pairs/\($0)" }, factor: 1)
        }
    }

    struct Churn: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Short-lived publishers: connect, publish QoS 1, PUBACK, disconnect; K at a time.")
        @OptionGroup var options: BenchOptions
        @Option(name: .short, help: "Concurrent publishers.") var c = 16
        @Flag(inversion: .prefixedNo, help: "With TLS: offer the session ticket the broker last issued, so handshakes resume (what MQTTClientPool and one-shot publishers do); --no-tls-resume makes every handshake a full one.")
        var tlsResume = true
        @Option(help: "Stop after this many connections instead of after --duration (0: run for --duration).")
        var connections = 0
        func validate() throws {
            guard c >= 1 else { throw ValidationError("-c must be at least 1") }
            guard connections >= 0 else { throw ValidationError("--connections must not be negative") }
        }
        func run() async throws { try await runChurn(options, concurrency: c, resume: tlsResume, count: connections) }
    }

    struct Idle: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "N connections held open; with --broker-pid, the broker's memory per connection.")
        @OptionGroup var options: BenchOptions
        @Option(name: .short, help: "Connections.") var n = 1000
        @Option(help: ArgumentHelp(
            "Keep alive seconds sent in CONNECT; each connection then sends PINGREQ at that interval (the connections spread evenly over it) and the answers are counted. 0: CONNECT says 60 and nothing is sent.",
            valueName: "seconds"))
        var keepalive: UInt16 = 0
        func run() async throws { try await runIdle(options, count: n, keepAlive: keepalive) }
    }
}

// MARK: Measurement helpers

/// CPU seconds a process has used (utime + stime from /proc).
func processCPUSeconds(_ pid: Int32) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command name: state is field 3, utime 14, stime 15 (1-based over the whole line).
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func processRSS(_ pid: Int32) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
    }
    return nil
}

/// The broker's (with `--broker-pid`) and this tool's CPU over a run.
struct CPUMeter {
    let brokerPid: Int32?
    private let brokerBefore: Double?
    private let toolBefore = selfCPUSeconds()

    init(brokerPid: Int32?) {
        self.brokerPid = brokerPid
        self.brokerBefore = brokerPid.flatMap(processCPUSeconds)
    }

    /// `broker_cpu_percent` (and `broker_cpu_ms_per_connection` given `connections`), then
    /// `tool_cpu_percent`.
    func fields(elapsed: Double, connections: Int? = nil) -> [(String, Any)] {
        var fields: [(String, Any)] = []
        if let before = brokerBefore, let after = brokerPid.flatMap(processCPUSeconds) {
            fields.append(("broker_cpu_percent", (after - before) / elapsed * 100))
            if let connections, connections > 0 {
                fields.append(("broker_cpu_ms_per_connection", (after - before) * 1000 / Double(connections)))
                if after > before { fields.append(("connections_per_broker_cpu_s", Double(connections) / (after - before))) }
            }
        }
        fields.append(("tool_cpu_percent", (selfCPUSeconds() - toolBefore) / elapsed * 100))
        return fields
    }
}

func selfCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

/// Prints "t=… published/s delivered/s errors" to stderr once a second until cancelled.
func progress(_ totals: BenchTotals, start: NIODeadline, unit: String) -> Task<Void, Never> {
    Task {
        var last = totals.snapshot
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            if Task.isCancelled { break }
            let now = totals.snapshot
            let t = Double((NIODeadline.now() - start).nanoseconds) / 1e9
            let line: String
            if unit == "connections" {
                line = String(format: "t=%.0fs  %d connections/s  errors %d\n", t, now.connections - last.connections, now.errors)
            } else {
                line = String(format: "t=%.0fs  published %d/s  delivered %d/s  errors %d\n",
                              t, now.published - last.published, now.delivered - last.delivered, now.errors)
            }
            FileHandle.standardError.write(Data(line.utf8))
            last = now
        }
    }
}

/// The summary: text or one JSON object.
func report(_ fields: [(String, Any)], json: Bool) {
    if json {
        let body = fields.map { key, value -> String in
            switch value {
            case let s as String: return "\"\(key)\":\"\(s)\""
            case let d as Double: return "\"\(key)\":\(d.isFinite ? String(format: "%.3f", d) : "null")"
            default: return "\"\(key)\":\(value)"
            }
        }.joined(separator: ",")
        print("{\(body)}")
    } else {
        print(fields.map { key, value in
            if let d = value as? Double { return "\(key)=\(String(format: "%.3f", d))" }
            return "\(key)=\(value)"
        }.joined(separator: " "))
    }
}

func latencyFields(_ h: Histogram<UInt64>) -> [(String, Any)] {
    guard h.totalCount > 0 else { return [] }
    return [
        ("latency_p50_us", Int(h.valueAtPercentile(50))), ("latency_p90_us", Int(h.valueAtPercentile(90))),
        ("latency_p99_us", Int(h.valueAtPercentile(99))), ("latency_p999_us", Int(h.valueAtPercentile(99.9))),
        ("latency_max_us", Int(h.max)), ("latency_samples", Int(h.totalCount)),
    ]
}

// MARK: Scenarios

/// Publishers and subscribers: every publisher sends for `duration`, then the run waits (up
/// to 5 s) for every expected delivery. Expected = published × `factor`; the difference is
/// reported as lost.
func runPubSub(_ o: BenchOptions, name: String, publishers: Int, subscribers: Int,
               topic: @escaping @Sendable (Int) -> String, filter: (Int) -> String, factor: Int) async throws {
    let group = MultiThreadedEventLoopGroup.singleton
    let endpoint = try o.endpoint()
    let run = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    let prefix = o.topicPadding > 0 ? run + "/" + String(repeating: "p", count: o.topicPadding) : run
    let totals = BenchTotals()
    var channels: [any Channel] = []
    defer { for c in channels { c.close(promise: nil) } }
    var subscriberEndpoint = endpoint
    subscriberEndpoint.persistent = o.persistentSessions
    if let host = o.subHost { subscriberEndpoint.host = host }
    for i in 0..<subscribers {
        if !o.subPort.isEmpty { subscriberEndpoint.port = o.subPort[i % o.subPort.count] }
        let ch = try await BenchPeer.open(subscriberEndpoint, clientID: "bench-\(run)-s\(i)", totals: totals, group: group)
        channels.append(ch)
        try await BenchPeer.subscribe(ch, filter: prefix + "/" + filter(i), qos: o.qosValue, version: o.version)
    }
    var pubs: [any Channel] = []
    for i in 0..<publishers {
        pubs.append(try await BenchPeer.open(endpoint, clientID: "bench-\(run)-p\(i)", totals: nil, group: group))
    }
    channels += pubs
    let cpu = CPUMeter(brokerPid: o.brokerPid)
    let start = NIODeadline.now()
    let deadline = start + .nanoseconds(Int64(o.duration * 1e9))
    let ticker = progress(totals, start: start, unit: "messages")
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        for (i, pub) in pubs.enumerated() {
            let t = prefix + "/" + topic(i)
            tasks.addTask {
                var nextID: UInt16 = 1
                var sent = 0
                let batch = o.rate == 0 ? (o.qos == 0 ? 64 : max(1, o.inflight / 4)) : 0
                let tick = TimeAmount.milliseconds(10)
                var due = 0.0
                let ahead = o.window > 0 ? subscribers * o.window : .max  // per subscriber, on average
                while NIODeadline.now() < deadline {
                    // End to end: wait while deliveries trail the publications by more than the window.
                    while totals.undelivered(factor: factor) > ahead && NIODeadline.now() < deadline {
                        try await Task.sleep(for: .microseconds(200))
                    }
                    var count = batch
                    if o.rate > 0 {
                        try await Task.sleep(for: .milliseconds(10))
                        due += Double(o.rate) * Double(tick.nanoseconds) / 1e9
                        count = Int(due)
                        due -= Double(count)
                        if count == 0 { continue }
                    }
                    do {
                        try await BenchPeer.publish(pub, topic: t, payloadSize: o.payload, count: count, qos: o.qosValue,
                                                    version: o.version, window: o.inflight, nextID: &nextID)
                    } catch {
                        totals.error()
                        return
                    }
                    sent += count
                    totals.add(published: count)
                }
                if o.qos == 1 { try? await BenchPeer.drain(pub) }
            }
        }
        try await tasks.waitForAll()
    }
    let publishedAt = NIODeadline.now()
    let expected = totals.snapshot.published * factor
    // Let the last messages arrive.
    while totals.snapshot.delivered < expected && NIODeadline.now() - publishedAt < .seconds(5) {
        try await Task.sleep(for: .milliseconds(10))
    }
    ticker.cancel()
    let end = NIODeadline.now()
    let elapsed = Double((end - start).nanoseconds) / 1e9
    let s = totals.snapshot
    var latency = BenchPeer.emptyHistogram
    for subscriber in channels.prefix(subscribers) {
        if let recorded = try? await BenchPeer.latencies(subscriber) { latency.add(recorded) }
    }
    var fields: [(String, Any)] = [
        ("scenario", name), ("publishers", publishers), ("subscribers", subscribers), ("payload", max(8, o.payload)),
        ("qos", o.qos), ("rate_per_publisher", o.rate), ("tls", endpoint.tls != nil ? "yes" : "no"),
        ("seconds", elapsed), ("published", s.published), ("expected", expected), ("delivered", s.delivered),
        ("lost", max(0, expected - s.delivered)), ("errors", s.errors),
        ("published_per_s", Double(s.published) / elapsed), ("delivered_per_s", Double(s.delivered) / elapsed),
        ("delivered_bytes_per_message", s.delivered > 0 ? Double(s.deliveredBytes) / Double(s.delivered) : 0),
    ]
    fields += latencyFields(latency)
    fields += cpu.fields(elapsed: elapsed)
    fields.insert(("persistent_sessions", o.persistentSessions ? "yes" : "no"), at: 7)
    report(fields, json: o.json)
    if o.persistentSessions {
        // The sessions end: a clean-start connection of each client id takes over and leaves.
        for c in channels.prefix(subscribers) { try? await c.close() }
        for i in 0..<subscribers {
            if let ch = try? await BenchPeer.open(endpoint, clientID: "bench-\(run)-s\(i)", totals: nil, group: group) {
                try? await ch.close()
            }
        }
    }
    if s.errors > 0 { throw ExitCode(1) }
}

/// K workers, each: connect, publish one QoS 1 message, wait for PUBACK, DISCONNECT; again
/// until the duration is over.
func runChurn(_ o: BenchOptions, concurrency: Int, resume: Bool, count: Int) async throws {
    let group = MultiThreadedEventLoopGroup.singleton
    let endpoint = try o.endpoint(resume: resume)
    let resumed = NIOLockedValueBox(0)
    let run = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    let totals = BenchTotals()
    let cycles = NIOLockedValueBox(Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three))
    let cpu = CPUMeter(brokerPid: o.brokerPid)
    let start = NIODeadline.now()
    let deadline = count > 0 ? .distantFuture : start + .nanoseconds(Int64(o.duration * 1e9))
    // With a count: connections not yet started, taken one at a time by the workers.
    let remaining = NIOLockedValueBox(count)
    let ticker = progress(totals, start: start, unit: "connections")
    var disconnect = ByteBuffer()
    try MQTTPacket.disconnect(DisconnectPacket()).write(to: &disconnect, version: o.version)
    let bye = disconnect
    // Each worker is one client reconnecting: with resumption it offers the ticket its own
    // last connection got (its own session store), as a real repeat publisher does; one
    // store shared by all workers would offer one ticket on many handshakes at once.
    var endpoints: [BenchPeer.Endpoint] = []
    for _ in 0..<concurrency {
        var own = endpoint
        if resume, let shared = endpoint.tls { own.tls = try TLSContext(configuration: shared.configuration, role: .client) }
        endpoints.append(own)
    }
    await withTaskGroup(of: Void.self) { tasks in
        for worker in 0..<concurrency {
            let endpoint = endpoints[worker]
            tasks.addTask {
                var n = 0
                while NIODeadline.now() < deadline {
                    if count > 0, !remaining.withLockedValue({ left in
                        guard left > 0 else { return false }
                        left -= 1
                        return true
                    }) { break }
                    let began = benchNow()
                    do {
                        let ch = try await BenchPeer.open(endpoint, clientID: "churn-\(run)-\(worker)-\(n)", totals: nil, group: group)
                        if endpoint.tls != nil, try await BenchPeer.resumedTLS(ch) { resumed.withLockedValue { $0 += 1 } }
                        var id: UInt16 = 1
                        try await BenchPeer.publish(ch, topic: "bench/churn/\(worker)", payloadSize: o.payload, count: 1, qos: .atLeastOnce,
                                                    version: o.version, window: 1, nextID: &id)
                        try await BenchPeer.drain(ch)
                        try await ch.writeAndFlush(bye)
                        try? await ch.close()
                        let took = benchNow() - began
                        cycles.withLockedValue { _ = $0.record(took) }
                        totals.add(connections: 1)
                    } catch {
                        totals.error()
                        if totals.snapshot.errors <= 3 {
                            FileHandle.standardError.write(Data("churn: \(error)\n".utf8))
                        }
                    }
                    n += 1
                }
            }
        }
    }
    ticker.cancel()
    let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
    let s = totals.snapshot
    var fields: [(String, Any)] = [
        ("scenario", "churn"), ("concurrency", concurrency), ("tls", endpoint.tls != nil ? "yes" : "no"), ("seconds", elapsed),
        ("connections", s.connections), ("errors", s.errors), ("connections_per_s", Double(s.connections) / elapsed),
    ]
    if endpoint.tls != nil { fields.append(("tls_resumed", resumed.withLockedValue { $0 })) }
    fields += latencyFields(cycles.withLockedValue { $0 }).map { ($0.0.replacingOccurrences(of: "latency", with: "cycle"), $0.1) }
    fields += cpu.fields(elapsed: elapsed, connections: s.connections)
    report(fields, json: o.json)
    if s.errors > 0 { throw ExitCode(1) }
}

/// Opens N connections (100 at a time), holds them for the duration, and reports the
/// broker's resident memory per connection when its pid is given.
/// With `keepAlive` > 0 every connection pings at that interval while held, and the broker's
/// CPU during the hold is reported per 10,000 connections.
func runIdle(_ o: BenchOptions, count: Int, keepAlive: UInt16 = 0) async throws {
    let group = MultiThreadedEventLoopGroup.singleton
    let endpoint = try {
        var e = try o.endpoint()
        if keepAlive > 0 { e.keepAlive = keepAlive }
        return e
    }()
    let run = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    let totals = BenchTotals()
    let rssBefore = o.brokerPid.flatMap(processRSS)
    let start = NIODeadline.now()
    var channels: [any Channel] = []
    defer { for c in channels { c.close(promise: nil) } }
    var opened = 0
    while opened < count {
        let batch = min(100, count - opened)
        let base = opened
        let made = await withTaskGroup(of: (any Channel)?.self) { tasks in
            for i in 0..<batch {
                tasks.addTask { try? await BenchPeer.open(endpoint, clientID: "idle-\(run)-\(base + i)", totals: totals, group: group) }
            }
            var got: [any Channel] = []
            for await c in tasks { if let c { got.append(c) } else { totals.error() } }
            return got
        }
        channels += made
        opened += batch
    }
    let openedIn = Double((NIODeadline.now() - start).nanoseconds) / 1e9
    var pingers: [RepeatedTask] = []
    if keepAlive > 0 {
        let interval = TimeAmount.seconds(Int64(keepAlive))
        for (i, channel) in channels.enumerated() {
            let offset = TimeAmount.nanoseconds(interval.nanoseconds * Int64(i) / Int64(max(1, channels.count)))
            pingers.append(channel.eventLoop.scheduleRepeatedTask(initialDelay: offset, delay: interval) { _ in
                totals.add(pings: 1)
                channel.writeAndFlush(ByteBuffer(bytes: [0xC0, 0x00]), promise: nil)
            })
        }
    }
    let cpuBefore = o.brokerPid.flatMap(processCPUSeconds)
    try await Task.sleep(for: .nanoseconds(Int64(o.duration * 1e9)))
    let cpuAfter = o.brokerPid.flatMap(processCPUSeconds)
    for pinger in pingers { pinger.cancel() }
    let alive = channels.filter(\.isActive).count
    var fields: [(String, Any)] = [
        ("scenario", "idle"), ("connections", channels.count), ("alive_after_hold", alive), ("errors", totals.snapshot.errors),
        ("tls", endpoint.tls != nil ? "yes" : "no"), ("open_seconds", openedIn), ("hold_seconds", o.duration),
    ]
    if keepAlive > 0 {
        fields += [("keepalive_seconds", Int(keepAlive)), ("pings_sent", totals.snapshot.pings), ("pings_answered", totals.snapshot.pongs)]
    }
    if let before = cpuBefore, let after = cpuAfter, !channels.isEmpty {
        let perSecond = (after - before) / o.duration
        fields += [("broker_cpu_percent", perSecond * 100),
                   ("broker_cpu_ms_per_s_per_10k_connections", perSecond * 1000 * 10_000 / Double(channels.count))]
    }
    if let before = rssBefore, let after = o.brokerPid.flatMap(processRSS) {
        fields.append(("broker_rss_bytes", after))
        if !channels.isEmpty { fields.append(("broker_rss_per_connection_bytes", (after - before) / channels.count)) }
    }
    report(fields, json: o.json)
    if totals.snapshot.errors > 0 || alive < channels.count { throw ExitCode(1) }
}
