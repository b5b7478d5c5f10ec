import CMartletOpenSSL
import NIOCore

/// The outcome of one OpenSSL call: WANT_READ / WANT_WRITE are `incomplete`, never errors.
package enum TLSOperationResult<T> {
    case complete(T)
    case incomplete
    case failed(TLSError)
}

/// One `SSL*` over a BIO of our own: bytes from the network go in with `receive`, records
/// to send come out of `takeOutput`. No I/O of its own, so it runs anywhere, in tests
/// back to back with another one.
///
/// The BIO (`ConnectionBIO`) lets OpenSSL read ciphertext straight from the buffer the
/// socket read into, and appends what OpenSSL writes to a buffer that `takeOutput` hands
/// over whole. Compared with a pair of memory BIOs that is one copy less each way, and an
/// idle connection holds no buffer at all (a memory BIO keeps the largest capacity it ever
/// needed).
package final class TLSConnection {
    private let ssl: OpaquePointer
    /// Ciphertext received and not yet read by OpenSSL; nil once all of it has been.
    private var input: ByteBuffer?
    /// While an OpenSSL call runs: the received ciphertext the BIO reads from, and how much
    /// of it OpenSSL has taken.
    fileprivate var inputBytes: UnsafeRawBufferPointer?
    fileprivate var inputConsumed = 0
    /// Ciphertext OpenSSL wrote and `takeOutput` has not taken yet.
    fileprivate var output: ByteBuffer?
    fileprivate let allocator = ByteBufferAllocator()
    let context: TLSContext

    package init(context: TLSContext, serverName: String?) throws(TLSError) {
        ERR_clear_error()
        guard let ssl = SSL_new(context.pointer) else { throw .configuration(TLSError.openSSLErrors("SSL_new")) }
        guard let bio = BIO_new(ConnectionBIO.method) else {
            SSL_free(ssl)
            throw .configuration(TLSError.openSSLErrors("BIO_new"))
        }
        // One BIO both ways; SSL_free frees it.
        SSL_set_bio(ssl, bio, bio)
        _ = CMartletOpenSSL_SSL_set_mode(ssl, Int(SSL_MODE_RELEASE_BUFFERS))
        if context.role == .server {
            SSL_set_accept_state(ssl)
        } else {
            context.sessions?.offer(to: ssl, serverName: serverName ?? "")
            if let serverName {
                _ = CMartletOpenSSL_SSL_set_tlsext_host_name(ssl, serverName)
                if context.configuration.peerVerification != .none {
                    // Check the certificate is for this host (or IP address).
                    let param = SSL_get0_param(ssl)
                    if serverName.contains(where: { $0 == ":" }) || serverName.allSatisfy({ $0.isNumber || $0 == "." }) {
                        _ = X509_VERIFY_PARAM_set1_ip_asc(param, serverName)
                    } else {
                        _ = X509_VERIFY_PARAM_set1_host(param, serverName, 0)
                    }
                }
            }
            SSL_set_connect_state(ssl)
        }
        self.ssl = ssl
        self.context = context
        // Not retained: the BIO lives inside `ssl`, which this object frees in deinit.
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        SSL_free(ssl)  // frees the BIO
    }

    /// Bytes of buffer this connection holds between OpenSSL calls: ciphertext received and
    /// not yet read, and ciphertext produced and not yet taken (none once quiet).
    var bufferedCapacity: Int {
        (input?.capacity ?? 0) + (output?.capacity ?? 0)
    }

    /// Feeds ciphertext that arrived from the network; OpenSSL reads it during the next call.
    package func receive(_ buffer: ByteBuffer) {
        if input == nil {
            input = buffer
        } else {
            input!.writeImmutableBuffer(buffer)
        }
    }

    /// Ciphertext OpenSSL produced that must go to the network, if any.
    package func takeOutput() -> ByteBuffer? {
        defer { output = nil }
        return output
    }

    /// Runs one OpenSSL call with the received ciphertext available to the BIO, then drops
    /// what OpenSSL took (OpenSSL keeps a partial record in its own buffer, so usually all).
    private func withInput<R>(_ call: () -> R) -> R {
        guard let buffer = input else { return call() }
        let (result, consumed) = buffer.withUnsafeReadableBytes { bytes in
            inputBytes = bytes
            inputConsumed = 0
            defer { inputBytes = nil }
            let result = call()
            return (result, inputConsumed)
        }
        if consumed >= buffer.readableBytes {
            input = nil
        } else {
            input!.moveReaderIndex(forwardBy: consumed)
        }
        return result
    }

    package func handshake() -> TLSOperationResult<Void> {
        ERR_clear_error()
        let rc = withInput { SSL_do_handshake(ssl) }
        if rc == 1 { return .complete(()) }
        return classify(rc, "handshake") { .handshakeFailed($0) }
    }

    /// Appends one record's worth of plaintext (at most 16 KiB) to `buffer`.
    package func read(into buffer: inout ByteBuffer) -> TLSOperationResult<Int> {
        ERR_clear_error()
        var result: TLSOperationResult<Int> = .incomplete
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 16_384) { out in
            var n = 0
            let rc = withInput { SSL_read_ex(ssl, out.baseAddress, out.count, &n) }
            if rc == 1 {
                result = .complete(n)
                return n
            }
            result = classify(rc, "read") { .ioFailed($0) }
            return 0
        }
        return result
    }

    /// Encrypts all of `buffer` (the output buffer is unbounded, so a write completes whole).
    package func write(_ buffer: ByteBuffer) -> TLSOperationResult<Void> {
        ERR_clear_error()
        return buffer.withUnsafeReadableBytes { bytes -> TLSOperationResult<Void> in
            var offset = 0
            while offset < bytes.count {
                var n = 0
                let rc = SSL_write_ex(ssl, bytes.baseAddress! + offset, bytes.count - offset, &n)
                if rc != 1 { return classify(Int32(rc), "write") { .ioFailed($0) } }
                offset += n
            }
            return .complete(())
        }
    }

    /// Sends close_notify. `complete` once the peer's close_notify has also been seen.
    func shutdown() -> TLSOperationResult<Void> {
        ERR_clear_error()
        let rc = withInput { SSL_shutdown(ssl) }
        switch rc {
        case 1: return .complete(())
        case 0: return .incomplete
        default: return classify(rc, "shutdown") { .ioFailed($0) }
        }
    }

    /// Whether the peer has sent close_notify.
    var receivedCloseNotify: Bool {
        SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN != 0
    }

    var negotiatedApplicationProtocol: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    var negotiatedVersion: String {
        String(cString: SSL_get_version(ssl))
    }

    var sessionReused: Bool { SSL_session_reused(ssl) == 1 }

    /// The negotiated cipher suite (OpenSSL's name), once the handshake is done.
    var cipherName: String? {
        guard let cipher = SSL_get_current_cipher(ssl), let name = SSL_CIPHER_get_name(cipher) else { return nil }
        return String(cString: name)
    }

    /// Details of the verified peer certificate, if the peer sent one.
    var peerCertificate: PeerCertificate? {
        guard let cert = CMartletOpenSSL_SSL_get_peer_certificate(ssl) else { return nil }
        defer { X509_free(cert) }
        return PeerCertificate(cert)
    }

    private func classify<T>(_ rc: Int32, _ what: String, _ error: (String) -> TLSError) -> TLSOperationResult<T> {
        let code = SSL_get_error(ssl, rc)
        switch code {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .incomplete
        case SSL_ERROR_ZERO_RETURN:
            return .failed(.ioFailed("peer sent close_notify"))
        default:
            var message = TLSError.openSSLErrors(what)
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK {
                message += " (certificate verification: \(String(cString: X509_verify_cert_error_string(verify))))"
            }
            return .failed(error(message))
        }
    }
}

