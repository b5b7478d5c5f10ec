/// Why a topic name or topic filter was refused (MQTT 4.7, 3.1.1 and 5.0 alike).
public enum TopicValidationError: Error, Hashable, Sendable, CustomStringConvertible {
    case empty
    case tooLong(bytes: Int)
    /// `+` or `#` in a topic name (MQTT-3.3.2-2).
    case wildcardInTopicName
    /// `+` that does not occupy a whole level (MQTT-4.7.1-3).
    case plusNotWholeLevel
    /// `#` that is not alone in the last level (MQTT-4.7.1-2).
    case hashNotLast
    /// `$share/` without a share name, with a wildcard or in the share name, or without a filter.
    case invalidSharedSubscription

    public var description: String {
        switch self {
        case .empty: return "topic is empty"
        case .tooLong(let n): return "topic is \(n) bytes, more than 65535"
        case .wildcardInTopicName: return "topic name contains a wildcard"
        case .plusNotWholeLevel: return "'+' must occupy a whole topic level"
        case .hashNotLast: return "'#' must be the last character and occupy a whole level"
        case .invalidSharedSubscription: return "shared subscription must be $share/{name}/{filter}"
        }
    }
}
