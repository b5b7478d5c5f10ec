/// A `$share/{group}/{filter}` subscription, split into its parts.
public struct SharedSubscription: Hashable, Sendable {
    public var group: Substring
    public var filter: Substring

    /// Parses a shared filter; nil if `filter` is not a well-formed `$share/` filter.
    public init?(_ filter: String) {
        guard filter.utf8.starts(with: "$share/".utf8) else { return nil }
        let rest = filter.dropFirst(7)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let group = rest[rest.startIndex..<slash]
        guard !group.isEmpty, !group.contains("+"), !group.contains("#") else { return nil }
        let inner = rest[rest.index(after: slash)...]
        guard !inner.isEmpty else { return nil }
        self.group = group
        self.filter = inner
    }
}
