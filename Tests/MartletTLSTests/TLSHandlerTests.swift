import Foundation
import MartletBenchSupport
import MartletTLS
import NIOCore
import NIOEmbedded
import Testing
import MartletTestSupport

/// Made once per process: blocking here happens a single time, before any TLS test runs.
let sharedCertificates = Result { try DevCertificates.makeBlocking() }

/// Collects what reaches the top of a pipeline.
final class Sink: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var received = ByteBuffer()
    var events: [TLSEvent] = []
    var errors: [any Error] = []
    var reads = 0
    var readCompletes = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        received.writeBuffer(&b)
        reads += 1
    }
    func channelReadComplete(context: ChannelHandlerContext) {
        readCompletes += 1
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSEvent { events.append(e) }
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        errors.append(error)
    }
}

/// A client and a server `EmbeddedChannel` wired back to back in memory.
final class Pair {
    let client = EmbeddedChannel()
    let server = EmbeddedChannel()
    let clientSink = Sink()
    let serverSink = Sink()
    let clientTLS: TLSHandler
    let serverTLS: TLSHandler

    init(client clientContext: TLSContext, server serverContext: TLSContext, serverName: String? = "localhost") throws {
        clientTLS = TLSHandler(context: clientContext, serverName: serverName, handshakeTimeout: .seconds(5))
        serverTLS = TLSHandler(context: serverContext, handshakeTimeout: .seconds(5))
        try client.pipeline.syncOperations.addHandlers([clientTLS, clientSink])
        try server.pipeline.syncOperations.addHandlers([serverTLS, serverSink])
    }

    func activate() throws {
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try pump()
    }

    /// Moves bytes both ways until neither side has anything left to send.
    func pump() throws {
        var moved = true
        while moved {
            moved = false
            while let b = try client.readOutbound(as: ByteBuffer.self) {
                moved = true
                if server.isActive { try server.writeInbound(b) }
            }
            while let b = try server.readOutbound(as: ByteBuffer.self) {
                moved = true
                if client.isActive { try client.writeInbound(b) }
            }
        }
    }
}

@Suite struct TLSHandlerTests {
    static var certs: Result<DevCertificates, any Error> { sharedCertificates }

    func contexts(minimum: TLSConfiguration.Version = .tls12, maximum: TLSConfiguration.Version? = nil,
                  mutual: Bool = false) throws -> (client: TLSContext, server: TLSContext) {
        let certs = try Self.certs.get()
        var server = TLSConfiguration.server(certificateChainFile: certs.serverCert, privateKeyFile: certs.serverKey)
        server.minimumVersion = minimum
        server.maximumVersion = maximum
        var client = TLSConfiguration.client(caFile: certs.ca, serverName: "localhost")
        client.maximumVersion = maximum
        if mutual {
            server.peerVerification = .required
            server.caFile = certs.ca
            client.certificateChainFile = certs.clientCert
            client.privateKeyFile = certs.clientKey
        }
        return (try TLSContext(configuration: client, role: .client), try TLSContext(configuration: server, role: .server))
    }

