import Foundation
import Testing
import MartletTestSupport

/// The martletd executable itself: configuration errors, port in use, and signals.
@Suite struct DaemonTests {
    static let root = repositoryRoot
    static let martletd = root.appendingPathComponent(".build/debug/martletd").path

    func tempFile(_ text: String) throws -> String {
        let path = scratchPath("martlet-test", suffix: ".yaml")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func checkConfigAcceptsTheShippedFile() async throws {
        let r = try await run(Self.martletd, ["--config", Self.root.appendingPathComponent("config/martlet.yaml").path, "--check-config"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "configuration OK: 127.0.0.1:1883\n")
    }

    @Test func portFlagsAddToTheFilesListeners() async throws {
        let path = try tempFile("listeners:\n  - host: 127.0.0.1\n    port: 1883\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let combined = try await run(Self.martletd, ["--config", path, "--port", "1884", "--port", "1885", "--check-config"])
        #expect(combined.stdout == "configuration OK: 127.0.0.1:1883, 127.0.0.1:1884, 127.0.0.1:1885\n")
        let alone = try await run(Self.martletd, ["--port", "1884", "--bind", "0.0.0.0", "--check-config"])
        #expect(alone.stdout == "configuration OK: 0.0.0.0:1884\n")
    }

    @Test func badConfigNamesKeyAndLineAndExits2() async throws {
        let path = try tempFile("listeners:\n  - port: 0\nmax_queued_mesages: 10\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let r = try await run(Self.martletd, ["--config", path])
        #expect(r.status == 2)
        #expect(r.stderr == "martletd: invalid configuration: \(path):3: max_queued_mesages: unknown key\n")
    }

    @Test func portInUseIsAClearErrorAndNonZeroExit() async throws {
        let port = randomTestPort()
        let holder = try ChildProcess(Self.martletd, ["--port", "\(port)", "--log-level", "error"])
        defer { holder.kill() }
        try await waitUntilListening(UInt16(port))
        let r = try await run(Self.martletd, ["--port", "\(port)", "--log-level", "critical"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("cannot listen on 127.0.0.1:\(port)"), "\(r.stderr)")
    }

    @Test func sigtermStopsCleanlyWithExitZero() async throws {
        let port = randomTestPort()
        let d = try ChildProcess(Self.martletd, ["--port", "\(port)", "--log-level", "info"])
        try await waitUntilListening(UInt16(port))
        d.kill(signal: SIGTERM)
        let r = try await d.finish(timeout: .seconds(5))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("stopped"))
    }
}

/// Polls until something accepts TCP connections on 127.0.0.1:`port`.
func waitUntilListening(_ port: UInt16, timeout: Duration = .seconds(10)) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        close(fd)
        if ok { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("nothing listening on port \(port)")
}

/// Password files: mosquitto_passwd's read by martletd, `martlet passwd`'s loaded on SIGHUP.
@Suite struct DaemonSecurityTests {
    @Test("a mosquitto_passwd file authenticates mosquitto_pub; martlet passwd adds a user that works after SIGHUP")
    func passwordFileAndReload() async throws {
        let dir = scratchPath("martlet-pw")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let passwords = dir + "/passwords"
        let made = try await run("/usr/bin/mosquitto_passwd", ["-c", "-b", passwords, "alice", "secret"])
        #expect(made.status == 0, "\(made.stderr)")
        let port = randomTestPort()
        let config = dir + "/martlet.yaml"
        try """
            listeners:
              - host: 127.0.0.1
                port: \(port)
                allow_anonymous: false
            password_file: \(passwords)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let check = try await run(DaemonTests.martletd, ["--config", config, "--check-config"])
        #expect(check.status == 0, "\(check.stderr)")
        let d = try ChildProcess(DaemonTests.martletd, ["--config", config, "--log-level", "info"])
        defer { d.kill() }
        try await waitUntilListening(UInt16(port))
        func publish(_ user: String?, _ password: String?) async throws -> ProcessResult {
            var args = ["-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-m", "x", "-q", "1"]
            if let user { args += ["-u", user] }
            if let password { args += ["-P", password] }
            return try await run(mosquittoPub, args)
        }
        #expect(try await publish("alice", "secret").status == 0)
        let wrong = try await publish("alice", "guess")
        #expect(wrong.status != 0)
        #expect(wrong.stderr.lowercased().contains("not authori") || wrong.stderr.lowercased().contains("bad user"), "\(wrong.stderr)")
        #expect(try await publish(nil, nil).status != 0)

        let added = try await run(CLITests.martlet, ["passwd", "-b", passwords, "bob", "builder"])
        #expect(added.status == 0, "\(added.stderr)")
        #expect(try await publish("bob", "builder").status != 0)  // not loaded yet
        d.kill(signal: SIGHUP)
        try await waitFor(.seconds(10), "bob to be accepted after SIGHUP", every: .milliseconds(50)) {
            try await publish("bob", "builder").status == 0 ? true : nil
        }
        #expect(try await publish("alice", "secret").status == 0)
    }
}

@Suite struct DaemonLoggingTests {
    @Test("log_format json: every line on stderr is one JSON object with time, level and message")
    func jsonLogs() async throws {
        let port = randomTestPort()
        let d = try ChildProcess(DaemonTests.martletd, ["--port", "\(port)", "--log-format", "json", "--log-level", "info"])
        try await waitUntilListening(UInt16(port))
        d.kill(signal: SIGTERM)
        let r = try await d.finish(timeout: .seconds(5))
        #expect(r.status == 0)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count >= 3)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["time"] is String && object?["level"] is String && object?["message"] is String, "\(line)")
        }
        #expect(lines.contains { $0.contains("\"message\":\"listening\"") })
    }

    @Test("a bad environment value names the variable and exits 2")
    func badEnvironment() async throws {
        let r = try await run("/usr/bin/env", ["MARTLET_MAX_INFLIGHT=lots", DaemonTests.martletd, "--check-config"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("MARTLET_MAX_INFLIGHT"), "\(r.stderr)")
    }
}

@Suite struct DaemonReloadTests {
    @Test("SIGHUP with a broken configuration file keeps the running configuration; a fixed file is then applied")
    func badReloadKeepsRunningConfiguration() async throws {
        let dir = scratchPath("martlet-reload")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let port = randomTestPort()
        let config = dir + "/martlet.yaml"
        let good = "listeners:\n  - host: 127.0.0.1\n    port: \(port)\nmax_connections: 1\n"
        try good.write(toFile: config, atomically: true, encoding: .utf8)
        let d = try ChildProcess(DaemonTests.martletd, ["--config", config, "--log-level", "info"])
        defer { d.kill() }
        try await waitUntilListening(UInt16(port))
        func publish() async throws -> Int32 {
            try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-m", "x", "-q", "1"]).status
        }
        // One connection held open uses the only place. The holder can itself be refused
        // while the broker still counts waitUntilListening's probe connection (its close
        // not yet processed); mosquitto_sub then exits, so it is started again.
        var holder = try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-W", "30"])
        defer { holder.kill() }
        try await waitFor(.seconds(15), "the holder to take the only place", every: .milliseconds(50)) { () async throws -> Bool? in
            if !holder.process.isRunning {
                holder = try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-W", "30"])
                return nil
            }
            return try await publish() != 0 ? true : nil
        }

        try (good + "max_conections: 5\n").write(toFile: config, atomically: true, encoding: .utf8)
        d.kill(signal: SIGHUP)
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await publish() != 0)  // still max_connections 1

        try good.replacingOccurrences(of: "max_connections: 1", with: "max_connections: 5").write(toFile: config, atomically: true, encoding: .utf8)
        d.kill(signal: SIGHUP)
        try await waitFor(.seconds(10), "the new max_connections", every: .milliseconds(50)) { try await publish() == 0 ? true : nil }
        d.kill(signal: SIGTERM)
        let r = try await d.finish(timeout: .seconds(5))
        #expect(r.stderr.contains("reload failed, keeping the running configuration"), "\(r.stderr)")
        #expect(r.stderr.contains("max_conections: unknown key"))
    }
}

@Suite struct DaemonSecurityFileTests {
    @Test("a password file or ACL that does not load stops the daemon with the file and line, exit 2")
    func badSecurityFilesExit2() async throws {
        let dir = scratchPath("martlet-badsec")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "alice:$6$not-pbkdf2\n".write(toFile: dir + "/passwords", atomically: true, encoding: .utf8)
        try "topic read a\ntopic maybe b\n".write(toFile: dir + "/acl", atomically: true, encoding: .utf8)
        let port = randomTestPort()
        for (key, file, expected) in [
            ("password_file", dir + "/passwords", "\(dir)/passwords:1: password_file:"),
            ("acl_file", dir + "/acl", "\(dir)/acl:2: acl_file: unknown access \"maybe\""),
            ("password_file", dir + "/missing", "\(dir)/missing: password_file: cannot read: No such file or directory"),
        ] {
            let config = dir + "/martlet.yaml"
            try "listeners:\n  - port: \(port)\n\(key): \(file)\n".write(toFile: config, atomically: true, encoding: .utf8)
            let check = try await run(DaemonTests.martletd, ["--config", config, "--check-config"])
            #expect(check.status == 2)
            #expect(check.stderr.contains(expected), "\(check.stderr)")
            let start = try await run(DaemonTests.martletd, ["--config", config])
            #expect(start.status == 2)
            #expect(start.stderr.contains(expected), "\(start.stderr)")
        }
    }
}
