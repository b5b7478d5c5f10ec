#if canImport(Glibc)
import Glibc
#endif

/// A configuration value that cannot be used: names the key, and the line in the file
/// when it came from one, so the operator can fix it without guessing.
public struct ConfigurationError: Error, Hashable, CustomStringConvertible {
    public var source: String
    public var key: String
    public var line: Int?
    public var message: String

    public init(source: String, key: String, line: Int?, message: String) {
        self.source = source
        self.key = key
        self.line = line
        self.message = message
    }

    public var description: String {
        let place = line.map { "\(source):\($0)" } ?? source
        return "\(place): \(key): \(message)"
    }
}

extension ConfigurationError {
    /// Reads a whole UTF-8 text file, or says why not in errno's words, naming `key`.
    public static func readTextFile(_ path: String, key: String) throws(ConfigurationError) -> String {
        guard let file = fopen(path, "r") else {
            throw ConfigurationError(source: path, key: key, line: nil, message: "cannot read: \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigurationError(source: path, key: key, line: nil, message: "not UTF-8 text")
        }
        return text
    }
}
