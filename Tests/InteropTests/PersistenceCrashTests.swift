import Foundation
import MartletTestSupport
import Testing

/// The session store against real crashes: martletd with `--persistence` is killed with
/// SIGKILL while clients work, started again on the same file, and what it acknowledged is
/// counted against what arrives. Clients are Python paho-mqtt and mosquitto_pub/sub.
@Suite(.serialized) struct PersistenceCrashTests {
    static let paho = DaemonTests.root.appendingPathComponent("Tests/InteropTests/paho").path

    struct Daemon {
        var process: ChildProcess
        var port: Int
    }

    /// martletd on `port` with its store at `store` (and any other flags).
    func start(_ port: Int, store: String, _ extra: [String] = []) async throws -> Daemon {
        let d = try ChildProcess(DaemonTests.martletd, [
            "--port", "\(port)", "--persistence", store, "--max-queued-messages", "20000", "--log-level", "info",
        ] + extra)
        try await waitUntilListening(UInt16(port))
        return Daemon(process: d, port: port)
    }

    func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func subscriber(_ port: Int, _ clientID: String, _ topic: String, qos: Int, idle: Double, out: String,
                    version: String = "mqttv311") async throws -> ProcessResult {
        try await run(debianPython, ["\(Self.paho)/persistent_subscriber.py", "\(port)", clientID, topic, "\(qos)", "\(idle)", out, version],
                      timeout: .seconds(60))
    }

    /// The acknowledged publishes, counted while the broker dies: the store must hand every
    /// one of them to the offline subscriber after the restart; QoS 2 exactly once.
    @Test("kill -9 mid-stream (durable): every acknowledged QoS 1 and QoS 2 message reaches the offline persistent subscriber after restart",
          arguments: [1, 2])
    func killNineLosesNothingAcknowledged(qos: Int) async throws {
        let dir = scratchPath("crash")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = dir + "/store.db"
        let port = randomTestPort()
        var d = try await start(port, store: store)
        // The persistent session, left offline.
        let created = try await subscriber(port, "crash-sub", "crash/t", qos: qos, idle: 0, out: dir + "/ignored")
        #expect(created.status == 0, "\(created.stdout) \(created.stderr)")

        let acks = dir + "/acks"
        let publisher = try ChildProcess(debianPython, ["\(Self.paho)/persistent_publisher.py", "\(port)", "\(qos)", "10000", "crash/t", acks])
        let deadline = ContinuousClock.now + .seconds(60)
        while lines(acks).count < 2000 && ContinuousClock.now < deadline && publisher.isRunning {
            try await Task.sleep(for: .milliseconds(5))
        }
        d.process.kill()
        _ = try await d.process.finish()
        _ = try await publisher.finish(timeout: .seconds(30))
        let acknowledged = Set(lines(acks).compactMap { Int($0) })
        #expect(acknowledged.count >= 2000, "the publisher got \(acknowledged.count) acknowledgements before the kill")
        #expect(acknowledged.count < 10_000, "the broker was killed after everything was acknowledged: nothing was tested mid-stream")

        d = try await start(port, store: store)
        defer { d.process.kill() }
        let out = dir + "/received"
        let resumed = try await subscriber(port, "crash-sub", "crash/t", qos: qos, idle: 2, out: out)
        #expect(resumed.stdout.contains("session_present True"), "\(resumed.stdout) \(resumed.stderr)")
        let received = lines(out).map { $0.split(separator: " ") }
        let numbers = received.compactMap { Int($0[0]) }
        let missing = acknowledged.subtracting(numbers)
        #expect(missing.isEmpty, "\(missing.count) acknowledged messages lost, e.g. \(missing.sorted().prefix(5))")
        var seen = Set<Int>()
        for fields in received {
            guard let n = Int(fields[0]) else { continue }
            let duplicate = !seen.insert(n).inserted
            if duplicate {
                // QoS 2: exactly once. QoS 1: a second copy only flagged DUP.
                #expect(qos == 1 && fields.count > 1 && fields[1] == "1", "message \(n) delivered twice")
            }
        }
        print("kill -9 durable QoS \(qos): acknowledged \(acknowledged.count), delivered after restart \(numbers.count) (\(seen.count) distinct), missing \(missing.count)")
    }

