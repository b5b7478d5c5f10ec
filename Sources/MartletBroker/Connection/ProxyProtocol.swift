import NIOCore

/// The PROXY protocol header (HAProxy's, versions 1 and 2) a load balancer sends before the
/// client's bytes: who the client is, and (v2) what the proxy knows of its TLS session.
/// https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
struct ProxyHeader: Sendable, Equatable {
    /// The client's address; nil for a v1 `UNKNOWN` or a v2 `LOCAL` connection (the proxy's
    /// own, such as a health check): the peer address stands.
    var source: SocketAddress?
    /// v2 TLVs: PP2_TYPE_AUTHORITY (the TLS SNI or Host the client asked for) and the client
    /// certificate's CN (PP2_SUBTYPE_SSL_CN) when the proxy terminated TLS.
    var authority: String?
    var clientCommonName: String?
    /// PP2_TYPE_SSL said the client presented a certificate (on this connection or its TLS
    /// session) and the proxy verified it.
    var clientCertificateVerified = false

    /// The client certificate's CN, if the proxy verified that certificate: the identity a
    /// `use_identity_as_username` listener behind a TLS-terminating proxy uses.
    var verifiedClientCommonName: String? { clientCertificateVerified ? clientCommonName : nil }

    /// The longest header accepted: v1 is at most 107 bytes; a v2 header with more TLVs than
    /// this is refused rather than buffered.
    static let maximumLength = 4096

    enum Parse: Equatable {
        case needMore
        case header(ProxyHeader, length: Int)
        case invalid(String)
    }

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// Reads a header from the start of `buffer` (which is not consumed).
    static func parse(_ buffer: ByteBuffer) -> Parse {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return .needMore }
        if first == UInt8(ascii: "P") { return parseV1(buffer) }
        if first == v2Signature[0] { return parseV2(buffer) }
        return .invalid("no PROXY protocol header")
    }

    private static func parseV1(_ buffer: ByteBuffer) -> Parse {
        let bytes = buffer.readableBytesView.prefix(107)
        guard let cr = bytes.firstIndex(of: UInt8(ascii: "\r")) else {
            if bytes.count >= 107 { return .invalid("v1 header longer than 107 bytes") }
            // What arrived so far must still be a header's beginning.
            let prefix = Array("PROXY ".utf8).prefix(bytes.count)
            return Array(bytes.prefix(prefix.count)) == Array(prefix) ? .needMore : .invalid("not a v1 header")
        }
        guard bytes.index(after: cr) < bytes.endIndex else { return .needMore }
        guard bytes[bytes.index(after: cr)] == UInt8(ascii: "\n") else { return .invalid("v1 header not ended by CRLF") }
        let line = String(decoding: bytes[bytes.startIndex..<cr], as: UTF8.self)
        let length = bytes.distance(from: bytes.startIndex, to: cr) + 2
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.first == "PROXY", fields.count >= 2 else { return .invalid("not a v1 header") }
        switch fields[1] {
        case "UNKNOWN":
            return .header(ProxyHeader(), length: length)
        case "TCP4", "TCP6":
            guard fields.count == 6, let port = Int(fields[4]), (0...65_535).contains(port), Int(fields[5]) != nil,
                  !fields[4].hasPrefix("0") || fields[4] == "0" else {
                return .invalid("v1 \(fields[1]) header malformed")
            }
            let host = String(fields[2])
            guard host.contains(":") == (fields[1] == "TCP6"),
                  let source = try? SocketAddress(ipAddress: host, port: port) else {
                return .invalid("v1 source address \(host) is not a \(fields[1]) address")
            }
            return .header(ProxyHeader(source: source), length: length)
        default:
            return .invalid("v1 protocol \(fields[1]) unknown")
        }
    }

    private static func parseV2(_ buffer: ByteBuffer) -> Parse {
        let start = buffer.readerIndex
        let available = min(buffer.readableBytes, v2Signature.count)
        guard buffer.getBytes(at: start, length: available) == Array(v2Signature.prefix(available)) else {
            return .invalid("not a v2 header")
        }
        guard buffer.readableBytes >= 16,
              let versionCommand = buffer.getInteger(at: start + 12, as: UInt8.self),
              let family = buffer.getInteger(at: start + 13, as: UInt8.self),
              let bodyLength = buffer.getInteger(at: start + 14, as: UInt16.self) else { return .needMore }
        guard versionCommand >> 4 == 2 else { return .invalid("v2 header with version \(versionCommand >> 4)") }
        let length = 16 + Int(bodyLength)
        guard length <= maximumLength else { return .invalid("v2 header of \(length) bytes (more than \(maximumLength))") }
        guard buffer.readableBytes >= length, var body = buffer.getSlice(at: start + 16, length: Int(bodyLength)) else { return .needMore }
        var header = ProxyHeader()
        switch versionCommand & 0x0F {
        case 0x0:  // LOCAL: the proxy's own connection; addresses, if any, are ignored.
            return .header(header, length: length)
        case 0x1:
            break
        default:
            return .invalid("v2 command \(versionCommand & 0x0F) unknown")
        }
        switch family {
        case 0x11:  // TCP over IPv4: source, destination, source port, destination port.
            guard let address = body.readBytes(length: 4), body.readBytes(length: 4) != nil,
                  let port = body.readInteger(as: UInt16.self), body.readInteger(as: UInt16.self) != nil else {
                return .invalid("v2 TCP4 addresses truncated")
            }
            header.source = try? SocketAddress(ipAddress: address.map(String.init).joined(separator: "."), port: Int(port))
        case 0x21:  // TCP over IPv6.
            guard let address = body.readBytes(length: 16), body.readBytes(length: 16) != nil,
                  let port = body.readInteger(as: UInt16.self), body.readInteger(as: UInt16.self) != nil else {
                return .invalid("v2 TCP6 addresses truncated")
            }
            var groups: [String] = []
            for i in stride(from: 0, to: 16, by: 2) { groups.append(String(UInt16(address[i]) << 8 | UInt16(address[i + 1]), radix: 16)) }
            header.source = try? SocketAddress(ipAddress: groups.joined(separator: ":"), port: Int(port))
        case 0x00:  // UNSPEC: the peer address stands.
            return .header(header, length: length)
        default:
            return .invalid("v2 address family \(family) not TCP")
        }
        guard header.source != nil else { return .invalid("v2 source address unreadable") }
        // TLVs: type, two-byte length, value.
        while body.readableBytes > 0 {
            guard let type = body.readInteger(as: UInt8.self), let count = body.readInteger(as: UInt16.self),
                  var value = body.readSlice(length: Int(count)) else { return .invalid("v2 TLV truncated") }
            switch type {
            case 0x02:  // PP2_TYPE_AUTHORITY
                header.authority = value.readString(length: value.readableBytes)
            case 0x20:  // PP2_TYPE_SSL: client flags (1), verify (4), then sub-TLVs.
                guard let client = value.readInteger(as: UInt8.self), let verify = value.readInteger(as: UInt32.self) else {
                    return .invalid("v2 SSL TLV truncated")
                }
                // PP2_CLIENT_CERT_CONN (0x02) or PP2_CLIENT_CERT_SESS (0x04), and verify 0 (verified).
                header.clientCertificateVerified = client & 0x06 != 0 && verify == 0
                while value.readableBytes > 0 {
                    guard let sub = value.readInteger(as: UInt8.self), let n = value.readInteger(as: UInt16.self),
                          var subValue = value.readSlice(length: Int(n)) else { return .invalid("v2 SSL sub-TLV truncated") }
                    if sub == 0x22 { header.clientCommonName = subValue.readString(length: subValue.readableBytes) }  // PP2_SUBTYPE_SSL_CN
                }
            default:
                continue
            }
        }
        return .header(header, length: length)
    }
}