    @Test(arguments: [TLSConfiguration.Version.tls12, .tls13])
    func handshakeAndDataBothWays(_ version: TLSConfiguration.Version) throws {
        let (c, s) = try contexts(maximum: version)
        let pair = try Pair(client: c, server: s)
        // Written before the handshake: buffered, then sent once it completes.
        pair.client.writeAndFlush(ByteBuffer(string: "early"), promise: nil)
        try pair.activate()
        #expect(pair.clientSink.events == [.handshakeCompleted(applicationProtocol: "mqtt")])
        #expect(pair.serverSink.events == [.handshakeCompleted(applicationProtocol: "mqtt")])
        #expect(pair.clientTLS.protocolVersion == (version == .tls12 ? "TLSv1.2" : "TLSv1.3"))
        #expect(String(buffer: pair.serverSink.received) == "early")
        // 1 MiB each way, with a pattern so corruption or reordering would show.
        let mebibyte = ByteBuffer(bytes: (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) })
        pair.server.writeAndFlush(mebibyte, promise: nil)
        pair.client.writeAndFlush(mebibyte, promise: nil)
        try pair.pump()
        #expect(pair.clientSink.received == mebibyte)
        var atServer = pair.serverSink.received
        #expect(atServer.readString(length: 5) == "early")
        #expect(atServer == mebibyte)
        #expect(pair.clientSink.errors.isEmpty && pair.serverSink.errors.isEmpty)
        // Quiet again, neither side keeps the 16 KiB records' (or the handshake's) buffers.
        #expect(pair.serverTLS.bufferedCapacity == 0, "\(pair.serverTLS.bufferedCapacity)")
        #expect(pair.clientTLS.bufferedCapacity == 0, "\(pair.clientTLS.bufferedCapacity)")
    }

    @Test("a read burst of several socket reads reaches the handlers above as one plaintext read each and one channelReadComplete (they flush once per burst, as on plain TCP)")
    func oneReadCompletePerBurst() throws {
        let (c, s) = try contexts()
        let pair = try Pair(client: c, server: s)
        try pair.activate()
        pair.client.writeAndFlush(ByteBuffer(string: "one"), promise: nil)
        let first = try #require(try pair.client.readOutbound(as: ByteBuffer.self))
        pair.client.writeAndFlush(ByteBuffer(string: "two"), promise: nil)
        let second = try #require(try pair.client.readOutbound(as: ByteBuffer.self))
        let (readsBefore, completesBefore) = (pair.serverSink.reads, pair.serverSink.readCompletes)
        // Two socket reads and the end of the burst, as NIO delivers them.
        pair.server.pipeline.fireChannelRead(first)
        pair.server.pipeline.fireChannelRead(second)
        pair.server.pipeline.fireChannelReadComplete()
        #expect(pair.serverSink.reads - readsBefore == 2)
        #expect(pair.serverSink.readCompletes - completesBefore == 1)
        #expect(String(buffer: pair.serverSink.received).hasSuffix("onetwo"))
        // A burst that carried no plaintext (here: none at all) is not passed up as one.
        pair.server.pipeline.fireChannelReadComplete()
        #expect(pair.serverSink.readCompletes - completesBefore == 1)
    }

    @Test("TLSRecordProbe (the TLS microbenchmarks' harness) handshakes in memory and carries 64 B and 16 KiB records", arguments: [TLSConfiguration.Version.tls12, .tls13])
    func recordProbeCarriesRecords(_ version: TLSConfiguration.Version) throws {
        let (c, s) = try contexts(maximum: version)
        let probe = try TLSRecordProbe(client: c, server: s)
        #expect(try probe.send(ByteBuffer(repeating: 1, count: 64)) == 64)
        #expect(try probe.send(ByteBuffer(repeating: 2, count: 16_384)) == 16_384)
    }

    @Test func mutualTLSExposesTheClientCertificate() throws {
        let (c, s) = try contexts(mutual: true)
        let pair = try Pair(client: c, server: s)
        try pair.activate()
        let cert = try #require(pair.serverTLS.peerCertificate)
        #expect(cert.subjectCommonName == "martlet-client")
        #expect(cert.subjectAlternativeNames.contains("localhost"))
        #expect(cert.subjectAlternativeNames.contains("127.0.0.1"))
        #expect(cert.sha256Fingerprint.count == 64)
        #expect(!cert.serialNumber.isEmpty)
        #expect(pair.clientTLS.peerCertificate?.subjectCommonName == "martlet-server")
    }

    @Test func serverRequiringACertificateRefusesAClientWithout() throws {
        let (_, s) = try contexts(mutual: true)
        let certs = try Self.certs.get()
        let plain = try TLSContext(configuration: .client(caFile: certs.ca, serverName: "localhost"), role: .client)
        let pair = try Pair(client: plain, server: s)
        try pair.activate()
        #expect(pair.serverSink.errors.contains { if case TLSError.handshakeFailed = $0 { return true } else { return false } })
        #expect(pair.serverTLS.peerCertificate == nil)
    }

    @Test func clientRejectsAServerItDoesNotTrust() throws {
        let other = try DevCertificates.makeBlocking()  // a different CA
        let (_, s) = try contexts()
        let client = try TLSContext(configuration: .client(caFile: other.ca, serverName: "localhost"), role: .client)
        let pair = try Pair(client: client, server: s)
        try pair.activate()
        let error = try #require(pair.clientSink.errors.first as? TLSError)
        guard case .handshakeFailed(let message) = error else { Issue.record("\(error)"); return }
        #expect(message.contains("certificate verify failed"))
    }

    @Test("a server certificate that expired yesterday fails verification, saying so")
    func clientRejectsAnExpiredCertificate() throws {
        let certs = try Self.certs.get()
        // Signed by the same CA, valid until a day ago (openssl x509 -days -1).
        let dir = certs.directory
        let script = """
            set -e
            cd '\(dir)'
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \\
              -keyout expired.key -out expired.csr 2>/dev/null
            printf 'subjectAltName=DNS:localhost\\n' > expired.ext
            openssl x509 -req -in expired.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days -1 \\
              -extfile expired.ext -out expired.pem 2>/dev/null
            """
        let p = try SpawnedProcess("/bin/bash", ["-c", script], captureOutput: false)
        p.waitUntilExit()
        try #require(p.terminationStatus == 0)
        let server = try TLSContext(configuration: .server(certificateChainFile: dir + "/expired.pem", privateKeyFile: dir + "/expired.key"), role: .server)
        let client = try TLSContext(configuration: .client(caFile: certs.ca, serverName: "localhost"), role: .client)
        let pair = try Pair(client: client, server: server)
        try pair.activate()
        let error = try #require(pair.clientSink.errors.first as? TLSError)
        guard case .handshakeFailed(let message) = error else { Issue.record("\(error)"); return }
        #expect(message.contains("certificate has expired"), "\(message)")
    }

    @Test func clientChecksTheServerName() throws {
        let (c, s) = try contexts()
        let pair = try Pair(client: c, server: s, serverName: "broker.example.com")
        try pair.activate()
        #expect(pair.clientSink.errors.contains { if case TLSError.handshakeFailed = $0 { return true } else { return false } })
    }

    @Test func plaintextToATLSServerFailsTheHandshake() throws {
        let (_, s) = try contexts()
        let server = EmbeddedChannel()
        let sink = Sink()
        try server.pipeline.syncOperations.addHandlers([TLSHandler(context: s), sink])
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try server.writeInbound(ByteBuffer(bytes: [0x10, 0x0F, 0x00, 0x04] + Array("MQTT".utf8) + [0x04, 0x02, 0x00, 0x3C, 0x00, 0x03] + Array("abc".utf8)))
        #expect(sink.errors.contains { if case TLSError.handshakeFailed = $0 { return true } else { return false } })
        #expect(!server.isActive)
    }

    @Test func stalledHandshakeTimesOut() throws {
        let (_, s) = try contexts()
        let loop = EmbeddedEventLoop()
        let server = EmbeddedChannel(loop: loop)
        let sink = Sink()
        try server.pipeline.syncOperations.addHandlers([TLSHandler(context: s, handshakeTimeout: .milliseconds(300)), sink])
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        loop.advanceTime(by: .milliseconds(299))
        #expect(server.isActive)
        loop.advanceTime(by: .milliseconds(2))
        #expect(sink.errors.first as? TLSError == .handshakeTimeout)
        #expect(!server.isActive)
    }

    @Test func closeSendsCloseNotifyAndThePeerAnswers() throws {
        let (c, s) = try contexts()
        let pair = try Pair(client: c, server: s)
        try pair.activate()
        let closed = pair.client.close()
        try pair.pump()
        #expect(!pair.server.isActive)  // the server saw close_notify and closed
        try pair.pump()
        try closed.wait()
        #expect(pair.serverSink.errors.isEmpty)
    }

    @Test func serverCloseSendsCloseNotifyToo() throws {
        let (c, s) = try contexts()
        let pair = try Pair(client: c, server: s)
        try pair.activate()
        let closed = pair.server.close()
        try pair.pump()
        #expect(!pair.client.isActive)
        try pair.pump()
        try closed.wait()
        #expect(pair.clientSink.errors.isEmpty)
    }

    @Test func tcpCloseWithoutCloseNotifyIsReported() throws {
        let (c, s) = try contexts()
        let pair = try Pair(client: c, server: s)
        try pair.activate()
        pair.server.pipeline.fireChannelInactive()
        #expect(pair.serverSink.errors.first as? TLSError == .uncleanShutdown)
    }

    @Test func contextErrorsCarryOpenSSLsWords() throws {
        let certs = try Self.certs.get()
        #expect {
            _ = try TLSContext(configuration: .server(certificateChainFile: "/nonexistent.pem", privateKeyFile: certs.serverKey), role: .server)
        } throws: { error in
            guard case TLSError.configuration(let m) = error else { return false }
            return m.contains("/nonexistent.pem") && m.contains("No such file")
        }
        #expect {
            _ = try TLSContext(configuration: .server(certificateChainFile: certs.serverCert, privateKeyFile: certs.clientKey), role: .server)
        } throws: { error in
            guard case TLSError.configuration(let m) = error else { return false }
            return m.contains("mismatch") || m.contains("does not match")
        }
        var bad = TLSConfiguration.server(certificateChainFile: certs.serverCert, privateKeyFile: certs.serverKey)
        bad.cipherList = "NOT-A-CIPHER"
        #expect(throws: TLSError.self) { _ = try TLSContext(configuration: bad, role: .server) }
    }
}
