import Foundation
import Logging
import MartletBroker
import MartletTLS
import Testing
import MartletTestSupport

func makeCertificates(_ dir: String) async throws {
    _ = try await DevCertificates.make(into: dir)
}

/// mosquitto_pub / mosquitto_sub over TLS, and certificate reload on SIGHUP.
@Suite struct TLSInteropTests {
    @Test func mosquittoClientsOverTLS() async throws {
        let dir = scratchPath("martlet-tls")
        try await makeCertificates(dir)
        let tls = TLSConfiguration.server(certificateChainFile: dir + "/server.pem", privateKeyFile: dir + "/server.key")
        try await withBroker({ $0.listeners = [.init(host: "127.0.0.1", port: 0, tls: tls)] }) { broker, port in
            let tlsArgs = ["-h", "127.0.0.1", "-p", "\(port)", "--cafile", dir + "/ca.pem"]
            let sub = try ChildProcess(mosquittoSub, tlsArgs + ["-t", "secure/#", "-v", "-C", "2", "-W", "10", "-q", "1"])
            try await waitForSubscriptions(broker, 1)
            for (i, version) in ["mqttv311", "mqttv5"].enumerated() {
                let r = try await run(mosquittoPub, tlsArgs + ["-V", version, "-q", "1", "-t", "secure/\(i)", "-m", "tls \(version)"])
                #expect(r.status == 0, "\(r.stderr)")
            }
            let result = try await sub.finish()
            #expect(result.stdout == "secure/0 tls mqttv311\nsecure/1 tls mqttv5\n", "\(result.stderr)")
            // A client that does not trust the broker's CA is refused by its own verification.
            let other = scratchPath("martlet-tls")
            try await makeCertificates(other)
            let refused = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "--cafile", other + "/ca.pem", "-t", "x", "-m", "y"])
            #expect(refused.status != 0)
        }
    }

    /// A broker with one TLS listener on port 0; mutual TLS when `cafile` is given.
    func withTLSBroker(_ dir: String, requireCertificateFrom cafile: String? = nil, _ body: (Int) async throws -> Void) async throws {
        var tls = TLSConfiguration.server(certificateChainFile: dir + "/server.pem", privateKeyFile: dir + "/server.key")
        if let cafile {
            tls.caFile = cafile
            tls.peerVerification = .required
        }
        try await withBroker({ $0.listeners = [.init(host: "127.0.0.1", port: 0, tls: tls)] }) { _, port in
            try await body(port)
        }
    }

    @Test func opensslSClientVersions() async throws {
        let dir = scratchPath("martlet-tls")
        try await makeCertificates(dir)
        try await withTLSBroker(dir) { port in
            for flag in ["-tls1_2", "-tls1_3"] {
                let r = try await run("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)", flag, "-CAfile", dir + "/ca.pem",
                                                            "-verify_return_error", "-verify_ip", "127.0.0.1", "-alpn", "mqtt"])
                #expect(r.status == 0, "\(flag): \(r.stderr)")
                #expect(r.stdout.contains("Verify return code: 0 (ok)"), "\(r.stdout)")
                #expect(r.stdout.contains("ALPN protocol: mqtt"), "\(r.stdout)")
                #expect(r.stdout.contains(flag == "-tls1_2" ? "Protocol  : TLSv1.2" : "TLSv1.3"), "\(r.stdout)")
            }
            // ALPN: ours is picked from further down the client's list; with none in common the
            // handshake goes on without ALPN (not failed with a no_application_protocol alert).
            for (offer, expected) in [("h2,x-other,mqtt", "ALPN protocol: mqtt"), ("h2,http/1.1", "No ALPN negotiated")] {
                let r = try await run("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", dir + "/ca.pem",
                                                            "-verify_return_error", "-alpn", offer])
                #expect(r.status == 0, "\(offer): \(r.stderr)")
                #expect(r.stdout.contains(expected), "\(offer): \(r.stdout)")
            }
            // TLS 1.1 is below the minimum (1.2) and is refused.
            let old = try await run("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-tls1_1", "-CAfile", dir + "/ca.pem", "-brief"])
            #expect(old.status != 0)
        }
    }

    @Test("a TLS 1.2 renegotiation request is answered at once with the no_renegotiation alert (the client is not left waiting for it)")
    func renegotiationRefusedAtOnce() async throws {
        let dir = scratchPath("martlet-tls")
        try await makeCertificates(dir)
        try await withTLSBroker(dir) { port in
            // `R` asks s_client to renegotiate; stdin stays open 3 s more, so without the alert
            // s_client waits in the handshake until `timeout` ends it (status 124).
            let command = "(printf 'R\\n'; sleep 3) | timeout 8 /usr/bin/openssl s_client -connect 127.0.0.1:\(port) -tls1_2 "
                + "-CAfile \(dir)/ca.pem -msg"
            let r = try await run("/bin/bash", ["-c", command], timeout: .seconds(15))
            #expect(r.stderr.contains("RENEGOTIATING"), "\(r.stderr)")
            #expect(r.stdout.contains("warning no_renegotiation"), "\(r.stdout.suffix(2000))")
            #expect(r.status != 124, "s_client hung in the renegotiation")
        }
    }

    @Test func mutualTLSWithMosquittoClients() async throws {
        let dir = scratchPath("martlet-tls")
        let other = scratchPath("martlet-tls")
        try await makeCertificates(dir)
        try await makeCertificates(other)
        try await withTLSBroker(dir, requireCertificateFrom: dir + "/ca.pem") { port in
            let base = ["-h", "127.0.0.1", "-p", "\(port)", "--cafile", dir + "/ca.pem", "-t", "m", "-m", "x", "-q", "1"]
            let ok = try await run(mosquittoPub, base + ["--cert", dir + "/client.pem", "--key", dir + "/client.key"])
            #expect(ok.status == 0, "\(ok.stderr)")
            let none = try await run(mosquittoPub, base)
            #expect(none.status != 0)
            let foreign = try await run(mosquittoPub, base + ["--cert", other + "/client.pem", "--key", other + "/client.key"])
            #expect(foreign.status != 0)
        }
    }

    @Test func pahoOverTLS() async throws {
        let dir = scratchPath("martlet-tls")
        try await makeCertificates(dir)
        try await withTLSBroker(dir) { port in
            let script = """
                import ssl, sys, threading
                import paho.mqtt.client as mqtt
                done = threading.Event()
                got = []
                def on_message(c, u, m):
                    got.append(m.payload); done.set()
                def on_connect(c, u, f, rc):
                    c.subscribe("paho/tls", 1)
                def on_subscribe(c, u, mid, q):
                    c.publish("paho/tls", b"secret", qos=1)
                c = mqtt.Client(client_id="paho-tls")
                c.tls_set(ca_certs=sys.argv[2])
                c.on_connect, c.on_message, c.on_subscribe = on_connect, on_message, on_subscribe
                c.connect("127.0.0.1", int(sys.argv[1]), 30)
                c.loop_start()
                ok = done.wait(10)
                c.disconnect(); c.loop_stop()
                print("OK" if ok and got == [b"secret"] else "FAIL %r" % got)
                """
            let r = try await run(debianPython, ["-c", script, "\(port)", dir + "/ca.pem"], timeout: .seconds(20))
            #expect(r.stdout == "OK\n", "\(r.stdout) \(r.stderr)")
        }
    }

    @Test func sighupReloadsCertificates() async throws {
        let dir = scratchPath("martlet-reload")
        try await makeCertificates(dir)
        let oldCA = dir + "/old-ca.pem"
        try FileManager.default.copyItem(atPath: dir + "/ca.pem", toPath: oldCA)
        let port = randomTestPort()
        let daemon = try ChildProcess(DaemonTests.martletd, ["--tls-port", "\(port)", "--cert", dir + "/server.pem", "--key", dir + "/server.key", "--log-level", "info"])
        defer { daemon.kill() }
        try await waitUntilListening(UInt16(port))
        let before = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "--cafile", oldCA, "-t", "r", "-m", "1"])
        #expect(before.status == 0, "\(before.stderr)")
        try await makeCertificates(dir)  // new CA and server certificate over the same files
        daemon.kill(signal: SIGHUP)
        var after = ProcessResult(status: -1, stdout: "", stderr: "")
        for _ in 0..<50 {  // the reload is asynchronous: retry briefly
            after = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "--cafile", dir + "/ca.pem", "-t", "r", "-m", "2"])
            if after.status == 0 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(after.status == 0, "\(after.stderr)")
        let stale = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "--cafile", oldCA, "-t", "r", "-m", "3"])
        #expect(stale.status != 0)
        daemon.kill(signal: SIGTERM)
        let r = try await daemon.finish(timeout: .seconds(5))
        #expect(r.status == 0)
        #expect(r.stderr.contains("TLS context reloaded"), "\(r.stderr)")
    }
}
