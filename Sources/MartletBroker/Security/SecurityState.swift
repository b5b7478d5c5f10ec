import MartletAuth

/// What authentication and authorization use; replaced whole on reload.
struct SecurityState: Sendable {
    var authenticator = Authenticator(passwords: nil)
    var acl: AccessControlList?
    /// Bumped on every reload, so cached ACL answers are dropped.
    var generation = 0
}
