import Foundation
import MartletBroker
import MartletClient
import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Debian's mosquitto_pub / mosquitto_sub against martletd.
@Suite struct MosquittoClientTests {
    @Test(arguments: ["mqttv311", "mqttv5"], [0, 1, 2])
    func roundTrip(version: String, qos: Int) async throws {
        try await withBroker { broker, port in
            let sub = try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-q", "\(qos)",
                                                      "-t", "interop/+", "-v", "-C", "3", "-W", "10"])
            try await waitForSubscriptions(broker, 1)
            for i in 1...3 {
                let r = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-q", "\(qos)",
                                                    "-t", "interop/\(i)", "-m", "message \(i)"])
                #expect(r.status == 0, "mosquitto_pub: \(r.stderr)")
            }
            let result = try await sub.finish()
            #expect(result.status == 0, "mosquitto_sub: \(result.stderr)")
            #expect(result.stdout == "interop/1 message 1\ninterop/2 message 2\ninterop/3 message 3\n")
        }
    }

    @Test func retainedMessage() async throws {
        try await withBroker { _, port in
            let p = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "status/door", "-m", "open", "-r", "-q", "1"])
            #expect(p.status == 0)
            let s = try await run(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "status/#", "-C", "1", "-W", "5",
                                                "-F", "%t %p %r"])
            #expect(s.stdout == "status/door open 1\n")
            // -R skips retained messages: with nothing else published it times out empty.
            let skip = try await run(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "status/#", "-R", "-C", "1", "-W", "1"])
            #expect(skip.stdout.isEmpty)
        }
    }

    @Test func willAfterKilledClient() async throws {
        try await withBroker { broker, port in
            let watcher = try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "wills/#", "-v", "-C", "1", "-W", "10"])
            try await waitForSubscriptions(broker, 1)
            let victim = try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "anything", "-i", "victim",
                                                        "--will-topic", "wills/victim", "--will-payload", "died", "-W", "10"])
            try await waitForSubscriptions(broker, 2)
            victim.kill()
            let result = try await watcher.finish()
            #expect(result.stdout == "wills/victim died\n")
            _ = try await victim.finish()
        }
    }

    @Test(arguments: ["mqttv311", "mqttv5"])
    func offlineQueueing(version: String) async throws {
        try await withBroker { broker, port in
            // Create the persistent session and its QoS 1 subscription, then leave.
            var sessionArgs = ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-i", "offline-\(version)", "-c", "-q", "1", "-t", "queued/#"]
            if version == "mqttv5" { sessionArgs += ["-x", "300"] }
            let first = try ChildProcess(mosquittoSub, sessionArgs + ["-W", "10"])
            try await waitForSubscriptions(broker, 1)
            first.kill(signal: SIGTERM)
            _ = try await first.finish()
            for i in 1...3 {
                let r = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-q", "1", "-t", "queued/\(i)", "-m", "while away \(i)"])
                #expect(r.status == 0)
            }
            let back = try await run(mosquittoSub, sessionArgs + ["-v", "-C", "3", "-W", "5"])
            #expect(back.stdout == "queued/1 while away 1\nqueued/2 while away 2\nqueued/3 while away 3\n")
        }
    }

    @Test func wildcards() async throws {
        try await withBroker { broker, port in
            let sub = try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "home/+/temp", "-t", "office/#",
                                                      "-v", "-C", "3", "-W", "10"])
            try await waitForSubscriptions(broker, 2)
            for (topic, msg) in [("home/kitchen/temp", "21"), ("home/kitchen/humidity", "40"), ("office", "root"), ("office/desk/lamp", "on")] {
                _ = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", topic, "-m", msg])
            }
            let result = try await sub.finish()
            #expect(result.stdout == "home/kitchen/temp 21\noffice root\noffice/desk/lamp on\n")
        }
    }
}

/// Python paho-mqtt (Debian's python3-paho-mqtt) against martletd.
@Suite struct PahoTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("paho/roundtrip.py").path

    @Test(arguments: ["mqttv311", "mqttv5"])
    func roundTrip(version: String) async throws {
        try await withBroker { _, port in
            let r = try await run(debianPython, [Self.script, "\(port)", version], timeout: .seconds(20))
            #expect(r.status == 0, "paho: \(r.stdout) \(r.stderr)")
            #expect(r.stdout.hasSuffix("OK\n"))
        }
    }
}

/// Third-party clients as members of one share group: mosquitto_sub (3.1.1 and 5.0) and
/// paho-mqtt (5.0).
@Suite struct SharedSubscriptionInteropTests {
    static let member = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("paho/shared_member.py").path

    @Test("MQTT 5 4.8.2: mosquitto_sub -V mqttv311, mosquitto_sub -V mqttv5 and paho MQTTv5 in one group: 90 QoS 1 messages, each to exactly one, 30 each (round_robin)")
    func thirdPartyMembers() async throws {
        try await withBroker({ $0.sharedSubscriptionStrategy = .roundRobin }) { broker, port in
            let filter = "$share/workers/jobs/#"
            // -C 30: each mosquitto_sub member leaves once it has its fair share. -W 30 only bounds
            // a broken run: a member that ran out of time with copies unacknowledged would hand
            // them to the others and skew the counts (a loaded CI machine took 20 s to get here).
            let subs = try ["mqttv311", "mqttv5"].map { version in
                try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-q", "1", "-i", "mosq-\(version)",
                                                "-t", filter, "-C", "30", "-W", "30"])
            }
            let paho = try ChildProcess(debianPython, [Self.member, "\(port)", "mqttv5", "paho-member", filter, "2"])
            try await waitFor(.seconds(15), "three members") { broker.sharedGroups.first?.members == 3 ? true : nil }
            let publisher = try await MQTTClient.connect(.init(port: port, clientID: "jobs-publisher"))
            for i in 1...90 { try await publisher.publish("jobs/\(i % 3)", payload: ByteBuffer(string: "job \(i)"), qos: .atLeastOnce) }
            try await publisher.disconnect()
            var outputs: [[String]] = []
            for sub in subs { outputs.append(try await sub.finish(timeout: .seconds(35)).stdout.split(separator: "\n").map(String.init)) }
            outputs.append(try await paho.finish(timeout: .seconds(35)).stdout.split(separator: "\n").map(String.init).filter { $0 != "ready" })
            let all = outputs.flatMap { $0 }
            #expect(all.count == 90, "\(outputs)")
            #expect(Set(all) == Set((1...90).map { "job \($0)" }))
            #expect(outputs.map(\.count) == [30, 30, 30], "\(outputs.map(\.count))")
        }
    }
}
