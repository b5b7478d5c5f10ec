/// What a TLS endpoint needs: its identity, how it checks the peer, and which protocol
/// versions and ciphers it allows. Plain values; `TLSContext` turns them into OpenSSL state.
public struct TLSConfiguration: Sendable, Hashable {
    public enum Version: Sendable, Hashable {
        case tls12, tls13
    }

    public enum PeerVerification: Sendable, Hashable {
        /// Do not ask for or check a peer certificate.
        case none
        /// Ask for one and check it if sent (servers: clients may connect without one).
        case optional
        /// Require a valid peer certificate.
        case required
    }

    /// PEM certificate chain (leaf first). Required for servers, optional for clients (mutual TLS).
    public var certificateChainFile: String?
    /// PEM private key matching the leaf certificate.
    public var privateKeyFile: String?
    /// PEM file of CA certificates used to verify the peer.
    public var caFile: String?
    /// Directory of hashed CA certificates used to verify the peer.
    public var caDirectory: String?
    public var peerVerification: PeerVerification
    public var minimumVersion: Version = .tls12
    public var maximumVersion: Version?
    /// OpenSSL cipher list for TLS 1.2 (nil = OpenSSL's default).
    public var cipherList: String?
    /// TLS 1.3 cipher suites (nil = OpenSSL's default).
    public var cipherSuites: String?
    /// ALPN protocols, most preferred first.
    public var applicationProtocols: [String] = ["mqtt"]
    /// Clients: the name sent with SNI and checked against the server certificate.
    public var serverName: String?
    /// Servers: issue session tickets so repeat clients can resume without a full handshake.
    public var sessionTickets = true

    public init(peerVerification: PeerVerification) {
        self.peerVerification = peerVerification
    }

    /// A server with its certificate and key; clients are not asked for certificates.
    public static func server(certificateChainFile: String, privateKeyFile: String) -> TLSConfiguration {
        var c = TLSConfiguration(peerVerification: .none)
        c.certificateChainFile = certificateChainFile
        c.privateKeyFile = privateKeyFile
        return c
    }

    /// A client that verifies the server against `caFile` (or the system store when nil).
    public static func client(caFile: String?, serverName: String?) -> TLSConfiguration {
        var c = TLSConfiguration(peerVerification: .required)
        c.caFile = caFile
        c.serverName = serverName
        return c
    }
}
