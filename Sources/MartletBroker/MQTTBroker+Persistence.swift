import Logging
import MartletAuth
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// The session store at start: opened (or moved aside when unusable) and loaded into the
/// routers and the retained store.
extension MQTTBroker {
    /// Opens the store at `persistence.path`. A file that exists but cannot be opened, fails
    /// its integrity check or cannot be read is moved aside (`FILE.corrupt-<time>`, with its
    /// WAL), logged with the reason, and the broker starts with an empty store: the bad file
    /// is never overwritten. A store that cannot be created at all stops the start.
    static func openStore(_ persistence: BrokerConfiguration.Persistence, logger: Logger) throws -> (SQLiteSessionStore, StoredState) {
        let synchronous: SQLiteSessionStore.Synchronous = persistence.sync == .durable ? .full : .normal
        let path = persistence.path
        do {
            let store = try SQLiteSessionStore(path: path, synchronous: synchronous)
            do {
                return (store, try store.load(now: Router.wallClock()))
            } catch {
                store.close()
                throw SQLiteSessionStore.StoreOpenError(reason: "cannot read: \(error)")
            }
        } catch let error as SQLiteSessionStore.StoreOpenError {
            guard access(path, F_OK) == 0 else {
                throw ConfigurationError(source: "persistence", key: "persistence.path", line: nil,
                                         message: "cannot create the session store \(path): \(error.reason)")
            }
            var aside = path + ".corrupt-" + Self.timestamp()
            // Never over an earlier one moved aside in the same second.
            var n = 1
            while access(aside, F_OK) == 0 || access(aside + "-wal", F_OK) == 0 {
                n += 1
                aside = path + ".corrupt-" + Self.timestamp() + "-\(n)"
            }
            for suffix in ["", "-wal", "-shm"] where access(path + suffix, F_OK) == 0 {
                guard rename(path + suffix, aside + suffix) == 0 else {
                    throw ConfigurationError(source: "persistence", key: "persistence.path", line: nil,
                                             message: "the session store \(path) is unusable (\(error.reason)) and cannot be moved aside: errno \(errno)")
                }
            }
            logger.error("session store unusable: moved aside, starting with an empty store", metadata: [
                "path": "\(path)", "moved_to": "\(aside)", "reason": "\(error.reason)",
            ])
            do {
                let store = try SQLiteSessionStore(path: path, synchronous: synchronous)
                return (store, try store.load(now: Router.wallClock()))
            } catch {
                throw ConfigurationError(source: "persistence", key: "persistence.path", line: nil,
                                         message: "cannot create a new session store \(path) after moving the bad one aside: \(error)")
            }
        }
    }

    /// UTC, as in `FILE.corrupt-20261130T061502Z`.
    private static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let n = strftime(&buffer, buffer.count, "%Y%m%dT%H%M%SZ", &parts)
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Hands the loaded sessions to the routers (each client id to one loop; a client that
    /// connects on another loop takes its session over as usual) and fills the retained store.
    func recover(_ state: StoredState) async throws {
        let now = Router.wallClock()
        let loopNow = NIODeadline.now()
        for m in state.retained {
            core.retained.store(RetainedMessage(
                topic: m.topic, payload: m.payload, qos: m.qos, properties: m.properties,
                expiresAt: m.expiresAt.map { loopNow + .milliseconds($0 - now) }))
        }
        var shares = [[StoredState.Session]](repeating: [], count: routers.count)
        for session in state.sessions {
            var hash: UInt32 = 2_166_136_261
            for byte in session.header.clientID.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
            shares[Int(hash % UInt32(routers.count))].append(session)
        }
        for (router, share) in zip(routers, shares) where !share.isEmpty {
            try await router.eventLoop.submit { router.assumeIsolated { $0.recover(share) } }.get()
        }
    }
}