/// The BIO method `TLSConnection` gives OpenSSL: reads come from the connection's received
/// ciphertext, writes go to its output buffer; an empty input means "retry" (TCP EOF is
/// the handler's to see), flushing does nothing.
private enum ConnectionBIO {
    // Created once and never changed afterwards; OpenSSL only reads a BIO_METHOD.
    nonisolated(unsafe) static let method: OpaquePointer = {
        let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "martlet connection")!
        _ = BIO_meth_set_create(method) { bio in
            BIO_set_init(bio, 1)
            return 1
        }
        _ = BIO_meth_set_destroy(method) { _ in 1 }
        _ = BIO_meth_set_read_ex(method) { bio, data, length, readBytes in
            BIO_clear_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY)
            let connection = Unmanaged<TLSConnection>.fromOpaque(BIO_get_data(bio)).takeUnretainedValue()
            guard let bytes = connection.inputBytes, connection.inputConsumed < bytes.count, length > 0, let data else {
                BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY)
                readBytes?.pointee = 0
                return 0
            }
            let n = min(length, bytes.count - connection.inputConsumed)
            UnsafeMutableRawPointer(data).copyMemory(from: bytes.baseAddress! + connection.inputConsumed, byteCount: n)
            connection.inputConsumed += n
            readBytes?.pointee = n
            return 1
        }
        _ = BIO_meth_set_write_ex(method) { bio, data, length, written in
            BIO_clear_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY)
            let connection = Unmanaged<TLSConnection>.fromOpaque(BIO_get_data(bio)).takeUnretainedValue()
            let bytes = UnsafeRawBufferPointer(start: data, count: length)
            if connection.output == nil {
                connection.output = connection.allocator.buffer(capacity: length)
            }
            connection.output!.writeBytes(bytes)
            written?.pointee = length
            return 1
        }
        _ = BIO_meth_set_ctrl(method) { _, command, _, _ in
            command == BIO_CTRL_FLUSH ? 1 : 0
        }
        return method
    }()
}

