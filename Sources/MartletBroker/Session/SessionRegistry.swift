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

    /// 8 bytes, like the plain owner index it replaces: one per client id with a session.
    private struct Slot {
        /// The owner's router index; -1: none.
        var owner: Int32
        var busy: Bool

        var ownerIndex: Int? { owner < 0 ? nil : Int(owner) }
    }

    private struct State {
        var slots: [String: Slot] = [:]
        /// Claims waiting for a busy client id, in arrival order (rare: kept apart so the
        /// slots stay small).
        var waiting: [String: Deque<(router: Int, turn: Turn)>] = [:]
    }

    private let state = NIOLockedValueBox(State())

    /// Claims `clientID` for `router`. Until `settle` the client id is busy. `turn` is made only
    /// for a claim that has to wait (a granted one would allocate its closure for nothing).
    func claim(_ clientID: String, router: Int, turn: @autoclosure () -> Turn) -> Claim {
        state.withLockedValue { state in
            guard let slot = state.slots[clientID] else {
                state.slots[clientID] = Slot(owner: Int32(router), busy: true)
                return .granted(previousOwner: nil)
            }
            if slot.busy {
                state.waiting[clientID, default: []].append((router, turn()))
                return .queued
            }
            state.slots[clientID] = Slot(owner: Int32(router), busy: true)
            return .granted(previousOwner: slot.ownerIndex)
        }
    }

    /// The claim in progress is carried out: `owner` now holds the session (nil: none does).
    /// The next waiting claim, if any, starts.
    func settle(_ clientID: String, owner: Int?) {
        let next: (turn: Turn, previous: Int?)? = state.withLockedValue { state in
            guard state.slots[clientID] != nil else { return nil }
            // Looked up before popping: a mutating access to the (nearly always empty) waiting
            // table would give it storage of its own on every settle.
            guard !state.waiting.isEmpty, state.waiting[clientID] != nil, let waiter = state.waiting[clientID]?.popFirst() else {
                if let owner {
                    state.slots[clientID] = Slot(owner: Int32(owner), busy: false)
                } else {
                    state.slots.removeValue(forKey: clientID)
                }
                return nil
            }
            if state.waiting[clientID]?.isEmpty == true { state.waiting.removeValue(forKey: clientID) }
            state.slots[clientID] = Slot(owner: Int32(waiter.router), busy: true)
            return (waiter.turn, owner)
        }
        if let next { next.turn(next.previous) }
    }

    /// A session loaded from the store at start is owned by `router`.
    func adopt(_ clientID: String, router: Int) {
        state.withLockedValue { $0.slots[clientID] = Slot(owner: Int32(router), busy: false) }
    }

    func owner(of clientID: String) -> Int? {
        state.withLockedValue { $0.slots[clientID]?.ownerIndex }
    }

    /// The session of `clientID` on `router` ended. Forgotten unless a claim is in progress
    /// (that claim settles who owns it).
    func release(_ clientID: String, router: Int) {
        state.withLockedValue {
            if let slot = $0.slots[clientID], slot.owner == Int32(router), !slot.busy { $0.slots.removeValue(forKey: clientID) }
        }
    }

    /// Client ids with an entry: sessions and claims in progress (for tests of what is kept).
    var count: Int { state.withLockedValue { $0.slots.count } }
}
