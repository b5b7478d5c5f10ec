import CMartletOpenSSL

/// A TLS failure, with OpenSSL's own words where OpenSSL produced it.
public enum TLSError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Building a context failed (unreadable file, key not matching the certificate, bad cipher list…).
    case configuration(String)
    /// The handshake failed (bad certificate, no shared cipher, not TLS at all…).
    case handshakeFailed(String)
    /// The handshake did not complete in time.
    case handshakeTimeout
    /// The peer closed TCP without sending close_notify.
    case uncleanShutdown
    /// Reading or writing records failed.
    case ioFailed(String)

    public var description: String {
        switch self {
        case .configuration(let s): return "TLS configuration: \(s)"
        case .handshakeFailed(let s): return "TLS handshake failed: \(s)"
        case .handshakeTimeout: return "TLS handshake timed out"
        case .uncleanShutdown: return "TLS peer closed the connection without close_notify"
        case .ioFailed(let s): return "TLS I/O failed: \(s)"
        }
    }

    /// Drains OpenSSL's error queue into one readable line.
    static func openSSLErrors(_ context: String) -> String {
        var parts: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            parts.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.isEmpty ? context : "\(context): \(parts.joined(separator: "; "))"
    }
}
