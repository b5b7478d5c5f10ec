/// Topic name and filter rules.
public enum Topic {
    public static let maximumLength = 65_535
    static let slash = UInt8(ascii: "/")
    static let plus = UInt8(ascii: "+")
    static let hash = UInt8(ascii: "#")

    /// Whether a topic name or filter stays within a configured length (bytes) and number of
    /// levels. Cheap when the limits are the protocol's own: nothing is scanned then.
    public static func isWithin(_ topic: String, maximumLength: Int, maximumLevels: Int) -> Bool {
        let utf8 = topic.utf8
        if utf8.count > maximumLength { return false }
        // A topic of n bytes has at most n levels.
        if maximumLevels >= utf8.count { return true }
        var levels = 1
        for byte in utf8 where byte == slash {
            levels += 1
            if levels > maximumLevels { return false }
        }
        return true
    }

    /// Checks a topic name as sent in PUBLISH or a will.
    public static func validateName(_ topic: String) throws(TopicValidationError) {
        var count = 0
        for byte in topic.utf8 {
            if byte == plus || byte == hash { throw .wildcardInTopicName }
            count += 1
        }
        if count == 0 { throw .empty }
        if count > maximumLength { throw .tooLong(bytes: count) }
    }

    /// Checks a topic filter as sent in SUBSCRIBE or UNSUBSCRIBE, including `$share/` filters.
    public static func validateFilter(_ filter: String) throws(TopicValidationError) {
        let count = filter.utf8.count
        if count == 0 { throw .empty }
        if count > maximumLength { throw .tooLong(bytes: count) }
        if let shared = SharedSubscription(filter) {
            try validatePlainFilter(shared.filter)
        } else if filter.utf8.starts(with: "$share/".utf8) || filter == "$share" {
            throw .invalidSharedSubscription
        } else {
            try validatePlainFilter(Substring(filter))
        }
    }

    static func validatePlainFilter(_ filter: Substring) throws(TopicValidationError) {
        if filter.isEmpty { throw .empty }
        var previous: UInt8 = slash
        var sawHash = false
        for byte in filter.utf8 {
            if sawHash { throw .hashNotLast }
            if byte == plus {
                if previous != slash { throw .plusNotWholeLevel }
            } else if byte == hash {
                if previous != slash { throw .hashNotLast }
                sawHash = true
            } else if previous == plus && byte != slash {
                // Something other than '/' after '+'.
                throw .plusNotWholeLevel
            }
            previous = byte
        }
    }
}

extension Topic {
    /// Whether `topic` (a topic name) matches `filter` (a valid, non-shared topic filter),
    /// including the rule that a leading wildcard does not match a `$` topic (MQTT-4.7.2-1).
    public static func matches(filter: Substring, topic: Substring) -> Bool {
        var f = filter.utf8[...]
        var t = topic.utf8[...]
        if t.first == UInt8(ascii: "$") && (f.first == plus || f.first == hash) { return false }
        while true {
            let fEnd = f.firstIndex(of: slash) ?? f.endIndex
            let fLevel = f[f.startIndex..<fEnd]
            if fLevel.count == 1 && fLevel.first == hash { return true }
            let tEnd = t.firstIndex(of: slash) ?? t.endIndex
            let tLevel = t[t.startIndex..<tEnd]
            if !(fLevel.count == 1 && fLevel.first == plus) && !fLevel.elementsEqual(tLevel) { return false }
            let fDone = fEnd == f.endIndex
            let tDone = tEnd == t.endIndex
            if fDone && tDone { return true }
            if tDone {
                // "a/#" matches "a": the rest of the filter must be exactly "/#".
                let rest = f[f.index(after: fEnd)...]
                return rest.count == 1 && rest.first == hash
            }
            if fDone { return false }
            f = f[f.index(after: fEnd)...]
            t = t[t.index(after: tEnd)...]
        }
    }

    public static func matches(filter: String, topic: String) -> Bool {
        matches(filter: filter[...], topic: topic[...])
    }

    /// Whether every topic `filter` can match is also matched by `pattern` (both filters):
    /// how an ACL decides a SUBSCRIBE. `#` in the pattern covers anything below; `+` covers
    /// one level of the filter, `+` included but not `#`.
    public static func covers(pattern: String, filter: String) -> Bool {
        let p = pattern.split(separator: "/", omittingEmptySubsequences: false)
        let f = filter.split(separator: "/", omittingEmptySubsequences: false)
        if filter.hasPrefix("$") != pattern.hasPrefix("$") && (p.first == "+" || p.first == "#") { return false }
        var i = 0
        while i < p.count {
            if p[i] == "#" { return true }
            guard i < f.count else { return false }
            if f[i] == "#" { return false }
            if p[i] != "+" && p[i] != f[i] { return false }
            i += 1
        }
        return i == f.count
    }
}
