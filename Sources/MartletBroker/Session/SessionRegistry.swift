import NIOConcurrencyHelpers

/// Which event loop's router owns each client id's session, online or offline.
///
/// Touched only at CONNECT and at session end (rare next to PUBLISH), so a lock is the
/// simplest correct choice; no routing decision reads it.
final class SessionRegistry: Sendable {
    private let owners = NIOLockedValueBox<[String: Int]>([:])

    /// Records `router` as the owner of `clientID` and returns the previous owner.
    func claim(_ clientID: String, router: Int) -> Int? {
        owners.withLockedValue { $0.updateValue(router, forKey: clientID) }
    }

    func owner(of clientID: String) -> Int? {
        owners.withLockedValue { $0[clientID] }
    }

    /// Forgets `clientID` unless another router claimed it meanwhile.
    func release(_ clientID: String, router: Int) {
        owners.withLockedValue {
            if $0[clientID] == router { $0.removeValue(forKey: clientID) }
        }
    }
}