    @Test("kill -9: retained messages, and mosquitto_sub -c's session with its queue, survive")
    func retainedAndMosquittoSessionsSurvive() async throws {
        let dir = scratchPath("crash-retained")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = dir + "/store.db"
        let port = randomTestPort()
        var d = try await start(port, store: store)
        // mosquitto_sub -c: a clean session 0 subscriber, created then left offline.
        let created = try await run(mosquittoSub, ["-p", "\(port)", "-c", "-i", "mosq-sub", "-q", "1", "-t", "keep/#", "-W", "1"], timeout: .seconds(10))
        #expect(created.status != 0 || created.stdout.isEmpty)
        for (topic, payload) in [("keep/a", "one"), ("keep/b", "two")] {
            let r = try await run(mosquittoPub, ["-p", "\(port)", "-q", "1", "-r", "-t", topic, "-m", payload])
            #expect(r.status == 0, "\(r.stderr)")
        }
        let queued = try await run(mosquittoPub, ["-p", "\(port)", "-q", "1", "-t", "keep/queued", "-m", "while-away"])
        #expect(queued.status == 0)
        d.process.kill()
        _ = try await d.process.finish()

        d = try await start(port, store: store)
        defer { d.process.kill() }
        let retained = try await run(mosquittoSub, ["-p", "\(port)", "-t", "keep/+", "-C", "2", "-W", "5", "-v"], timeout: .seconds(10))
        #expect(Set(retained.stdout.split(separator: "\n")) == ["keep/a one", "keep/b two"], "\(retained.stdout) \(retained.stderr)")
        let resumed = try await run(mosquittoSub, ["-p", "\(port)", "-c", "-i", "mosq-sub", "-q", "1", "-t", "keep/#", "-C", "3", "-W", "5", "-v"],
                                    timeout: .seconds(10))
        let got = Set(resumed.stdout.split(separator: "\n"))
        // The queued message from the session, the retained ones again for the new SUBSCRIBE.
        #expect(got == ["keep/queued while-away", "keep/a one", "keep/b two"], "\(resumed.stdout) \(resumed.stderr)")
    }

    @Test("kill -9 with a v5 client connected: its delayed will goes out after the restart, not before its delay")
    func delayedWillFiresAfterRestart() async throws {
        let dir = scratchPath("crash-will")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = dir + "/store.db"
        let port = randomTestPort()
        var d = try await start(port, store: store)
        // Session expiry 60 s, will delay 2 s: still connected (-W 30) when the broker dies.
        let client = try ChildProcess(mosquittoSub, [
            "-p", "\(port)", "-V", "5", "-i", "will-holder", "-c", "-x", "60", "-t", "nothing", "-W", "30",
            "--will-topic", "wills/holder", "--will-payload", "gone", "--will-qos", "1", "-D", "will", "will-delay-interval", "2",
        ])
        defer { client.kill() }
        _ = try await waitFor(.seconds(10), "the will holder connects") { try await self.storedSessions(store) == 1 ? true : nil }
        d.process.kill()
        _ = try await d.process.finish()
        // The client goes too (mosquitto_sub would reconnect, resume and so cancel the will).
        client.kill()
        let restarted = ContinuousClock.now
        d = try await start(port, store: store)
        defer { d.process.kill() }
        let will = try await run(mosquittoSub, ["-p", "\(port)", "-t", "wills/#", "-C", "1", "-W", "10", "-v"], timeout: .seconds(15))
        #expect(will.stdout == "wills/holder gone\n", "\(will.stdout) \(will.stderr)")
        #expect(ContinuousClock.now - restarted >= .seconds(2), "the will came before its delay")
    }

