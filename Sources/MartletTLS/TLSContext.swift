import CMartletOpenSSL
import NIOConcurrencyHelpers

/// An immutable OpenSSL `SSL_CTX` built from a `TLSConfiguration`.
///
/// Reloading certificates builds a new context for new connections; connections made
/// from an older one keep it alive (each `SSL` holds a reference) and are left alone.
public final class TLSContext: Sendable {
    public enum Role: Sendable { case server, client }

    /// Safe to share: after `init` the context is never mutated, and OpenSSL allows
    /// concurrent `SSL_new` on one `SSL_CTX`.
    nonisolated(unsafe) let pointer: OpaquePointer
    public let role: Role
    public let configuration: TLSConfiguration
    /// ALPN protocols in wire format (length-prefixed, then a 0 terminator for the select
    /// callback), owned by the context. Safe to share: written once in `init`, then only read.
    nonisolated(unsafe) private let alpnStorage: UnsafeMutableBufferPointer<UInt8>
    private let alpnLength: Int
    /// Client role: the last session (ticket) each server name gave us, offered on the next
    /// connection so a repeat short-lived client skips the full handshake.
    let sessions: TLSSessionStore?

    /// Client contexts by configuration, so every connection made with the same settings
    /// shares one context and so one session store (bounded; a changed file on disk needs a
    /// changed configuration or a new process to be read again).
    private static let clientContexts = NIOLockedValueBox<[TLSConfiguration: TLSContext]>([:])

    /// A client context for `configuration`, reused across calls.
    public static func client(_ configuration: TLSConfiguration) throws(TLSError) -> TLSContext {
        if let known = clientContexts.withLockedValue({ $0[configuration] }) { return known }
        let context = try TLSContext(configuration: configuration, role: .client)
        clientContexts.withLockedValue { cache in
            if cache.count >= 16 { cache.removeAll() }
            cache[configuration] = context
        }
        return context
    }

    public init(configuration: TLSConfiguration, role: Role) throws(TLSError) {
        _ = OpenSSL.initialized
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(role == .server ? TLS_server_method() : TLS_client_method()) else {
            throw .configuration(TLSError.openSSLErrors("SSL_CTX_new"))
        }
        var wire: [UInt8] = []
        for proto in configuration.applicationProtocols where !proto.isEmpty && proto.utf8.count < 256 {
            wire.append(UInt8(proto.utf8.count))
            wire += proto.utf8
        }
        let alpn = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: wire.count + 1)
        _ = alpn.initialize(from: wire + [0])
        self.pointer = ctx
        self.role = role
        self.configuration = configuration
        self.alpnStorage = alpn
        self.alpnLength = wire.count
        self.sessions = role == .client && configuration.sessionTickets ? TLSSessionStore() : nil
        try configure()
    }

    deinit {
        SSL_CTX_free(pointer)
        alpnStorage.deallocate()
    }

    private func configure() throws(TLSError) {
        let c = configuration
        let ctx = pointer
        _ = CMartletOpenSSL_SSL_CTX_set_mode(ctx, Int(SSL_MODE_RELEASE_BUFFERS))
        _ = SSL_CTX_set_options(ctx, CMartletOpenSSL_SSL_OP_NO_COMPRESSION() | CMartletOpenSSL_SSL_OP_NO_RENEGOTIATION())
        func version(_ v: TLSConfiguration.Version) -> Int32 { v == .tls12 ? TLS1_2_VERSION : TLS1_3_VERSION }
        guard CMartletOpenSSL_SSL_CTX_set_min_proto_version(ctx, version(c.minimumVersion)) == 1 else {
            throw .configuration(TLSError.openSSLErrors("minimum version"))
        }
        if let max = c.maximumVersion, CMartletOpenSSL_SSL_CTX_set_max_proto_version(ctx, version(max)) != 1 {
            throw .configuration(TLSError.openSSLErrors("maximum version"))
        }
        if let list = c.cipherList, SSL_CTX_set_cipher_list(ctx, list) != 1 {
            throw .configuration(TLSError.openSSLErrors("cipher list \"\(list)\""))
        }
        if let suites = c.cipherSuites, SSL_CTX_set_ciphersuites(ctx, suites) != 1 {
            throw .configuration(TLSError.openSSLErrors("TLS 1.3 cipher suites \"\(suites)\""))
        }
        if let chain = c.certificateChainFile {
            guard SSL_CTX_use_certificate_chain_file(ctx, chain) == 1 else {
                throw .configuration(TLSError.openSSLErrors("certificate chain \(chain)"))
            }
        } else if role == .server {
            throw .configuration("a server needs a certificate chain file")
        }
        if let key = c.privateKeyFile {
            guard SSL_CTX_use_PrivateKey_file(ctx, key, CMartletOpenSSL_SSL_FILETYPE_PEM()) == 1 else {
                throw .configuration(TLSError.openSSLErrors("private key \(key)"))
            }
            guard SSL_CTX_check_private_key(ctx) == 1 else {
                throw .configuration(TLSError.openSSLErrors("private key \(key) does not match the certificate"))
            }
        } else if c.certificateChainFile != nil {
            throw .configuration("a certificate chain needs its private key file")
        }
        if c.caFile != nil || c.caDirectory != nil {
            guard SSL_CTX_load_verify_locations(ctx, c.caFile, c.caDirectory) == 1 else {
                throw .configuration(TLSError.openSSLErrors("CA \(c.caFile ?? c.caDirectory ?? "")"))
            }
        } else if c.peerVerification != .none {
            guard SSL_CTX_set_default_verify_paths(ctx) == 1 else {
                throw .configuration(TLSError.openSSLErrors("system CA store"))
            }
        }
        switch c.peerVerification {
        case .none: SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        case .optional: SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        case .required: SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        if role == .server {
            // Resumption with client certificates needs a session id context.
            let sid = Array("martlet".utf8)
            _ = SSL_CTX_set_session_id_context(ctx, sid, UInt32(sid.count))
            if !c.sessionTickets {
                _ = SSL_CTX_set_options(ctx, CMartletOpenSSL_SSL_OP_NO_TICKET())
                _ = CMartletOpenSSL_SSL_CTX_set_num_tickets(ctx, 0)
            }
            if alpnLength > 0 {
                SSL_CTX_set_alpn_select_cb(ctx, selectApplicationProtocol, UnsafeMutableRawPointer(alpnStorage.baseAddress))
            }
        } else {
            if alpnLength > 0 {
                guard SSL_CTX_set_alpn_protos(ctx, alpnStorage.baseAddress, UInt32(alpnLength)) == 0 else {
                    throw .configuration(TLSError.openSSLErrors("ALPN"))
                }
            }
            if let sessions {
                // Sessions go to our store through the callback, not OpenSSL's internal cache.
                _ = CMartletOpenSSL_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE))
                // The store lives as long as the context (a stored property), so unretained is safe.
                SSL_CTX_set_ex_data(ctx, 0, Unmanaged.passUnretained(sessions).toOpaque())
                SSL_CTX_sess_set_new_cb(ctx, storeNewSession)
            }
        }
    }
}