/// What the broker may want to know about a client certificate.
public struct PeerCertificate: Sendable, Hashable {
    public var subjectCommonName: String?
    public var subjectAlternativeNames: [String]
    public var serialNumber: String
    /// SHA-256 over the DER encoding, lower-case hex.
    public var sha256Fingerprint: String

    init(_ cert: OpaquePointer) {
        var cn: String?
        if let name = X509_get_subject_name(cert) {
            let index = X509_NAME_get_index_by_NID(name, NID_commonName, -1)
            if index >= 0, let entry = X509_NAME_get_entry(name, index), let data = X509_NAME_ENTRY_get_data(entry) {
                var utf8: UnsafeMutablePointer<UInt8>?
                let n = ASN1_STRING_to_UTF8(&utf8, data)
                if n >= 0, let utf8 {
                    cn = String(decoding: UnsafeBufferPointer(start: utf8, count: Int(n)), as: UTF8.self)
                    CMartletOpenSSL_OPENSSL_free(utf8)
                }
            }
        }
        subjectCommonName = cn
        var sans: [String] = []
        if let raw = X509_get_ext_d2i(cert, NID_subject_alt_name, nil, nil) {
            let names = OpaquePointer(raw)
            for i in 0..<CMartletOpenSSL_sk_GENERAL_NAME_num(names) {
                guard let general = CMartletOpenSSL_sk_GENERAL_NAME_value(names, i) else { continue }
                var type: Int32 = 0
                guard let value = GENERAL_NAME_get0_value(general, &type) else { continue }
                let string = value.assumingMemoryBound(to: ASN1_STRING.self)
                if type == GEN_DNS || type == GEN_EMAIL || type == GEN_URI {
                    sans.append(String(cString: ASN1_STRING_get0_data(string)))
                } else if type == GEN_IPADD {
                    let bytes = UnsafeBufferPointer(start: ASN1_STRING_get0_data(string), count: Int(ASN1_STRING_length(string)))
                    sans.append(bytes.count == 4 ? bytes.map(String.init).joined(separator: ".") : bytes.map { String($0, radix: 16) }.joined(separator: ":"))
                }
            }
            CMartletOpenSSL_GENERAL_NAMES_free(names)
        }
        subjectAlternativeNames = sans
        var serial = ""
        if let asn1 = X509_get_serialNumber(cert), let bn = ASN1_INTEGER_to_BN(asn1, nil) {
            if let hex = BN_bn2hex(bn) {
                serial = String(cString: hex)
                CMartletOpenSSL_OPENSSL_free(hex)
            }
            BN_free(bn)
        }
        serialNumber = serial
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        X509_digest(cert, EVP_sha256(), &digest, &length)
        sha256Fingerprint = digest.prefix(Int(length)).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