    @Test("A full disk (a 2 MiB tmpfs): new persistent QoS 1 messages get v5 0x97 / no 3.1.1 PUBACK, counted and logged; the broker keeps serving, the file stays valid and commits resume when space returns")
    func fullDiskRefusesAndRecovers() async throws {
        let dir = scratchPath("full-disk")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let mounted = try await run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", dir])
        try #require(mounted.status == 0, "this test needs to mount a small tmpfs (root): \(mounted.stderr)")
        defer { _ = try? SpawnedProcess("/bin/umount", ["-l", dir]) }
        let store = dir + "/store.db"
        let port = randomTestPort()
        var d = try await start(port, store: store)
        let created = try await subscriber(port, "disk-sub", "disk/t", qos: 1, idle: 0, out: dir + "/ignored")
        #expect(created.status == 0)
        let before = try await run(mosquittoPub, ["-p", "\(port)", "-V", "5", "-q", "1", "-t", "disk/t", "-m", "before"])
        #expect(before.status == 0 && before.stderr.isEmpty, "\(before.stderr)")

        // Fill the file system.
        let fill = try await run("/bin/dd", ["if=/dev/zero", "of=\(dir)/filler", "bs=64k"])
        #expect(fill.stderr.contains("No space left"), "\(fill.stderr)")
        let refused = try await run(mosquittoPub, ["-p", "\(port)", "-V", "5", "-q", "1", "-t", "disk/t", "-m", "refused"])
        let listing = try await run("/bin/ls", ["-la", dir])
        #expect(refused.stderr.contains("Quota exceeded"), "v5 is told 0x97: \(refused.status) \(refused.stdout) \(refused.stderr) \(listing.stdout)")
        let v311 = try ChildProcess(mosquittoPub, ["-p", "\(port)", "-q", "1", "-t", "disk/t", "-m", "unanswered"])
        try await Task.sleep(for: .seconds(1))
        #expect(v311.isRunning, "3.1.1 gets no PUBACK while the store cannot commit")
        v311.kill()
        // Still serving: QoS 0 and a non-persistent round trip work meanwhile.
        let plain = try await run(mosquittoPub, ["-p", "\(port)", "-q", "1", "-t", "elsewhere", "-m", "x"])
        #expect(plain.status == 0 && plain.stderr.isEmpty)

        try FileManager.default.removeItem(atPath: dir + "/filler")
        let after = try await run(mosquittoPub, ["-p", "\(port)", "-V", "5", "-q", "1", "-t", "disk/t", "-m", "after"])
        #expect(after.status == 0 && after.stderr.isEmpty, "commits work again: \(after.stderr)")
        d.process.kill()
        let log = try await d.process.finish()
        #expect(log.stderr.contains("session store commit failed"), "\(log.stderr)")
        #expect(log.stderr.contains("session store commits work again"), "\(log.stderr)")
        let check = try await run("/usr/bin/sqlite3", [store, "PRAGMA integrity_check"])
        #expect(check.stdout == "ok\n", "\(check.stdout) \(check.stderr)")

        d = try await start(port, store: store)
        defer { d.process.kill() }
        let out = dir + "/received"
        _ = try await subscriber(port, "disk-sub", "disk/t", qos: 1, idle: 1, out: out)
        let got = Set(lines(out).map { String($0.split(separator: " ")[0]) })
        #expect(got.isSuperset(of: ["before", "after"]), "\(got)")
    }