/// Who sent the connection, as the PROXY header said: told to the connection's handler once
/// the header is read (a user inbound event), before any MQTT byte.
struct ProxiedConnection: Sendable {
    var header: ProxyHeader
}

/// First in the pipeline of a `proxy_protocol: true` listener: reads the PROXY header (v1 or
/// v2), announces it (`ProxiedConnection`), hands on whatever followed it and leaves. A
/// connection that does not start with a valid header within `ProxyHeader.maximumLength`
/// bytes is closed (and counted); the connect timeout covers one that sends nothing.
final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var buffered: ByteBuffer?
    private var done = false
    private let refused: @Sendable (String) -> Void
    /// Also told the header (a WebSocket listener creates its connection handler only after
    /// the upgrade, so the announcement would find no one).
    private let announced: ((ProxyHeader) -> Void)?

    init(refused: @escaping @Sendable (String) -> Void, announced: ((ProxyHeader) -> Void)? = nil) {
        self.refused = refused
        self.announced = announced
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else {
            context.fireChannelRead(data)
            return
        }
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        switch ProxyHeader.parse(buffered!) {
        case .needMore:
            if buffered!.readableBytes > ProxyHeader.maximumLength { refuse(context, "PROXY header too long") }
        case .invalid(let why):
            refuse(context, why)
        case .header(let header, let length):
            done = true
            var rest = buffered!
            buffered = nil
            rest.moveReaderIndex(forwardBy: length)
            announced?(header)
            context.fireUserInboundEventTriggered(ProxiedConnection(header: header))
            if rest.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(rest))
                context.fireChannelReadComplete()
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    private func refuse(_ context: ChannelHandlerContext, _ why: String) {
        done = true
        buffered = nil
        refused(why)
        context.close(promise: nil)
    }
}
