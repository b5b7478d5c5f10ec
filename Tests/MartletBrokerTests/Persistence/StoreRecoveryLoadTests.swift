import Foundation
import Logging
@testable import MartletBroker
import MartletMQTT
import MartletTestSupport
import NIOCore
import Testing

/// Recovery at scale: a store holding 100,000 queued messages for 100 offline sessions (a
/// message shared by ten sessions stored once) loads whole before the listeners open; the
/// time it takes is printed (the closing note and README quote it).
@Suite struct StoreRecoveryLoadTests {
    @Test("100,000 stored deliveries (10,000 messages × 10 sessions, and 10 sessions × 9,000 own messages) load whole at start")
    func hundredThousandMessagesLoad() async throws {
        let dir = scratchPath("recovery")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/store.db"
        let store = try SQLiteSessionStore(path: path, synchronous: .normal)
        var records: [StoreRecord] = []
        let clients = (0..<20).map { "client-\($0)" }
        for c in clients {
            records.append(.session(StoredSessionHeader(clientID: c, version: .v5, expiryInterval: 3600, username: nil, will: nil, willDelay: 0)))
            records.append(.subscribed(clientID: c, filter: "load/#", options: 1, identifier: nil))
            records.append(.offline(clientID: c, expiryInterval: 3600, expiresAt: Router.wallClock() + 3_600_000, will: nil, willAt: nil))
        }
        var seq: Int64 = 1
        var id: Int64 = 1
        let payload = ByteBuffer(repeating: 0x61, count: 64)
        func message() -> StoreRecord {
            .message(id: id, StoredMessage(topic: "load/\(id % 100)", payload: payload, qos: .atLeastOnce, retain: false, properties: [], expiresAt: nil))
        }
        func queued(_ client: String) -> StoreRecord {
            defer { seq += 1 }
            return .queued(StoredDelivery(seq: seq, clientID: client, messageID: id, qos: .atLeastOnce, retain: false,
                                          subscriptionIdentifiers: [], group: nil, packetIdentifier: nil, stage: .queued))
        }
        // Shared: 10,000 messages to the first ten sessions.
        for _ in 0..<10_000 {
            records.append(message())
            for c in clients.prefix(10) { records.append(queued(c)) }
            id += 1
        }
        // Own: 900 messages to each of the other ten.
        for c in clients.suffix(10) {
            for _ in 0..<900 {
                records.append(message())
                records.append(queued(c))
                id += 1
            }
        }
        for start in stride(from: 0, to: records.count, by: 20_000) {
            try store.apply(Array(records[start..<min(start + 20_000, records.count)]))
        }
        store.close()
        let deliveries = 10 * 10_000 + 10 * 900
        let started = ContinuousClock.now
        try await withBroker({
            $0.persistence = .init(path: path)
            $0.maximumQueuedMessages = 20_000
        }) { broker, _ in
            let loaded = ContinuousClock.now - started
            var total = 0
            for c in clients {
                let report = try #require(try await broker.sessionReport(clientID: c))
                #expect(!report.online)
                total += report.queuedMessages
            }
            #expect(total == deliveries)
            #expect(broker.counters.queuedMessages == deliveries)
            print("store recovery: \(deliveries) stored deliveries (\(id - 1) messages, \(clients.count) sessions) loaded and the broker started in \(loaded)")
        }
    }
}