    @Test("sync: periodic: acknowledged messages are committed by the periodic writer (its pending gauge reaches 0), and what was committed survives a kill -9")
    func periodicLosesAtMostOneInterval() async throws {
        let dir = scratchPath("crash-periodic")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = dir + "/store.db"
        let config = dir + "/martlet.yaml"
        let metrics = randomTestPort()
        try "persistence:\n  path: \(store)\n  sync: periodic\n  commit_interval_ms: 200\nmetrics: {host: 127.0.0.1, port: \(metrics)}\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let port = randomTestPort()
        var d = try await start(port, store: store, ["--config", config])
        _ = try await subscriber(port, "periodic-sub", "periodic/t", qos: 1, idle: 0, out: dir + "/ignored")
        let acks = dir + "/acks"
        let r = try await run(debianPython, ["\(Self.paho)/persistent_publisher.py", "\(port)", "1", "3000", "periodic/t", acks], timeout: .seconds(60))
        #expect(r.stdout.contains("acked 3000"), "\(r.stdout) \(r.stderr)")
        // The writer's next periodic commits take in everything acknowledged: wait for its
        // gauge to say so (not for a guessed margin), then kill.
        let fetch = "import sys, urllib.request; print(urllib.request.urlopen('http://127.0.0.1:%s/metrics' % sys.argv[1]).read().decode())"
        try await waitFor(.seconds(20), "every acknowledged change committed", every: .milliseconds(100)) { () -> Bool? in
            let r = try await run(debianPython, ["-c", fetch, "\(metrics)"])
            return r.stdout.contains("\nmartlet_store_records_pending 0\n") ? true : nil
        }
        d.process.kill()
        _ = try await d.process.finish()
        d = try await start(port, store: store, ["--config", config])
        defer { d.process.kill() }
        let out = dir + "/received"
        _ = try await subscriber(port, "periodic-sub", "periodic/t", qos: 1, idle: 2, out: out)
        let numbers = Set(lines(out).compactMap { Int($0.split(separator: " ")[0]) })
        #expect(numbers == Set(1...3000), "\(3000 - numbers.count) lost")
    }

    @Test("martlet store backup copies the store of a running broker consistently; an existing target is refused")
    func backupWhileRunning() async throws {
        let dir = scratchPath("backup")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = dir + "/store.db"
        let port = randomTestPort()
        let d = try await start(port, store: store)
        defer { d.process.kill() }
        _ = try await subscriber(port, "backed-up", "b/t", qos: 1, idle: 0, out: dir + "/ignored")
        for i in 1...5 {
            _ = try await run(mosquittoPub, ["-p", "\(port)", "-q", "1", "-t", "b/t", "-m", "m\(i)"])
        }
        let copy = dir + "/copy.db"
        let backup = try await run(CLITests.martlet, ["store", "backup", store, copy])
        #expect(backup.status == 0, "\(backup.stderr)")
        let rows = try await run("/usr/bin/sqlite3", [copy, "SELECT count(*) FROM sessions; SELECT count(*) FROM deliveries; PRAGMA integrity_check"])
        #expect(rows.stdout == "1\n5\nok\n", "\(rows.stdout) \(rows.stderr)")
        let again = try await run(CLITests.martlet, ["store", "backup", store, copy])
        #expect(again.status != 0 && again.stderr.contains("exists"), "\(again.stderr)")
    }

    @Test("A store file that is garbage is moved aside with an error naming it and the reason, and martletd serves with an empty store; a store that cannot be created is exit 2 naming the key")
    func unusableStoreAtTheDaemon() async throws {
        let dir = scratchPath("garbage")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = dir + "/store.db"
        try String(repeating: "not a database ", count: 1000).write(toFile: store, atomically: true, encoding: .utf8)
        let port = randomTestPort()
        let d = try await start(port, store: store)
        let ok = try await run(mosquittoPub, ["-p", "\(port)", "-q", "1", "-t", "t", "-m", "served"])
        #expect(ok.status == 0)
        d.process.kill(signal: SIGTERM)
        let log = try await d.process.finish()
        #expect(log.stderr.contains("session store unusable: moved aside"), "\(log.stderr)")
        #expect(log.stderr.contains("not a database"), "the reason is logged: \(log.stderr)")
        let aside = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("store.db.corrupt-") }
        #expect(aside.count == 1, "\(aside)")

        let missing = try await run(DaemonTests.martletd, ["--port", "\(randomTestPort())", "--persistence", dir + "/no/such/dir/store.db"])
        #expect(missing.status == 2, "\(missing.stderr)")
        #expect(missing.stderr.contains("persistence.path"), "\(missing.stderr)")
    }

    /// Sessions in the store file, read with Debian's sqlite3 shell (a second reader is fine in WAL mode).
    func storedSessions(_ store: String) async throws -> Int {
        let r = try await run("/usr/bin/sqlite3", [store, "SELECT count(*) FROM sessions"])
        return Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }
}
