import CMartletOpenSSL

/// Process-wide OpenSSL facts. The TLS handler and contexts build on this.
public enum OpenSSL {
    /// Initialises libssl once (idempotent in OpenSSL 3; the old init macros are not importable).
    public static let initialized: Bool = OPENSSL_init_ssl(0, nil) == 1

    /// The runtime library version, e.g. "OpenSSL 3.0.19 …".
    public static var versionString: String {
        String(cString: OpenSSL_version(OPENSSL_VERSION))
    }

    /// The runtime version number (0xMNN00PP0L).
    public static var versionNumber: UInt {
        UInt(CMartletOpenSSL_OpenSSL_version_num())
    }
}
