import CMartletOpenSSL

/// The few OpenSSL primitives the broker needs outside TLS: password hashing, digests, random
/// bytes, constant-time comparison and base64.
public enum Crypto {
    /// PBKDF2-HMAC-SHA512 (PKCS #5 v2), `length` bytes.
    public static func pbkdf2SHA512(password: [UInt8], salt: [UInt8], iterations: Int, length: Int = 64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        let ok = password.withUnsafeBufferPointer { p in
            salt.withUnsafeBufferPointer { s in
                p.withMemoryRebound(to: CChar.self) { pc in
                    PKCS5_PBKDF2_HMAC(pc.baseAddress, Int32(p.count), s.baseAddress, Int32(s.count),
                                      Int32(iterations), EVP_sha512(), Int32(length), &out)
                }
            }
        }
        precondition(ok == 1, "PKCS5_PBKDF2_HMAC failed")
        return out
    }

    /// SHA-512 of `bytes`.
    public static func sha512(_ bytes: [UInt8]) -> [UInt8] {
        digest(bytes, EVP_sha512(), size: 64)
    }

    /// SHA-1 of `bytes` (for the WebSocket handshake's Sec-WebSocket-Accept, not for security).
    public static func sha1(_ bytes: [UInt8]) -> [UInt8] {
        digest(bytes, EVP_sha1(), size: 20)
    }

    private static func digest(_ bytes: [UInt8], _ md: OpaquePointer?, size: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var length: UInt32 = 0
        let ok = bytes.withUnsafeBufferPointer { EVP_Digest($0.baseAddress, $0.count, &out, &length, md, nil) }
        precondition(ok == 1 && Int(length) == size, "EVP_Digest failed")
        return out
    }

    /// Cryptographically strong random bytes (RAND_bytes).
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        precondition(RAND_bytes(&out, Int32(count)) == 1, "RAND_bytes failed")
        return out
    }

    /// Equal length and contents, in time that does not depend on where they differ.
    public static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in CRYPTO_memcmp(pa.baseAddress, pb.baseAddress, a.count) == 0 } }
    }

    public static func base64Encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: 4 * ((bytes.count + 2) / 3) + 1)
        let n = EVP_EncodeBlock(&out, bytes, Int32(bytes.count))
        return String(decoding: out[0..<Int(n)], as: UTF8.self)
    }

    /// Standard base64 with padding; nil for anything else.
    public static func base64Decode(_ text: String) -> [UInt8]? {
        let input = Array(text.utf8)
        guard !input.isEmpty, input.count % 4 == 0 else { return nil }
        var out = [UInt8](repeating: 0, count: input.count / 4 * 3)
        let n = EVP_DecodeBlock(&out, input, Int32(input.count))
        guard n >= 0 else { return nil }
        // EVP_DecodeBlock counts the padding as zero bytes.
        let padding = input.reversed().prefix(2).filter { $0 == UInt8(ascii: "=") }.count
        return Array(out[0..<(Int(n) - padding)])
    }
}
