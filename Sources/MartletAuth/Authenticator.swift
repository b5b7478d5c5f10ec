import MartletTLS
import NIOConcurrencyHelpers

/// Checks CONNECT credentials against the password file, remembering recent successes so a
/// client that reconnects often (a short-lived publisher) does not pay PBKDF2 every time.
/// The memory holds a SHA-512 of a per-process random key and the password, never the password.
public final class Authenticator: Sendable {
    public let passwords: PasswordFile?
    private let key = Crypto.randomBytes(32)
    private let verified = NIOLockedValueBox<[String: [UInt8]]>([:])
    private static let cacheLimit = 10_000

    public init(passwords: PasswordFile?) {
        self.passwords = passwords
    }

    public enum Outcome: Equatable, Sendable {
        case accepted
        /// No password file and anonymous not allowed, or no user name given.
        case notAuthorized
        case badCredentials
    }

    /// What can be decided without deriving a key: nil means `verify` must run (PBKDF2,
    /// milliseconds of CPU: off the event loop).
    public func quickCheck(username: String?, password: [UInt8]?, allowAnonymous: Bool, identityIsUsername: Bool) -> Outcome? {
        guard let username else { return allowAnonymous ? .accepted : .notAuthorized }
        // A name taken from the client certificate is already proven by the TLS handshake.
        if identityIsUsername { return .accepted }
        guard passwords != nil else { return allowAnonymous ? .accepted : .notAuthorized }
        guard let password else { return .badCredentials }
        if let known = verified.withLockedValue({ $0[username] }),
           Crypto.constantTimeEquals(known, fingerprint(username, password)) {
            return .accepted
        }
        return nil
    }

    /// Derives the key and compares it with the password file (a user not in it costs the
    /// same); a success is remembered, so the next `quickCheck` of the same pair accepts.
    public func verify(username: String, password: [UInt8]) -> Outcome {
        guard let passwords, passwords.verify(user: username, password: password) else { return .badCredentials }
        let fingerprint = fingerprint(username, password)
        verified.withLockedValue { cache in
            if cache.count >= Self.cacheLimit { cache.removeAll() }
            cache[username] = fingerprint
        }
        return .accepted
    }

    private func fingerprint(_ username: String, _ password: [UInt8]) -> [UInt8] {
        Crypto.sha512(key + Array(username.utf8) + [0] + password)
    }
}
