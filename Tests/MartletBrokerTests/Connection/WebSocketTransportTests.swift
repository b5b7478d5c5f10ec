@testable import MartletBroker
import NIOCore
import NIOHTTP1
import Testing

/// The WebSocket upgrade checks and the forwarded client address, fed good and bad requests.
@Suite struct WebSocketTransportTests {
    func head(_ uri: String, _ headers: [(String, String)]) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: HTTPHeaders(headers))
    }

    func head(_ headers: [(String, String)]) -> HTTPRequestHead { head("/mqtt", headers) }

    @Test("Upgrade checks: path (query ignored), Origin only when sent, the mqtt subprotocol from a list in any case")
    func checks() {
        let origins = ["https://good.example"]
        #expect(WebSocketTransport.check(head("/mqtt?x=1", [("Sec-WebSocket-Protocol", "chat, MQTT")]), path: "/mqtt", allowedOrigins: origins)
            == .upgrade(subprotocol: "mqtt"))
        #expect(WebSocketTransport.check(head([("Sec-WebSocket-Protocol", "mqttv3.1")]), path: "/mqtt", allowedOrigins: [])
            == .upgrade(subprotocol: "mqttv3.1"))
        guard case .refuse(.notFound, _) = WebSocketTransport.check(head("/", [("Sec-WebSocket-Protocol", "mqtt")]), path: "/mqtt", allowedOrigins: []),
              case .refuse(.badRequest, _) = WebSocketTransport.check(head([("Sec-WebSocket-Protocol", "chat")]), path: "/mqtt", allowedOrigins: []),
              case .refuse(.forbidden, _) = WebSocketTransport.check(
                  head([("Sec-WebSocket-Protocol", "mqtt"), ("Origin", "https://evil.example")]), path: "/mqtt", allowedOrigins: origins)
        else {
            Issue.record("a bad upgrade request was accepted")
            return
        }
    }

    @Test("X-Forwarded-For and Forwarded (IPv4, bracketed IPv6 with a port, quoted) from a trusted peer only; garbage gives nothing")
    func forwardedClient() throws {
        let proxy = try SocketAddress(ipAddress: "10.0.0.5", port: 40000)
        let stranger = try SocketAddress(ipAddress: "192.0.2.1", port: 40000)
        let trusted = [try #require(AddressRange("10.0.0.0/8"))]
        func client(_ headers: [(String, String)], peer: SocketAddress, trusted: [AddressRange]) -> String? {
            WebSocketTransport.forwardedClient(head(headers), peer: peer, trusted: trusted)?.ipAddress
        }
        #expect(client([("X-Forwarded-For", "203.0.113.9, 10.0.0.2")], peer: proxy, trusted: trusted) == "203.0.113.9")
        #expect(client([("Forwarded", "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.2")], peer: proxy, trusted: trusted) == "2001:db8::7")
        #expect(client([("Forwarded", "proto=https;for=198.51.100.4:80")], peer: proxy, trusted: trusted) == "198.51.100.4")
        #expect(client([("X-Forwarded-For", "203.0.113.9")], peer: stranger, trusted: trusted) == nil)
        #expect(client([("X-Forwarded-For", "203.0.113.9")], peer: proxy, trusted: []) == nil)
        #expect(client([("X-Forwarded-For", "not-an-address")], peer: proxy, trusted: trusted) == nil)
        #expect(client([("Forwarded", "for=unknown")], peer: proxy, trusted: trusted) == nil)
        #expect(client([], peer: proxy, trusted: trusted) == nil)
    }
}
