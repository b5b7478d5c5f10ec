import DequeModule
import NIOConcurrencyHelpers

/// Which event loop's router owns each client id's session, online or offline, and the
/// one-at-a-time order of takeovers of that client id.
///
/// A CONNECT claims its client id. While one claim is being carried out (the session
/// detached from its owner, moved, attached to the new connection) the client id is busy:
/// later claims wait here in arrival order and run one after another, whatever loops their
/// connections are on (MQTT-3.1.4-3: one connection per client id survives, and the session
/// moves whole from each holder to the next).
///
/// Touched only at CONNECT and at session end (rare next to PUBLISH), so a lock is the
/// simplest correct choice; no routing decision reads it. An entry exists only while a
/// session or a claim does: nothing stays behind for a client id that is gone.
final class SessionRegistry: Sendable {
    /// Runs a waiting claim once the client id is free: given the owner it takes over from.
    typealias Turn = @Sendable (_ previousOwner: Int?) -> Void

    enum Claim: Equatable {
        /// The claim runs now; it takes over from this owner (nil: no session anywhere).
        case granted(previousOwner: Int?)
        /// Another claim is being carried out; `Turn` is called when it is this one's turn.
        case queued
    }

    private struct Entry {
        var owner: Int?
        var busy: Bool
        var waiting: Deque<(router: Int, turn: Turn)> = []
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    /// Claims `clientID` for `router`. Until `settle` the client id is busy.
    func claim(_ clientID: String, router: Int, turn: @escaping Turn) -> Claim {
        entries.withLockedValue { entries in
            guard var entry = entries[clientID] else {
                entries[clientID] = Entry(owner: router, busy: true)
                return .granted(previousOwner: nil)
            }
            if entry.busy {
                entry.waiting.append((router, turn))
                entries[clientID] = entry
                return .queued
            }
            let previous = entry.owner
            entry.owner = router
            entry.busy = true
            entries[clientID] = entry
            return .granted(previousOwner: previous)
        }
    }

    /// The claim in progress is carried out: `owner` now holds the session (nil: none does).
    /// The next waiting claim, if any, starts.
    func settle(_ clientID: String, owner: Int?) {
        let next: (turn: Turn, previous: Int?)? = entries.withLockedValue { entries in
            guard var entry = entries[clientID] else { return nil }
            entry.owner = owner
            guard let waiter = entry.waiting.popFirst() else {
                if owner == nil { entries.removeValue(forKey: clientID) } else {
                    entry.busy = false
                    entries[clientID] = entry
                }
                return nil
            }
            entry.owner = waiter.router
            entries[clientID] = entry
            return (waiter.turn, owner)
        }
        if let next { next.turn(next.previous) }
    }

    func owner(of clientID: String) -> Int? {
        entries.withLockedValue { $0[clientID]?.owner }
    }

    /// The session of `clientID` on `router` ended. Forgotten unless a claim is in progress
    /// (that claim settles who owns it).
    func release(_ clientID: String, router: Int) {
        entries.withLockedValue {
            if let entry = $0[clientID], entry.owner == router, !entry.busy { $0.removeValue(forKey: clientID) }
        }
    }

    /// Client ids with an entry: sessions and claims in progress (for tests of what is kept).
    var count: Int { entries.withLockedValue { $0.count } }
}
