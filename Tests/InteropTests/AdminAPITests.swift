import Foundation
import MartletAuth
import MartletBridge
import MartletBroker
import Logging
import MartletClient
import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// The admin API over real HTTP (Python's urllib as the client), against real MQTT clients.
@Suite struct AdminAPITests {
    static let token = "test-token-0123456789abcdef"

    struct HTTPResult {
        var status: Int
        var body: String
        var json: Any? { try? JSONSerialization.jsonObject(with: Data(body.utf8)) }
        var object: [String: Any] { json as? [String: Any] ?? [:] }
        var items: [[String: Any]] { object["items"] as? [[String: Any]] ?? [] }
    }

    static let client = """
        import sys, urllib.request, urllib.error
        method, url, token, body = sys.argv[1:5]
        request = urllib.request.Request(url, method=method, data=body.encode() if body else None)
        if token:
            request.add_header("Authorization", token)
        try:
            response = urllib.request.urlopen(request, timeout=10)
            print(response.status)
            print(response.read().decode())
        except urllib.error.HTTPError as e:
            print(e.code)
            print(e.read().decode())
        """

    static func http(_ method: String, _ port: Int, _ path: String, token: String? = "Bearer \(token)", body: String = "") async throws -> HTTPResult {
        let r = try await run(debianPython, ["-c", client, method, "http://127.0.0.1:\(port)\(path)", token ?? "", body])
        let lines = r.stdout.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        return HTTPResult(status: Int(lines.first ?? "") ?? -1, body: lines.count > 1 ? String(lines[1]) : "")
    }

    /// A broker with the metrics endpoint, and the admin API on when `tokens`.
    func withAdmin(tokens: Bool = true, _ body: (MQTTBroker, _ mqtt: Int, _ http: Int) async throws -> Void) async throws {
        let file = scratchPath("admin-tokens")
        try "# operators\n\(Self.token)\n".write(toFile: file, atomically: true, encoding: .utf8)
        try await withBroker({
            $0.metrics = .init(host: "127.0.0.1", port: 0)
            if tokens { $0.adminTokenFile = file }
        }) { broker, port in
            try await body(broker, port, broker.metricsAddress!.port!)
        }
    }

    @Test("Without admin_token_file the API is off (404, JSON error); with it, no token is 401, a wrong one 403, all JSON")
    func authorization() async throws {
        try await withAdmin(tokens: false) { _, _, http in
            let off = try await Self.http("GET", http, "/api/v1/clients")
            #expect(off.status == 404 && (off.object["error"] as? String)?.contains("admin_token_file") == true)
        }
        try await withAdmin { _, _, http in
            let none = try await Self.http("GET", http, "/api/v1/clients", token: nil)
            #expect(none.status == 401 && none.object["error"] != nil)
            let wrong = try await Self.http("GET", http, "/api/v1/clients", token: "Bearer not-the-token-at-all")
            #expect(wrong.status == 403 && wrong.object["error"] != nil)
            #expect(try await Self.http("GET", http, "/api/v1/stats").status == 200)
            let unknown = try await Self.http("GET", http, "/api/v1/nothing-here")
            #expect(unknown.status == 404 && unknown.object["error"] != nil)
            #expect(try await Self.http("PUT", http, "/api/v1/clients").status == 405)
        }
    }

