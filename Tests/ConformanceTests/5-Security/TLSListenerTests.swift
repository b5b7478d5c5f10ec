import Foundation
import MartletBroker
import MartletMQTT
import MartletTLS
import NIOCore
import Testing
import MartletTestSupport

@Suite struct TLSListenerTests {

    /// A plain listener (index 0) and a TLS listener (index 1).
    func withTLSBroker(requireCertificate: Bool = false, connectTimeout: TimeAmount = .seconds(10),
                       _ body: (MQTTBroker, Int, Int, DevCertificates) async throws -> Void) async throws {
        let certs = try await DevCertificates.make()
        let tls = certs.server(requireClientCertificate: requireCertificate)
        try await withBroker({
            $0.listeners = [.init(host: "127.0.0.1", port: 0), .init(host: "127.0.0.1", port: 0, tls: tls)]
            $0.connectTimeout = connectTimeout
        }) { broker, _ in
            let ports = broker.localAddresses.map { $0.port! }
            try await body(broker, ports[0], ports[1], certs)
        }
    }

    @Test("MQTT over TLS: CONNECT/CONNACK, and messages cross between TLS and plain listeners")
    func connectAndRouteAcrossListeners() async throws {
        try await withTLSBroker { _, plain, tlsPort, certs in
            let (secure, ack) = try await RawClient.connected(port: tlsPort, clientID: "secure", tls: try certs.client())
            #expect(ack.reasonCode == .success)
            _ = try await secure.subscribe("t/#", qos: .atLeastOnce)
            let (open, _) = try await RawClient.connected(port: plain, clientID: "open")
            try await open.publish("t/1", "over the wire", qos: .atLeastOnce, id: 1)
            let m = try await secure.nextPublish()
            #expect(m.payloadString == "over the wire")
        }
    }

    @Test("plaintext MQTT sent to the TLS port is closed without affecting others")
    func plaintextToTLSPort() async throws {
        try await withTLSBroker { _, _, tlsPort, certs in
            let (good, _) = try await RawClient.connected(port: tlsPort, clientID: "good", tls: try certs.client())
            let bad = try await RawClient.connect(port: tlsPort)
            try await bad.send(h("10 0F 00 04 'MQTT' 04 02 00 3C 00 03 'abc'"))
            try await bad.expectClosed()
            try await good.send(h("C0 00"))
            #expect(try await good.read(count: 2) == h("D0 00"))
        }
    }

    @Test("a handshake that stalls is closed after the connect timeout")
    func stalledHandshake() async throws {
        try await withTLSBroker(connectTimeout: .milliseconds(300)) { _, _, tlsPort, _ in
            let silent = try await RawClient.connect(port: tlsPort)
            try await silent.expectClosed(timeout: .seconds(5))
        }
    }

    @Test("mutual TLS: a client without a certificate is refused, one with a certificate connects")
    func mutualTLS() async throws {
        try await withTLSBroker(requireCertificate: true) { _, _, tlsPort, certs in
            let anonymous = try await RawClient.connect(port: tlsPort, tls: try certs.client())
            // With TLS 1.3 the server may refuse before or after this write is attempted.
            try? await anonymous.send(.connect(ConnectPacket(clientIdentifier: "anon")))
            #expect(try await anonymous.expectClosed().isEmpty)
            let (ok, ack) = try await RawClient.connected(port: tlsPort, clientID: "cert", tls: try certs.client(withCertificate: true))
            #expect(ack.reasonCode == .success)
            await ok.close()
        }
    }

    @Test("certificate reload: new connections get the new certificate, existing ones keep working, broken files keep the old context")
    func reload() async throws {
        let dir = DevCertificates.freshDirectory()
        let first = try await DevCertificates.make(into: dir)
        let tls = first.server()
        let firstClient = try first.client()
        try await withBroker({ $0.listeners = [.init(host: "127.0.0.1", port: 0, tls: tls)] }) { broker, port in
            let (existing, _) = try await RawClient.connected(port: port, clientID: "existing", tls: firstClient)
            // New CA, new server certificate, written over the same files.
            let second = try await DevCertificates.make(into: dir)
            #expect(broker.reloadTLS().isEmpty)
            let secondClient = try second.client()
            let (fresh, ack) = try await RawClient.connected(port: port, clientID: "fresh", tls: secondClient)
            #expect(ack.reasonCode == .success)
            // A client that only trusts the old CA can no longer connect.
            let stale = try await RawClient.connect(port: port, tls: firstClient)
            try await stale.expectClosed()
            // The connection made before the reload is untouched.
            try await existing.send(h("C0 00"))
            #expect(try await existing.read(count: 2) == h("D0 00"))
            // A broken key file: reload fails, the running context stays.
            try "not a key".write(toFile: second.serverKey, atomically: true, encoding: .utf8)
            let errors = broker.reloadTLS()
            #expect(errors.count == 1)
            let (again, ack2) = try await RawClient.connected(port: port, clientID: "again", tls: secondClient)
            #expect(ack2.reasonCode == .success)
            await fresh.close()
            await again.close()
        }
    }

    static func sessionReused(_ c: RawClient) async throws -> Bool {
        let channel = c.channel
        return try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: TLSHandler.self).sessionReused
        }.get()
    }

    @Test("TLS session resumption: a repeat client connection with the same context skips the full handshake")
    func sessionResumption() async throws {
        try await withTLSBroker { _, _, tlsPort, certs in
            let context = try TLSContext.client(TLSConfiguration.client(caFile: certs.ca, serverName: "127.0.0.1"))
            #expect(try TLSContext.client(TLSConfiguration.client(caFile: certs.ca, serverName: "127.0.0.1")) === context)
            let (first, _) = try await RawClient.connected(port: tlsPort, clientID: "first", tls: context)
            #expect(try await Self.sessionReused(first) == false)
            await first.close()
            let (second, ack) = try await RawClient.connected(port: tlsPort, clientID: "second", tls: context)
            #expect(ack.reasonCode == .success)
            #expect(try await Self.sessionReused(second) == true)
            // A different context has no session to offer.
            let (third, _) = try await RawClient.connected(port: tlsPort, clientID: "third", tls: try certs.client())
            #expect(try await Self.sessionReused(third) == false)
        }
    }
}
