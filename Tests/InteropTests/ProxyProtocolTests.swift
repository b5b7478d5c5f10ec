import Foundation
import MartletTestSupport
import Testing

/// martletd behind Debian's HAProxy, which sends a PROXY protocol header (v1 with
/// `send-proxy`, v2 with `send-proxy-v2`) on every connection it forwards.
@Suite(.serialized) struct HAProxyTests {
    struct Setup {
        var broker: ChildProcess
        var haproxy: ChildProcess
        var v1: Int
        var v2: Int
        var direct: Int
    }

    /// An HAProxy configuration: TCP mode, short timeouts, then `listens`.
    static func haproxyConfig(_ listens: String) -> String {
        """
            global
              maxconn 100
            defaults
              mode tcp
              timeout connect 5s
              timeout client 30s
              timeout server 30s

            """ + listens
    }

    /// martletd with a `proxy_protocol` listener (and `trusted_proxies` as given), HAProxy
    /// forwarding one port with v1 headers and another with v2 headers to it.
    func start(trusted: [String]) async throws -> Setup {
        let dir = scratchPath("haproxy")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (direct, v1, v2) = (randomTestPort(), randomTestPort(), randomTestPort())
        var yaml = "listeners:\n  - host: 127.0.0.1\n    port: \(direct)\n    proxy_protocol: true\nlog_level: debug\n"
        if !trusted.isEmpty { yaml += "trusted_proxies: [\(trusted.joined(separator: ", "))]\n" }
        try yaml.write(toFile: dir + "/martlet.yaml", atomically: true, encoding: .utf8)
        let broker = try ChildProcess(DaemonTests.martletd, ["--config", dir + "/martlet.yaml"])
        try await waitUntilListening(UInt16(direct))
        try Self.haproxyConfig("""
            listen v1
              bind 127.0.0.1:\(v1)
              server martlet 127.0.0.1:\(direct) send-proxy
            listen v2
              bind 127.0.0.1:\(v2)
              server martlet 127.0.0.1:\(direct) send-proxy-v2

            """).write(toFile: dir + "/haproxy.cfg", atomically: true, encoding: .utf8)
        let haproxy = try ChildProcess("/usr/sbin/haproxy", ["-db", "-f", dir + "/haproxy.cfg"])
        try await waitUntilListening(UInt16(v1))
        try await waitUntilListening(UInt16(v2))
        return Setup(broker: broker, haproxy: haproxy, v1: v1, v2: v2, direct: direct)
    }

