import MartletTLS
import NIOConcurrencyHelpers

/// A password file in mosquitto's format, so files made by `mosquitto_passwd` work here and
/// files made by `martlet passwd` work there: one `user:$7$ITERATIONS$SALT$HASH` per line,
/// PBKDF2-HMAC-SHA512 with a 12-byte random salt and a 64-byte hash, both base64.
/// Blank lines and lines starting with `#` are ignored.
public struct PasswordFile: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        public var iterations: Int
        public var salt: [UInt8]
        public var hash: [UInt8]
    }

    public private(set) var entries: [String: Entry] = [:]
    /// The user names in file order, so rewriting the file keeps it.
    public private(set) var order: [String] = []

    /// `martlet passwd`'s default: slow enough to hurt a stolen file, fast enough (about
    /// 10 ms here) not to stall an event loop on CONNECT.
    public static let defaultIterations = 20_000

    public init() {}

    public init(parsing text: String, source: String) throws(ConfigurationError) {
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw ConfigurationError(source: source, key: "password_file", line: n + 1, message: "expected user:hash")
            }
            let user = String(line[..<colon])
            let fields = line[line.index(after: colon)...].split(separator: "$", omittingEmptySubsequences: false)
            // "", "7", iterations, salt, hash
            guard fields.count == 5, fields[0].isEmpty, fields[1] == "7", let iterations = Int(fields[2]), iterations > 0,
                  let salt = Crypto.base64Decode(String(fields[3])), let hash = Crypto.base64Decode(String(fields[4])), !hash.isEmpty
            else {
                throw ConfigurationError(source: source, key: "password_file", line: n + 1,
                                         message: "user \"\(user)\": expected a $7$ (PBKDF2-SHA512) hash as made by martlet passwd or mosquitto_passwd")
            }
            if entries[user] == nil { order.append(user) }
            entries[user] = Entry(iterations: iterations, salt: salt, hash: hash)
        }
    }

    /// Adds or replaces `user` with a fresh salt.
    public mutating func set(user: String, password: String, iterations: Int = defaultIterations) {
        let salt = Crypto.randomBytes(12)
        let hash = Crypto.pbkdf2SHA512(password: Array(password.utf8), salt: salt, iterations: iterations)
        if entries[user] == nil { order.append(user) }
        entries[user] = Entry(iterations: iterations, salt: salt, hash: hash)
    }

    public mutating func remove(user: String) {
        entries.removeValue(forKey: user)
        order.removeAll { $0 == user }
    }

    public var rendered: String {
        order.map { user in
            let e = entries[user]!
            return "\(user):$7$\(e.iterations)$\(Crypto.base64Encode(e.salt))$\(Crypto.base64Encode(e.hash))\n"
        }.joined()
    }

    /// Hashes the offered password with the user's salt and compares in constant time.
    public func verify(user: String, password: [UInt8]) -> Bool {
        guard let e = entries[user] else {
            // Spend the same time for an unknown user, so timing does not reveal who exists.
            _ = Crypto.pbkdf2SHA512(password: password, salt: [0], iterations: Self.defaultIterations, length: 64)
            return false
        }
        let computed = Crypto.pbkdf2SHA512(password: password, salt: e.salt, iterations: e.iterations, length: e.hash.count)
        return Crypto.constantTimeEquals(computed, e.hash)
    }
}
