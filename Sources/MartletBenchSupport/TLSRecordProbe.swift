import MartletTLS
import NIOCore

/// A client and a server `TLSConnection` joined in memory, past their handshake: what the
/// TLS microbenchmarks (Benchmarks/TLSBenchmarks) drive to measure encrypting one record on
/// one side and decrypting it on the other, through the same BIO and buffers the handler
/// uses, with no socket. Not used by the broker.
public final class TLSRecordProbe {
    private let client: TLSConnection
    private let server: TLSConnection
    private let allocator = ByteBufferAllocator()
    private var plaintext: ByteBuffer

    /// Handshakes `client` with `server` (contexts of those roles).
    public init(client clientContext: TLSContext, server serverContext: TLSContext, serverName: String? = "localhost") throws {
        client = try TLSConnection(context: clientContext, serverName: serverName)
        server = try TLSConnection(context: serverContext, serverName: nil)
        plaintext = allocator.buffer(capacity: 16_384)
        var rounds = 0
        while true {
            let c = client.handshake()
            if let out = client.takeOutput() { server.receive(out) }
            let s = server.handshake()
            if let out = server.takeOutput() { client.receive(out) }
            if case .failed(let error) = c { throw error }
            if case .failed(let error) = s { throw error }
            if case .complete = c, case .complete = s { break }
            rounds += 1
            guard rounds < 20 else { throw TLSError.handshakeFailed("the in-memory handshake did not finish") }
        }
        // TLS 1.3 session tickets travel after the handshake: let the client read them now.
        _ = client.read(into: &plaintext)
        plaintext.clear()
    }

    /// Encrypts `record` at the client and decrypts it at the server; returns the bytes
    /// the server read.
    @discardableResult
    public func send(_ record: ByteBuffer) throws -> Int {
        if case .failed(let error) = client.write(record) { throw error }
        guard let ciphertext = client.takeOutput() else { return 0 }
        server.receive(ciphertext)
        plaintext.clear()
        var total = 0
        while case .complete(let n) = server.read(into: &plaintext) {
            total += n
            plaintext.clear()
        }
        return total
    }
}