/// Server ALPN: the first of our protocols that the client offers; none in common → no ALPN.
/// The argument is the context's wire-format list, alive as long as the context.
private let selectApplicationProtocol: @convention(c) (
    OpaquePointer?, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<UInt8>?,
    UnsafePointer<UInt8>?, UInt32, UnsafeMutableRawPointer?
) -> Int32 = { _, out, outLength, offered, offeredLength, arg in
    guard let arg, let offered, let out, let outLength else { return SSL_TLSEXT_ERR_NOACK }
    // Walked in place (this runs in every handshake that offers ALPN: no arrays).
    let ours = arg.assumingMemoryBound(to: UInt8.self)
    let offeredCount = Int(offeredLength)
    var j = 0
    // Our list's length is not passed; it ends at the 0 terminator the context stored.
    while ours[j] != 0 {
        let n = Int(ours[j])
        var i = 0
        while i < offeredCount {
            let m = Int(offered[i])
            guard i + 1 + m <= offeredCount else { break }
            if m == n, memcmp(offered + i + 1, ours + j + 1, n) == 0 {
                out.pointee = UnsafePointer(ours + j + 1)
                outLength.pointee = UInt8(n)
                return SSL_TLSEXT_ERR_OK
            }
            i += 1 + m
        }
        j += 1 + n
    }
    return SSL_TLSEXT_ERR_NOACK
}

/// The newest session each server name issued to a client context.
final class TLSSessionStore: Sendable {
    /// An `SSL_SESSION` reference we own. Sendable: a session is immutable once issued and
    /// reference-counted, and OpenSSL lets several `SSL` objects use one concurrently.
    struct Session: @unchecked Sendable {
        let pointer: OpaquePointer
    }
    private let sessions = NIOLockedValueBox<[String: Session]>([:])

    /// Takes ownership of `session`'s reference, releasing the one it replaces.
    func store(_ session: OpaquePointer, for serverName: String) {
        let old = sessions.withLockedValue { $0.updateValue(Session(pointer: session), forKey: serverName) }
        if let old { SSL_SESSION_free(old.pointer) }
    }

    /// Offers the stored session (if any) on `ssl`; `SSL_set_session` takes its own reference.
    func offer(to ssl: OpaquePointer, serverName: String) {
        sessions.withLockedValue { sessions in
            if let s = sessions[serverName] { _ = SSL_set_session(ssl, s.pointer) }
        }
    }

    deinit {
        for s in sessions.withLockedValue({ $0.values }) { SSL_SESSION_free(s.pointer) }
    }
}

/// OpenSSL calls this when a server issues a session (a TLS 1.3 ticket arrives after the
/// handshake); returning 1 keeps the reference, which the store then owns.
private let storeNewSession: @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32 = { ssl, session in
    guard let ssl, let session, let ctx = SSL_get_SSL_CTX(ssl), let raw = SSL_CTX_get_ex_data(ctx, 0) else { return 0 }
    let store = Unmanaged<TLSSessionStore>.fromOpaque(raw).takeUnretainedValue()
    let name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name).map { String(cString: $0) } ?? ""
    store.store(session, for: name)
    return 1
}
