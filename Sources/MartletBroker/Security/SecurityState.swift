import MartletAuth

/// What authentication and authorization use; replaced whole on reload.
struct SecurityState: Sendable {
    var authenticator = Authenticator(passwords: nil)
    var acl: AccessControlList?
    /// Bearer tokens of the admin API (`admin_token_file`); nil: the API is off.
    var adminTokens: Set<String>?
    /// Bumped on every reload, so cached ACL answers are dropped.
    var generation = 0
}
