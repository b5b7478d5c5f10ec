@testable import MartletBroker
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

/// PROXY protocol headers (v1 text, v2 binary with TLVs) as HAProxy's specification writes
/// them, and the handler that strips them off a connection.
@Suite struct ProxyProtocolTests {
    func parse(_ bytes: [UInt8]) -> ProxyHeader.Parse { ProxyHeader.parse(ByteBuffer(bytes: bytes)) }
    func parse(_ text: String) -> ProxyHeader.Parse { parse(Array(text.utf8)) }

    @Test("v1: TCP4 and TCP6 give the source address, UNKNOWN keeps the peer's; a partial header waits; malformed ones are refused")
    func v1() throws {
        #expect(parse("PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883\r\nMQTT")
            == .header(ProxyHeader(source: try SocketAddress(ipAddress: "192.0.2.7", port: 56324)), length: 46))
        #expect(parse("PROXY TCP6 2001:db8::7 2001:db8::1 4000 1883\r\n")
            == .header(ProxyHeader(source: try SocketAddress(ipAddress: "2001:db8::7", port: 4000)), length: 46))
        #expect(parse("PROXY UNKNOWN\r\n") == .header(ProxyHeader(), length: 15))
        #expect(parse("PROXY TCP4 192.0.2.7 198.51.1") == .needMore)
        #expect(parse("PRO") == .needMore)
        #expect(parse("PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883\r") == .needMore)
        for bad in ["PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n", "PROXY TCP4 192.0.2.7 198.51.100.1 99999 1883\r\n",
                    "PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n", "PROXY TCP4 192.0.2.7\r\n", "GET / HTTP/1.1\r\n",
                    "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\rX"] {
            guard case .invalid = parse(bad) else {
                Issue.record("accepted: \(bad.debugDescription)")
                continue
            }
        }
        guard case .invalid = parse("PROXY " + String(repeating: "x", count: 120)) else {
            Issue.record("a v1 header over 107 bytes was not refused")
            return
        }
        // An MQTT CONNECT (0x10) is not a header.
        guard case .invalid = parse([0x10, 0x0C, 0x00, 0x04]) else { Issue.record("MQTT taken for a header"); return }
    }

    func v2(command: UInt8 = 0x21, family: UInt8, addresses: [UInt8], tlvs: [UInt8] = []) -> [UInt8] {
        let body = addresses + tlvs
        return ProxyHeader.v2Signature + [command, family, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }

    @Test("v2: TCP4 and TCP6 sources, LOCAL and UNSPEC keep the peer's, the authority (SNI) and client certificate CN TLVs are read")
    func v2() throws {
        let tcp4 = v2(family: 0x11, addresses: [192, 0, 2, 7, 198, 51, 100, 1, 0xDC, 0x04, 0x07, 0x5B])
        #expect(parse(tcp4 + [0x10]) == .header(ProxyHeader(source: try SocketAddress(ipAddress: "192.0.2.7", port: 56324)), length: 28))
        var v6 = [UInt8](repeating: 0, count: 36)
        v6[0] = 0x20; v6[1] = 0x01; v6[2] = 0x0D; v6[3] = 0xB8; v6[15] = 7
        v6[32] = 0x0F; v6[33] = 0xA0
        #expect(parse(v2(family: 0x21, addresses: v6)) == .header(ProxyHeader(source: try SocketAddress(ipAddress: "2001:db8::7", port: 4000)), length: 52))
        #expect(parse(v2(command: 0x20, family: 0x11, addresses: Array(tcp4[16...]))) == .header(ProxyHeader(), length: 28))
        #expect(parse(v2(family: 0x00, addresses: [])) == .header(ProxyHeader(), length: 16))
        let sni: [UInt8] = [0x02, 0x00, 0x0B] + Array("example.org".utf8)
        let cn = Array("device-7".utf8)
        let ssl: [UInt8] = [0x20, 0x00, UInt8(5 + 3 + cn.count), 0x07, 0, 0, 0, 0, 0x22, 0x00, UInt8(cn.count)] + cn
        let withTLVs = v2(family: 0x11, addresses: Array(tcp4[16...]), tlvs: sni + ssl + [0x04, 0x00, 0x01, 0xFF])
        guard case .header(let h, let length) = parse(withTLVs) else { Issue.record("TLVs not read"); return }
        #expect(h.authority == "example.org" && h.clientCommonName == "device-7" && length == withTLVs.count)
        #expect(h.verifiedClientCommonName == "device-7")
        // A certificate the proxy did not verify (verify != 0), or no certificate at all
        // (client flags without CERT_CONN / CERT_SESS): no identity.
        for (client, verify) in [(UInt8(0x07), UInt8(1)), (UInt8(0x01), UInt8(0))] {
            let unverified: [UInt8] = [0x20, 0x00, UInt8(5 + 3 + cn.count), client, 0, 0, 0, verify, 0x22, 0x00, UInt8(cn.count)] + cn
            guard case .header(let u, _) = parse(v2(family: 0x11, addresses: Array(tcp4[16...]), tlvs: unverified)) else {
                Issue.record("TLVs not read")
                return
            }
            #expect(u.clientCommonName == "device-7" && u.verifiedClientCommonName == nil)
        }
        #expect(parse(Array(tcp4.prefix(20))) == .needMore)
        #expect(parse(Array(ProxyHeader.v2Signature.prefix(5))) == .needMore)
        guard case .invalid = parse(v2(command: 0x31, family: 0x11, addresses: Array(tcp4[16...]))) else { Issue.record("version 3 accepted"); return }
        guard case .invalid = parse(v2(family: 0x12, addresses: Array(tcp4[16...]))) else { Issue.record("UDP accepted"); return }
        guard case .invalid = parse(v2(family: 0x11, addresses: [1, 2, 3])) else { Issue.record("truncated addresses accepted"); return }
        guard case .invalid = parse(v2(family: 0x11, addresses: Array(tcp4[16...]), tlvs: [0x02, 0x00, 0x09, 0x41])) else {
            Issue.record("truncated TLV accepted")
            return
        }
        guard case .invalid = parse(ProxyHeader.v2Signature + [0x21, 0x11, 0xFF, 0xFF]) else { Issue.record("a 64 KiB header accepted"); return }
    }

    @Test("The handler strips a header that arrives in pieces, announces it, and passes on the bytes after it; bad input closes the connection")
    func handler() throws {
        let channel = EmbeddedChannel()
        let refusals = Mutex<[String]>([])
        try channel.pipeline.syncOperations.addHandler(ProxyProtocolHandler { why in refusals.withLock { $0.append(why) } })
        let events = EventRecorder()
        try channel.pipeline.syncOperations.addHandler(events)
        let header = Array("PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883\r\n".utf8)
        try channel.writeInbound(ByteBuffer(bytes: header.prefix(10)))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        try channel.writeInbound(ByteBuffer(bytes: header.suffix(from: 10) + [0x10, 0x02]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: [0x10, 0x02]))
        let source = try SocketAddress(ipAddress: "192.0.2.7", port: 56324)
        #expect(events.sources == [source])
        try channel.writeInbound(ByteBuffer(bytes: [0x00, 0x04]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: [0x00, 0x04]))
        #expect(refusals.withLock { $0 }.isEmpty)

        let bad = EmbeddedChannel()
        try bad.pipeline.syncOperations.addHandler(ProxyProtocolHandler { why in refusals.withLock { $0.append(why) } })
        try bad.writeInbound(ByteBuffer(bytes: [0x10, 0x0C, 0x00, 0x04]))
        #expect(!bad.isActive)
        #expect(refusals.withLock { $0 } == ["no PROXY protocol header"])
    }

    @Test("trusted_proxies entries: addresses and CIDR networks, v4 and v6, IPv4-mapped peers; bad entries are nil")
    func addressRanges() throws {
        let net = try #require(AddressRange("10.0.0.0/8"))
        #expect(net.contains(try SocketAddress(ipAddress: "10.200.1.2", port: 1)))
        #expect(!net.contains(try SocketAddress(ipAddress: "11.0.0.1", port: 1)))
        #expect(net.contains(try SocketAddress(ipAddress: "::ffff:10.1.1.1", port: 1)))
        let one = try #require(AddressRange("127.0.0.1"))
        #expect(one.contains(try SocketAddress(ipAddress: "127.0.0.1", port: 9)))
        #expect(!one.contains(try SocketAddress(ipAddress: "127.0.0.2", port: 9)))
        let v6 = try #require(AddressRange("fd00::/8"))
        #expect(v6.contains(try SocketAddress(ipAddress: "fd12::1", port: 1)))
        #expect(!v6.contains(try SocketAddress(ipAddress: "fe80::1", port: 1)))
        #expect(!v6.contains(try SocketAddress(ipAddress: "10.0.0.1", port: 1)))
        #expect(AddressRange("10.0.0.0/33") == nil && AddressRange("proxy.local") == nil && AddressRange("10.0.0.0/x") == nil)
        #expect(try #require(AddressRange("0.0.0.0/0")).contains(try SocketAddress(ipAddress: "8.8.8.8", port: 1)))
    }
}

/// Records the PROXY headers announced on a channel.
final class EventRecorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var sources: [SocketAddress] = []

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let proxied = event as? ProxiedConnection, let source = proxied.header.source { sources.append(source) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }
}
