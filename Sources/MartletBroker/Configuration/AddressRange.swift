#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// An IPv4 or IPv6 address, or a network in CIDR notation (`192.168.0.0/16`, `fd00::/8`):
/// one entry of `trusted_proxies`.
public struct AddressRange: Sendable, Hashable, CustomStringConvertible {
    /// The network's bytes (4 or 16) and how many leading bits must match.
    let bytes: [UInt8]
    let prefixLength: Int
    public let description: String

    /// nil when `text` is neither an address nor a network.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let bytes = Self.bytes(of: String(first)) else { return nil }
        let bits = bytes.count * 8
        var prefix = bits
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...bits).contains(n) else { return nil }
            prefix = n
        }
        self.bytes = bytes
        self.prefixLength = prefix
        self.description = text
    }

    /// Whether `address` (an IP socket address) is in this range. An IPv4-mapped IPv6
    /// address (`::ffff:10.0.0.1`) matches as its IPv4 address.
    public func contains(_ address: SocketAddress) -> Bool {
        guard let ip = address.ipAddress, var candidate = Self.bytes(of: ip) else { return false }
        if candidate.count == 16 && bytes.count == 4 && candidate.prefix(12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] {
            candidate = Array(candidate.suffix(4))
        }
        guard candidate.count == bytes.count else { return false }
        var left = prefixLength
        for i in bytes.indices where left > 0 {
            let take = min(8, left)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
            if candidate[i] & mask != bytes[i] & mask { return false }
            left -= take
        }
        return true
    }

    private static func bytes(of text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }
}
