import Foundation
import MartletBroker
import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Listening sockets: one per event loop with `listen_per_thread` (SO_REUSEPORT), one without.
@Suite struct ListenerTests {
    /// Sockets in LISTEN state on 127.0.0.1:`port`, from the kernel's own table.
    static func listeningSockets(port: Int) throws -> Int {
        let table = try tcpTable()
        let local = String(format: "0100007F:%04X", port)
        return table.split(separator: "\n").filter { line in
            let fields = line.split(separator: " ")
            return fields.count > 3 && fields[1] == local && fields[3] == "0A"
        }.count
    }

    /// /proc/net/tcp whole (read to its end: the file reports size 0, and a busy machine's
    /// table is many pages long).
    static func tcpTable() throws -> String {
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/net/tcp"))
        defer { try? file.close() }
        return String(decoding: try file.readToEnd() ?? Data(), as: UTF8.self)
    }

    /// Connects `count` subscribers, each to its own topic, and checks one publisher reaches all.
    static func everyConnectionServed(port: Int, count: Int) async throws {
        var subscribers: [RawClient] = []
        for i in 0..<count {
            let (client, ack) = try await RawClient.connected(port: port, clientID: "s\(i)")
            #expect(ack.reasonCode == .success)
            _ = try await client.subscribe("listener/\(i)")
            subscribers.append(client)
        }
        let (publisher, _) = try await RawClient.connected(port: port, clientID: "p")
        for i in 0..<count { try await publisher.publish("listener/\(i)", "to \(i)") }
        for (i, client) in subscribers.enumerated() {
            #expect(try await client.nextPublish().payloadString == "to \(i)")
            await client.close()
        }
        await publisher.close()
    }

    @Test("listen_per_thread: one listening socket per event loop on one port, and connections through them all served; off: one socket")
    func socketPerEventLoop() async throws {
        for perThread in [true, false] {
            try await withBroker({ $0.listenPerThread = perThread }) { _, port in
                #expect(try Self.listeningSockets(port: port) == (perThread ? 2 : 1))
                try await Self.everyConnectionServed(port: port, count: 12)
            }
        }
    }

    @Test("listen_per_thread: a second broker on a port in use does not start (EADDRINUSE), though SO_REUSEPORT would let it bind")
    func portInUseIsRefused() async throws {
        try await withBroker({ $0.listenPerThread = true }) { _, port in
            var config = BrokerConfiguration()
            config.listeners = [.init(host: "127.0.0.1", port: port)]
            config.eventLoops = 2
            config.listenPerThread = true
            config.sysInterval = .zero
            let second = MQTTBroker(configuration: config)
            let error = await #expect(throws: IOError.self) { try await second.start() }
            #expect(error?.errnoCode == EADDRINUSE)
            try? await second.shutdown()
            // The first broker alone still holds the port and serves every connection.
            #expect(try Self.listeningSockets(port: port) == 2)
            try await Self.everyConnectionServed(port: port, count: 6)
        }
    }
}