    /// A raw MQTT CONNECT from a chosen local port; returns the CONNACK bytes (empty if closed).
    func connect(_ port: Int, from sourcePort: Int) async throws -> String {
        let script = """
            import socket, sys
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(sys.argv[2]))); s.connect(("127.0.0.1", int(sys.argv[1]))); s.settimeout(5)
            s.sendall(bytes([0x10, 0x0F, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 3]) + b"pxy")
            try:
                print(s.recv(4).hex())
            except Exception:
                print("")
            """
        return try await run(debianPython, ["-c", script, "\(port)", "\(sourcePort)"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("Through HAProxy (v1 and v2 headers) clients connect and publish; the client's own address and port are the ones martletd logs, not HAProxy's")
    func clientAddressComesFromTheHeader() async throws {
        let s = try await start(trusted: ["127.0.0.1"])
        defer { s.haproxy.kill(); s.broker.kill() }
        let sources = [(s.v1, randomTestPort()), (s.v2, randomTestPort())]
        for (port, source) in sources {
            #expect(try await connect(port, from: source) == "20020000", "CONNACK through HAProxy")
        }
        // Retained, so the subscriber gets it whenever it subscribes.
        let pub = try await run(mosquittoPub, ["-p", "\(s.v1)", "-t", "proxied", "-m", "through haproxy", "-r", "-q", "1"])
        #expect(pub.status == 0, "\(pub.stderr)")
        let sub = try await run(mosquittoSub, ["-p", "\(s.v2)", "-t", "proxied", "-C", "1", "-W", "10"], timeout: .seconds(15))
        #expect(sub.stdout == "through haproxy\n", "\(sub.stderr)")
        s.broker.kill(signal: SIGTERM)
        let log = try await s.broker.finish().stderr
        let headers = log.split(separator: "\n").filter { $0.contains("PROXY header") }
        #expect(headers.count >= 4, "\(log)")
        // The raw clients' own source ports (v1 and v2) are the remote address of their lines;
        // HAProxy's connection to martletd is the `proxy` one.
        for (_, source) in sources {
            #expect(headers.contains { $0.contains("remote=[IPv4]127.0.0.1:\(source) ") && !$0.contains("proxy=[IPv4]127.0.0.1/127.0.0.1:\(source)") },
                    "no PROXY header line for the client on port \(source): \(headers)")
        }
    }

    @Test("A proxy_protocol listener closes a connection without a header or with a garbage one (from a trusted peer), and only that connection, and any connection from a peer outside trusted_proxies")
    func refusals() async throws {
        var s = try await start(trusted: ["127.0.0.0/8"])
        #expect(try await connect(s.direct, from: randomTestPort()) == "", "no header: closed without CONNACK")
        // Garbage headers (v1 and v2) close their own connection; a client that came through
        // HAProxy stays connected.
        let garbage = """
            import socket, sys
            def conn(port):
                s = socket.create_connection(("127.0.0.1", port), timeout=5); return s
            def closed(s):
                try: return s.recv(4) == b""
                except Exception: return False
            by = conn(int(sys.argv[1])); by.sendall(bytes([0x10, 0x0E, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 2]) + b"by")
            print("bystander connack", by.recv(4).hex())
            v1 = conn(int(sys.argv[2])); v1.sendall(b"PROXY TCP4 999.1.1.1 nonsense 1 2\\r\\n"); print("v1 garbage closed", closed(v1))
            v2 = conn(int(sys.argv[2])); v2.sendall(bytes([0x0D, 0x0A, 0x0D, 0x0A, 0, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0, 3, 1, 2, 3]) + b"junk" * 10)
            print("v2 garbage closed", closed(v2))
            by.sendall(bytes([0xC0, 0])); print("bystander pingresp", by.recv(2).hex())
            """
        let g = try await run(debianPython, ["-c", garbage, "\(s.v2)", "\(s.direct)"])
        #expect(g.stdout == "bystander connack 20020000\nv1 garbage closed True\nv2 garbage closed True\nbystander pingresp d000\n", "\(g.stderr)")
        s.haproxy.kill()
        s.broker.kill(signal: SIGTERM)
        var log = try await s.broker.finish().stderr
        #expect(log.contains("connection without a valid PROXY header closed") && log.contains("no PROXY protocol header"), "\(log)")

        s = try await start(trusted: ["10.9.9.9", "192.168.0.0/16"])
        defer { s.haproxy.kill(); s.broker.kill() }
        #expect(try await connect(s.v2, from: randomTestPort()) == "", "HAProxy at 127.0.0.1 is not trusted: closed")
        s.broker.kill(signal: SIGTERM)
        log = try await s.broker.finish().stderr
        #expect(log.contains("PROXY protocol connection from a peer not in trusted_proxies"), "\(log)")
        #expect(!log.contains("PROXY header "), "nothing was read from an untrusted peer: \(log)")
    }

    @Test("Behind HAProxy terminating TLS (verify optional, send-proxy-v2-ssl-cn), use_identity_as_username takes the CN of the client certificate HAProxy verified: the ACL's user for that CN may publish and subscribe; a client without a certificate is refused (bad user name or password)")
    func identityFromTheProxy() async throws {
        let certs = try await DevCertificates.make()
        let dir = scratchPath("haproxy-tls")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (direct, tls) = (randomTestPort(), randomTestPort())
        try "user martlet-client\ntopic readwrite cn/#\n".write(toFile: dir + "/acl", atomically: true, encoding: .utf8)
        try """
            listeners:
              - {host: 127.0.0.1, port: \(direct), proxy_protocol: true, use_identity_as_username: true, allow_anonymous: false}
            trusted_proxies: [127.0.0.1]
            acl_file: \(dir)/acl
            log_level: debug

            """.write(toFile: dir + "/martlet.yaml", atomically: true, encoding: .utf8)
        let broker = try ChildProcess(DaemonTests.martletd, ["--config", dir + "/martlet.yaml"])
        defer { broker.kill() }
        try await waitUntilListening(UInt16(direct))
        // HAProxy wants the certificate and its key in one file.
        try (String(contentsOfFile: certs.serverCert, encoding: .utf8) + String(contentsOfFile: certs.serverKey, encoding: .utf8))
            .write(toFile: dir + "/haproxy.pem", atomically: true, encoding: .utf8)
        try Self.haproxyConfig("""
            listen tls
              bind 127.0.0.1:\(tls) ssl crt \(dir)/haproxy.pem ca-file \(certs.ca) verify optional
              server martlet 127.0.0.1:\(direct) send-proxy-v2-ssl-cn

            """).write(toFile: dir + "/haproxy.cfg", atomically: true, encoding: .utf8)
        let haproxy = try ChildProcess("/usr/sbin/haproxy", ["-db", "-f", dir + "/haproxy.cfg"])
        defer { haproxy.kill() }
        try await waitUntilListening(UInt16(tls))

        let withCertificate = ["-h", "127.0.0.1", "-p", "\(tls)", "--cafile", certs.ca, "--cert", certs.clientCert, "--key", certs.clientKey]
        // Retained, so the subscriber gets it whenever it subscribes.
        let pub = try await run(mosquittoPub, withCertificate + ["-t", "cn/x", "-m", "as martlet-client", "-r", "-q", "1"])
        #expect(pub.status == 0, "\(pub.stderr)")
        let sub = try await run(mosquittoSub, withCertificate + ["-t", "cn/x", "-C", "1", "-W", "10"], timeout: .seconds(15))
        #expect(sub.stdout == "as martlet-client\n", "\(sub.stderr)")

        let anonymous = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(tls)", "--cafile", certs.ca, "-t", "cn/x", "-m", "no"])
        #expect(anonymous.status != 0 && anonymous.stderr.contains("bad user name or password"), "\(anonymous.stderr)")

        broker.kill(signal: SIGTERM)
        let log = try await broker.finish().stderr
        #expect(log.contains("client_cert_verified=true client_cn=martlet-client"), "\(log)")
        #expect(log.contains("no verified client certificate identity"), "\(log)")
    }
}

