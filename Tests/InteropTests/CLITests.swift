import Foundation
import MartletBroker
import Testing
import MartletTestSupport

/// `martlet pub` / `martlet sub` against Debian's mosquitto broker and against martletd.
@Suite struct CLITests {
    static let martlet = DaemonTests.root.appendingPathComponent(".build/debug/martlet").path

    /// A mosquitto broker on `port` for the duration of `body`.
    /// Runs Debian's mosquitto on `port` for `body`, which gets a function that waits until
    /// mosquitto has logged `count` SUBSCRIBEs (its log goes to a file: a pipe nobody reads
    /// would fill and stall it).
    /// With `webSocketPort`, a websockets listener too (mosquitto 2.0.11 starts one only next
    /// to a plain listener).
    func withMosquitto(port: Int, webSocketPort: Int? = nil,
                       _ body: (_ subscribed: @escaping (Int) async throws -> Void) async throws -> Void) async throws {
        let base = scratchPath("mosquitto-cli")
        let log = base + ".log"
        let webSocket = webSocketPort.map { "listener \($0) 127.0.0.1\nprotocol websockets\n" } ?? ""
        try "listener \(port) 127.0.0.1\n\(webSocket)allow_anonymous true\nuser root\nlog_dest file \(log)\nlog_type subscribe\n"
            .write(toFile: base + ".conf", atomically: true, encoding: .utf8)
        defer {
            try? FileManager.default.removeItem(atPath: base + ".conf")
            try? FileManager.default.removeItem(atPath: log)
        }
        let broker = try ChildProcess("/usr/sbin/mosquitto", ["-c", base + ".conf"])
        defer { broker.kill() }
        try await waitUntilListening(UInt16(port))
        if let webSocketPort { try await waitUntilListening(UInt16(webSocketPort)) }
        try await body { count in
            try await waitFor(.seconds(10), "mosquitto to log \(count) SUBSCRIBE", every: .milliseconds(20)) { () -> Bool? in
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                return text.components(separatedBy: "\n").filter { $0.contains(" cli/#") }.count >= count ? true : nil
            }
        }
    }