    @Test("GET /clients lists a connected mosquitto_sub with its details; GET /clients/{id} has its subscriptions; DELETE disconnects it with v5 DISCONNECT 0x98; unknown ids are 404")
    func clientsAndKick() async throws {
        try await withAdmin { broker, port, http in
            let sub = try ChildProcess(mosquittoSub, ["-d", "-p", "\(port)", "-V", "5", "-i", "kicked", "-t", "a/#", "-q", "1", "-W", "20"])
            try await waitForSubscriptions(broker, 1)
            let list = try await Self.http("GET", http, "/api/v1/clients?prefix=kick")
            #expect(list.status == 200 && list.object["total"] as? Int == 1)
            let client = list.items.first ?? [:]
            #expect(client["id"] as? String == "kicked" && client["connected"] as? Bool == true)
            #expect(client["protocol"] as? String == "5.0" && client["transport"] as? String == "tcp")
            #expect(client["subscriptions"] as? Int == 1 && client["keepalive_s"] as? Int == 60)
            #expect((client["remote_address"] as? String)?.contains("127.0.0.1") == true)
            #expect(try await Self.http("GET", http, "/api/v1/clients?prefix=nobody").object["total"] as? Int == 0)
            #expect(try await Self.http("GET", http, "/api/v1/clients?sort=size").status == 400)

            let one = try await Self.http("GET", http, "/api/v1/clients/kicked")
            let subscriptions = one.object["subscription_list"] as? [[String: Any]] ?? []
            #expect(subscriptions.first?["filter"] as? String == "a/#" && subscriptions.first?["qos"] as? Int == 1)
            #expect(try await Self.http("GET", http, "/api/v1/clients/nobody").status == 404)

            #expect(try await Self.http("DELETE", http, "/api/v1/clients/kicked").status == 204)
            let out = try await sub.finish(timeout: .seconds(10))
            #expect(out.stdout.contains("Received DISCONNECT (152)") || out.stderr.contains("Received DISCONNECT (152)"),
                    "mosquitto_sub saw: \(out.stdout) \(out.stderr)")
            #expect(try await Self.http("DELETE", http, "/api/v1/clients/kicked").status == 404)
            try await waitFor(.seconds(10), "the clean session to end") {
                try await Self.http("GET", http, "/api/v1/clients/kicked").status == 404 ? true : nil
            }
        }
    }

    @Test("Offline sessions: GET /sessions lists a persistent one with its queue; DELETE /sessions/{id} ends it; DELETE /clients/{id}?discard_session=true ends a connected one's too")
    func sessions() async throws {
        try await withAdmin { _, port, http in
            var config = MQTTClientConfiguration(port: port, clientID: "away")
            config.version = .v5
            config.cleanStart = false
            config.sessionExpiryInterval = 3600
            let away = try await MQTTClient.connect(config)
            try await away.subscribe("q/#", qos: .atLeastOnce)
            try await away.disconnect()
            let publisher = try await MQTTClient.connect(.init(port: port, clientID: "pub"))
            try await publisher.publish("q/1", payload: ByteBuffer(string: "kept"), qos: .atLeastOnce)
            let listed = try await waitFor(.seconds(10), "the offline session with its message") { () -> [String: Any]? in
                let s = try await Self.http("GET", http, "/api/v1/sessions").items.first { $0["id"] as? String == "away" }
                return s?["queued_messages"] as? Int == 1 ? s : nil
            }
            #expect(listed["connected"] as? Bool == false && listed["session_expiry_s"] as? Int == 3600)
            #expect(try await Self.http("DELETE", http, "/api/v1/sessions/away").status == 204)
            #expect(try await Self.http("GET", http, "/api/v1/sessions").items.isEmpty)
            #expect(try await Self.http("DELETE", http, "/api/v1/sessions/away").status == 404)

            let here = try await MQTTClient.connect(config)
            #expect(try await Self.http("DELETE", http, "/api/v1/sessions/away").status == 404, "online: not an offline session")
            #expect(try await Self.http("DELETE", http, "/api/v1/clients/away?discard_session=true").status == 204)
            await here.waitUntilClosed()
            #expect(try await Self.http("GET", http, "/api/v1/clients/away").status == 404, "the session ended with the connection")
        }
    }

    @Test("POST /publish reaches subscribers and can retain; GET /topics/retained finds it; DELETE /topics/retained removes it; bad JSON, topics and filters are 400")
    func publishAndRetained() async throws {
        try await withAdmin { broker, port, http in
            let subscriber = try await MQTTClient.connect(.init(port: port, clientID: "listener"))
            try await subscriber.subscribe("news/#", qos: .atLeastOnce)
            let posted = try await Self.http("POST", http, "/api/v1/publish", body: #"{"topic": "news/today", "payload": "sunny", "qos": 1, "retain": true}"#)
            #expect(posted.status == 204)
            var iterator = subscriber.messages.makeAsyncIterator()
            let got = await iterator.next()
            #expect(got?.topic == "news/today" && got.map { String(buffer: $0.payload) } == "sunny")
            let retained = try await Self.http("GET", http, "/api/v1/topics/retained?match=news/%23")
            #expect(retained.object["total"] as? Int == 1 && retained.items.first?["payload"] as? String == "sunny")
            #expect(try await Self.http("DELETE", http, "/api/v1/topics/retained?topic=news/today").status == 204)
            try await waitFor(.seconds(10), "the retained message to go") { broker.retainedCount == 0 ? true : nil }
            #expect(try await Self.http("DELETE", http, "/api/v1/topics/retained?topic=news/today").status == 404)
            #expect(try await Self.http("POST", http, "/api/v1/publish", body: "{not json").status == 400)
            // A body over 1 MiB is refused before it is read as JSON.
            let big = """
                import sys, urllib.request, urllib.error
                request = urllib.request.Request(sys.argv[1], method="POST", data=b"x" * (1 << 20 + 1), headers={"Authorization": sys.argv[2]})
                try:
                    print(urllib.request.urlopen(request, timeout=10).status)
                except urllib.error.HTTPError as e:
                    print(e.code)
                """
            let tooLarge = try await run(debianPython, ["-c", big, "http://127.0.0.1:\(http)/api/v1/publish", "Bearer \(Self.token)"])
            #expect(tooLarge.stdout == "413\n", "\(tooLarge.stdout) \(tooLarge.stderr)")
            #expect(try await Self.http("POST", http, "/api/v1/publish", body: #"{"topic": "a/+/b"}"#).status == 400)
            #expect(try await Self.http("POST", http, "/api/v1/publish", body: #"{"topic": "$SYS/x"}"#).status == 400)
            #expect(try await Self.http("POST", http, "/api/v1/publish", body: #"{"topic": "a", "qos": 3}"#).status == 400)
            #expect(try await Self.http("GET", http, "/api/v1/topics/retained?match=a/%23/b").status == 400)
            #expect(try await Self.http("GET", http, "/api/v1/subscriptions?filter=news/%23").items.map { $0["client_id"] as? String } == ["listener"])
            #expect(try await Self.http("GET", http, "/api/v1/subscriptions?filter=a/%23/b").status == 400)
        }
    }

    @Test("GET /stats has the figures of /metrics; GET /listeners the listeners and their bound addresses; openapi.json lists every route the API serves")
    func statsListenersAndOpenAPI() async throws {
        try await withAdmin { _, port, http in
            let stats = try await Self.http("GET", http, "/api/v1/stats").object
            #expect(stats["connections_accepted_total"] is Int && stats["auth_pending"] is Int)
            #expect((stats["messages_dropped_total"] as? [String: Int])?["reason=queue_full"] == 0)
            let listeners = try await Self.http("GET", http, "/api/v1/listeners").json as? [[String: Any]] ?? []
            #expect(listeners.count == 1 && (listeners.first?["bound"] as? String)?.hasSuffix(":\(port)") == true)
            let document = try await Self.http("GET", http, "/api/v1/openapi.json", token: nil)
            #expect(document.status == 200)
            let paths = document.object["paths"] as? [String: [String: Any]] ?? [:]
            for (method, path) in MQTTBroker.adminRoutes {
                #expect(paths[path]?[method.lowercased()] != nil, "\(method) \(path) is not in openapi.json")
            }
            #expect(paths.values.map(\.count).reduce(0, +) == MQTTBroker.adminRoutes.count, "openapi.json lists a route the API does not serve")
        }
    }

    @Test("A token file that does not load stops martletd naming admin_token_file (exit 2)", arguments: ["short\n", "# only a comment\n", nil])
    func badTokenFile(content: String?) async throws {
        let tokens = scratchPath("admin-tokens")
        if let content { try content.write(toFile: tokens, atomically: true, encoding: .utf8) }
        let config = scratchPath("admin", suffix: ".yaml")
        try "metrics: {host: 127.0.0.1, port: 0}\nadmin_token_file: \(tokens)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let r = try await run(DaemonTests.martletd, ["--config", config, "--check-config"])
        #expect(r.status == 2 && r.stderr.contains("admin_token_file"), "\(r.status) \(r.stderr)")
    }

    @Test("Users and ACL at run time: a user added through the API connects (mosquitto_pub), a removed one is refused, a password change applies; the ACL is replaced (a bad one refused with 400); the files hold the changes")
    func usersAndACL() async throws {
        let dir = scratchPath("admin-security")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var passwords = PasswordFile()
        passwords.set(user: "first", password: "one", iterations: 1000)
        try passwords.rendered.write(toFile: dir + "/passwords", atomically: true, encoding: .utf8)
        try "user first\ntopic readwrite #\n".write(toFile: dir + "/acl", atomically: true, encoding: .utf8)
        let file = scratchPath("admin-tokens")
        try "\(Self.token)\n".write(toFile: file, atomically: true, encoding: .utf8)
        try await withBroker({
            $0.metrics = .init(host: "127.0.0.1", port: 0)
            $0.adminTokenFile = file
            $0.passwordFile = dir + "/passwords"
            $0.aclFile = dir + "/acl"
            $0.listeners[0].allowAnonymous = false
        }) { broker, port in
            let http = broker.metricsAddress!.port!
            func publish(_ user: String, _ password: String) async throws -> Int32 {
                try await run(mosquittoPub, ["-p", "\(port)", "-u", user, "-P", password, "-t", "t/1", "-m", "x", "-q", "1"]).status
            }
            #expect(try await publish("second", "two") != 0)
            #expect(try await Self.http("POST", http, "/api/v1/users", body: #"{"username": "second", "password": "two"}"#).status == 201)
            #expect(try await publish("second", "two") == 0)
            #expect(try await Self.http("GET", http, "/api/v1/users").json as? [String] == ["first", "second"])
            #expect(try await Self.http("POST", http, "/api/v1/users", body: #"{"username": "second", "password": "deux"}"#).status == 200)
            #expect(try await publish("second", "two") != 0)
            #expect(try await publish("second", "deux") == 0)
            #expect(try await Self.http("DELETE", http, "/api/v1/users/second").status == 204)
            #expect(try await publish("second", "deux") != 0)
            #expect(try await Self.http("DELETE", http, "/api/v1/users/second").status == 404)
            #expect(try await Self.http("POST", http, "/api/v1/users", body: #"{"username": "a:b", "password": "x"}"#).status == 400)
            let onDisk = try PasswordFile(parsing: String(contentsOfFile: dir + "/passwords", encoding: .utf8), source: "test")
            #expect(onDisk.order == ["first"])

            #expect(try await Self.http("PUT", http, "/api/v1/acl", body: "user first\ntopic sideways #\n").status == 400)
            #expect(try await Self.http("GET", http, "/api/v1/acl").object["acl"] as? String == "user first\ntopic readwrite #\n")
            // POST /publish as admin_user ("admin"), whom the ACL names nowhere yet.
            #expect(try await Self.http("POST", http, "/api/v1/publish", body: #"{"topic": "news/x"}"#).status == 403)
            // The new ACL: first may only read (its publication is denied, counted); admin may write news/#.
            #expect(try await Self.http("PUT", http, "/api/v1/acl", body: "user first\ntopic read #\nuser admin\ntopic write news/#\n").status == 204)
            #expect(try String(contentsOfFile: dir + "/acl", encoding: .utf8) == "user first\ntopic read #\nuser admin\ntopic write news/#\n")
            #expect(try await Self.http("POST", http, "/api/v1/publish", body: #"{"topic": "news/x"}"#).status == 204)
            #expect(try await Self.http("POST", http, "/api/v1/publish", body: #"{"topic": "other/x"}"#).status == 403)
            let denied = broker.counters.publishDenied
            _ = try await run(mosquittoPub, ["-p", "\(port)", "-V", "5", "-u", "first", "-P", "one", "-t", "t/1", "-m", "x", "-q", "1"])
            try await waitFor(.seconds(10), "the publication to be denied by the new ACL") { broker.counters.publishDenied > denied ? true : nil }
        }
    }

    @Test("martlet admin against a running broker: clients as a table and as JSON, stats, kick, users, retained; a wrong token exits 1 with the API's error, an unreachable endpoint 2")
    func adminCommand() async throws {
        let dir = scratchPath("admin-cli")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try PasswordFile().rendered.write(toFile: dir + "/passwords", atomically: true, encoding: .utf8)
        let tokens = dir + "/tokens"
        try "\(Self.token)\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        try await withBroker({
            $0.metrics = .init(host: "127.0.0.1", port: 0)
            $0.adminTokenFile = tokens
            $0.passwordFile = dir + "/passwords"
        }) { broker, port in
            let url = "http://127.0.0.1:\(broker.metricsAddress!.port!)"
            func admin(_ args: [String], token: [String]? = nil) async throws -> ProcessResult {
                try await run(CLITests.martlet, ["admin"] + args + ["--url", url] + (token ?? ["--token-file", tokens]))
            }
            let watcher = try await MQTTClient.connect(.init(port: port, clientID: "watcher"))
            try await watcher.subscribe("w/#")
            let table = try await admin(["clients"])
            #expect(table.status == 0 && table.stdout.contains("watcher") && table.stdout.contains("connected") && table.stdout.contains("127.0.0.1:"), "\(table.stdout)\(table.stderr)")
            let json = try await admin(["clients", "--json"])
            let page = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            #expect(page?["total"] as? Int == 1)
            #expect(try await admin(["stats"]).stdout.contains("connections_accepted_total"))
            #expect(try await admin(["user", "add", "carol", "pw"]).status == 0)
            #expect(try await admin(["user", "list"]).stdout == "carol\n")
            #expect(try await admin(["retained"]).status == 0)
            let kicked = try await admin(["kick", "watcher"])
            #expect(kicked.status == 0 && kicked.stdout.contains("disconnected watcher"))
            await watcher.waitUntilClosed()
            let again = try await admin(["kick", "watcher"])
            #expect(again.status == 1 && again.stderr.contains("404"))
            let wrong = try await admin(["clients"], token: [])
            #expect(wrong.status != 0 && wrong.stderr.contains("MARTLET_ADMIN_TOKEN"))
            let unreachable = try await run(CLITests.martlet, ["admin", "clients", "--url", "http://127.0.0.1:1", "--token-file", tokens])
            #expect(unreachable.status == 2 && unreachable.stderr.contains("cannot reach"))
        }
    }

    @Test("The dashboard in headless Chromium: the page opens with the token, lists the test's mosquitto_sub client, draws its charts, and its Disconnect button drops the client (DISCONNECT 0x98) with no script error; a screenshot is taken")
    func dashboardInChromium() async throws {
        try await withAdmin { broker, port, http in
            let sub = try ChildProcess(mosquittoSub, ["-d", "-p", "\(port)", "-V", "5", "-i", "dash-client", "-t", "d/#", "-W", "60"])
            defer { sub.kill() }
            try await waitForSubscriptions(broker, 1)
            let page = try await Self.http("GET", http, "/", token: nil)
            #expect(page.status == 200 && page.body.contains("<title>Martlet</title>"))
            let devtools = randomTestPort()
            let profile = scratchPath("chromium-profile")
            let browser = try ChildProcess(BrowserTests.chromium, [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                "--user-data-dir=\(profile)", "--remote-debugging-port=\(devtools)", "about:blank",
            ])
            defer { browser.kill() }
            let screenshot = scratchPath("dashboard", suffix: ".png")
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("browser/dashboard.js").path
            let node = try ChildProcess("/usr/bin/env", [
                "NODE_PATH=/usr/share/nodejs", "node", script, "\(devtools)", "http://127.0.0.1:\(http)/#token=\(Self.token)", "dash-client", screenshot,
            ])
            let result = try await node.finish(timeout: .seconds(60))
            #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
            let seen = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
            #expect((seen["points"] as? [Int])?.count == 4, "four charts with points")
            #expect(seen["errors"] as? String == "" && (seen["consoleErrors"] as? [Any])?.isEmpty == true, "\(seen)")
            #expect((seen["status"] as? String)?.hasPrefix("live") == true)
            let out = try await sub.finish(timeout: .seconds(10))
            #expect(out.stdout.contains("Received DISCONNECT (152)") || out.stderr.contains("Received DISCONNECT (152)"))
            let png = try Data(contentsOf: URL(fileURLWithPath: screenshot))
            #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 10_000, "a screenshot of the page (\(png.count) bytes)")
            browser.kill(signal: SIGTERM)
            _ = try await browser.finish(timeout: .seconds(20))
        }
    }

    @Test("config/grafana-dashboard.json and config/prometheus-alerts.yaml use only metric names /metrics exports (with a bridge running)")
    func grafanaAndAlertsUseRealMetrics() async throws {
        let root = DaemonTests.root.appendingPathComponent("config")
        let dashboard = try String(contentsOf: root.appendingPathComponent("grafana-dashboard.json"), encoding: .utf8)
        #expect(try JSONSerialization.jsonObject(with: Data(dashboard.utf8)) is [String: Any])
        let alerts = try String(contentsOf: root.appendingPathComponent("prometheus-alerts.yaml"), encoding: .utf8)
        let used = Set((dashboard + alerts).matches(of: /martlet_[a-z_]+/).map { String($0.output) })
        #expect(used.count >= 20)
        try await withAdmin { broker, _, http in
            let manager = BridgeManager(broker: broker, logger: Logger(label: "test"))
            var bridge = BridgeConfiguration(name: "b", host: "127.0.0.1", port: randomTestPort())
            bridge.topics = [.init(filter: "#", direction: .out)]
            await manager.apply([bridge])
            let exported = try await waitFor(.seconds(10), "the bridge's metrics") { () -> Set<String>? in
                let text = try await run(debianPython, ["-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
                                                        "http://127.0.0.1:\(http)/metrics"]).stdout
                let names = Set(text.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { $0.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init) })
                return names.contains("martlet_bridge_connected") ? names : nil
            }
            for name in used.sorted() { #expect(exported.contains(name), "\(name) is not exported") }
            await manager.shutdown()
        }
    }

    @Test("metrics.tls: /metrics, the admin API and the dashboard over HTTPS (urllib verifying the dev CA, and martlet admin --cafile)")
    func overHTTPS() async throws {
        let certs = try await DevCertificates.make()
        let tokens = scratchPath("admin-tokens")
        try "\(Self.token)\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        try await withBroker({
            $0.metrics = .init(host: "127.0.0.1", port: 0, tls: certs.server())
            $0.adminTokenFile = tokens
            $0.listeners = [.init(host: "127.0.0.1", port: 0, tls: certs.server())]
        }) { broker, mqtt in
            let port = broker.metricsAddress!.port!
            var tlsClient = MQTTClientConfiguration(port: mqtt, clientID: "secure")
            tlsClient.tls = .client(caFile: certs.ca, serverName: "localhost")
            let secure = try await MQTTClient.connect(tlsClient)
            let fetch = """
                import ssl, sys, urllib.request
                context = ssl.create_default_context(cafile=sys.argv[2])
                request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[3]})
                print(urllib.request.urlopen(request, context=context, timeout=10).read().decode())
                """
            let clients = try await run(debianPython, ["-c", fetch, "https://localhost:\(port)/api/v1/clients", certs.ca, Self.token])
            let listed = (try? JSONSerialization.jsonObject(with: Data(clients.stdout.utf8)) as? [String: Any])?["items"] as? [[String: Any]] ?? []
            #expect(listed.first?["transport"] as? String == "tls" && listed.first?["tls_version"] as? String == "TLSv1.3", "\(clients.stdout) \(clients.stderr)")
            #expect((listed.first?["tls_cipher"] as? String)?.hasPrefix("TLS_") == true)
            try await secure.disconnect()
            let page = try await run(debianPython, ["-c", fetch, "https://localhost:\(port)/", certs.ca, Self.token])
            #expect(page.stdout.contains("<title>Martlet</title>"))
            let cli = try await run(CLITests.martlet, ["admin", "stats", "--url", "https://localhost:\(port)", "--cafile", certs.ca, "--token-file", tokens])
            #expect(cli.status == 0 && cli.stdout.contains("connections_accepted_total"), "\(cli.stderr)")
            let unverified = try await run(CLITests.martlet, ["admin", "stats", "--url", "https://localhost:\(port)", "--token-file", tokens])
            #expect(unverified.status == 2, "the dev CA is not a system CA: \(unverified.stderr)")
        }
    }
}