    /// `martlet sub` gets what `martlet pub` sends, once `subscribed` says it has subscribed.
    func pubSub(port: Int, version: String, subscribed: () async throws -> Void) async throws {
        let sub = try ChildProcess(Self.martlet, ["sub", "-p", "\(port)", "-V", version, "-t", "cli/#", "-v", "-q", "1", "-C", "3", "-W", "10"])
        try await subscribed()
        let one = try await run(Self.martlet, ["pub", "-p", "\(port)", "-V", version, "-t", "cli/one", "-m", "first", "-q", "1"])
        #expect(one.status == 0, "\(one.stderr)")
        let lines = try await runWithInput(Self.martlet, ["pub", "-p", "\(port)", "-V", version, "-t", "cli/lines", "-l", "-q", "2"], input: "a\nb\n")
        #expect(lines.status == 0, "\(lines.stderr)")
        let result = try await sub.finish()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "cli/one first\ncli/lines a\ncli/lines b\n")
    }

    @Test(arguments: ["mqttv311", "mqttv5"])
    func againstMosquittoBroker(_ version: String) async throws {
        let port = randomTestPort()
        try await withMosquitto(port: port) { subscribed in
            try await pubSub(port: port, version: version) { try await subscribed(1) }
        }
    }

    @Test func againstMartletd() async throws {
        try await withBroker { broker, port in
            try await pubSub(port: port, version: "mqttv5") { try await waitForSubscriptions(broker, 1) }
            // Retained message, -F format, and -L URL form.
            let r = try await run(Self.martlet, ["pub", "-L", "mqtt://127.0.0.1:\(port)/cli/kept", "-m", "value", "-r"])
            #expect(r.status == 0, "\(r.stderr)")
            let f = try await run(Self.martlet, ["sub", "-p", "\(port)", "-t", "cli/kept", "-F", "%t|%p|%q|%r|%l", "-C", "1", "-W", "5"])
            #expect(f.stdout == "cli/kept|value|0|1|5\n")
            // -W with nothing arriving exits 27, like mosquitto_sub.
            let w = try await run(Self.martlet, ["sub", "-p", "\(port)", "-t", "nothing", "-W", "1"])
            #expect(w.status == 27)
        }
    }

    @Test("martlet sub --ws and martlet pub -L ws://host:port/mqtt/topic: MQTT over WebSocket from the command line")
    func overWebSocket() async throws {
        try await withBroker({
            var ws = BrokerConfiguration.Listener(host: "127.0.0.1", port: 0)
            ws.webSocket = true
            $0.listeners = [ws]
        }) { broker, port in
            let sub = try ChildProcess(Self.martlet, ["sub", "--ws", "-p", "\(port)", "-t", "cli/ws", "-q", "1", "-C", "1", "-W", "30"])
            try await waitForSubscriptions(broker, 1)
            let pub = try await run(Self.martlet, ["pub", "-L", "ws://127.0.0.1:\(port)/mqtt/cli/ws", "-q", "1", "-m", "over websocket"])
            #expect(pub.status == 0, "\(pub.stderr)")
            let got = try await sub.finish(timeout: .seconds(40))
            #expect(got.stdout == "over websocket\n", "\(got.stderr)")
        }
    }

    @Test("martlet sub --ws and martlet pub -L ws://…: our WebSocket client against Debian mosquitto's websockets listener (libwebsockets), QoS 1 and a 100 KiB QoS 2 message")
    func overWebSocketAgainstMosquitto() async throws {
        let (port, ws) = (randomTestPort(), randomTestPort())
        let big = scratchPath("ws-big", suffix: ".txt")
        try String(repeating: "0123456789abcdef", count: 6_400).write(toFile: big, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: big) }
        try await withMosquitto(port: port, webSocketPort: ws) { subscribed in
            let sub = try ChildProcess(Self.martlet, ["sub", "--ws", "-p", "\(ws)", "-t", "cli/#", "-q", "2", "-C", "2", "-W", "30", "-F", "%t %l"])
            try await subscribed(1)
            let small = try await run(Self.martlet, ["pub", "-L", "ws://127.0.0.1:\(ws)/mqtt/cli/small", "-q", "1", "-m", "over websocket"])
            #expect(small.status == 0, "\(small.stderr)")
            let large = try await run(Self.martlet, ["pub", "--ws", "-p", "\(ws)", "-t", "cli/large", "-q", "2", "-f", big])
            #expect(large.status == 0, "\(large.stderr)")
            let got = try await sub.finish(timeout: .seconds(40))
            #expect(got.stdout == "cli/small 14\ncli/large 102400\n", "\(got.stdout) \(got.stderr)")
        }
    }

    @Test func errorsHaveMeaningfulExitCodes() async throws {
        let refused = try await run(Self.martlet, ["pub", "-p", "1", "-t", "x", "-m", "y"])
        #expect(refused.status == 2)
        #expect(refused.stderr.hasPrefix("Error:"))
        let usage = try await run(Self.martlet, ["pub", "-t", "a/+", "-m", "y"])
        #expect(usage.status != 0)
        #expect(usage.stderr.contains("invalid topic"))
        // Bad flags are refused before any connection is tried.
        for (arguments, message) in [
            (["pub", "-t", "a", "-m", "y", "-q", "3"], "-q must be 0, 1 or 2"),
            (["pub", "-t", "a"], "give exactly one of -m, -f, -s, -l, -n"),
            (["pub", "-L", "http://127.0.0.1/a", "-m", "y"], "-L must start with mqtt://, mqtts://, ws:// or wss://"),
            (["pub", "-L", "mqtt://127.0.0.1:port/a", "-m", "y"], "-L has a bad port"),
            (["pub", "-L", "mqtt://127.0.0.1", "-m", "y"], "-L needs a topic"),
            (["sub", "-t", "a/#/b"], "invalid topic filter"),
            (["sub", "-t", "a", "-c"], "-c needs a client id (-i)"),
            (["sub", "-t", "a", "-V", "mqttv6"], "-V must be mqttv311 or mqttv5"),
            (["passwd", "-c", "-b", "/tmp/martlet-never", "al:ice", "pw"], "must not be empty or contain ':'"),
            (["passwd", "-c", "/tmp/martlet-never", "alice", "pw"], "a password argument needs -b"),
            (["passwd", "-c", "-b", "/tmp/martlet-never", "alice"], "-b needs a password after USER"),
            (["passwd", "-b", "/nonexistent/dir/passwords", "alice", "pw"], "use -c to create it"),
            (["bench", "fanout", "-q", "2"], "-q must be 0 or 1"),
            (["bench", "pairs", "--duration", "0"], "must be positive"),
            (["bench", "fanin", "--window=-1"], "must be positive"),
            (["bench", "fanout", "--topic-padding=-1"], "--topic-padding must be positive"),
            (["bench", "fanout", "--topic-alias-maximum", "70000"], "--topic-alias-maximum at most 65535"),
            (["bench", "churn", "-c", "0"], "-c must be at least 1"),
            (["bench", "churn", "--connections=-5"], "--connections must not be negative"),
        ] {
            let r = try await run(Self.martlet, arguments)
            #expect(r.status != 0, "\(arguments)")
            #expect(r.stderr.contains(message), "\(arguments): \(r.stderr)")
        }
        try await withBroker { _, port in
            let rejected = try await run(Self.martlet, ["sub", "-p", "\(port)", "-c", "-i", "", "-t", "x", "-W", "1"])
            #expect(rejected.status == 3, "\(rejected.stderr)")
        }
    }
}

/// Runs a process with `input` on its standard input.
func runWithInput(_ executable: String, _ arguments: [String], input: String) async throws -> ProcessResult {
    let file = scratchPath("martlet-input")
    try input.write(toFile: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: file) }
    return try await run("/bin/sh", ["-c", "exec \"$0\" \"$@\" < \"\(file)\"", executable] + arguments)
}

@Suite struct AcceptedSocketTests {
    @Test("accepted sockets carry TCP keepalive (set once on the listening socket, inherited on accept)")
    func keepaliveIsInherited() async throws {
        try await withBroker({ $0.tcpKeepaliveIdle = 77 }) { _, port in
            let client = try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-W", "10"])
            defer { client.kill() }
            // ss shows the broker's end (source port = the listener) with a keepalive timer
            // counting down from 77 s.
            let row = try await waitFor(.seconds(10), "the accepted socket in ss", every: .milliseconds(50)) { () async throws -> String? in
                let r = try await run("/usr/bin/ss", ["-tnoH", "state", "established", "( sport = :\(port) )"])
                // Other timers (retransmit "on") show while data is in flight; wait for keepalive.
                return r.stdout.contains("timer:(keepalive") ? r.stdout : nil
            }
            #expect(row.contains("timer:(keepalive,1min1"), "\(row)")
        }
    }
}
