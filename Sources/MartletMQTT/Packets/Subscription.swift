import NIOCore

/// One topic filter of a SUBSCRIBE. The filter is checked by the broker (which answers
/// a bad one with a failure code in SUBACK), not by the decoder.
public struct Subscription: Sendable, Hashable {
    public var topicFilter: String
    public var options: SubscriptionOptions
    public init(topicFilter: String, options: SubscriptionOptions = .init()) {
        self.topicFilter = topicFilter
        self.options = options
    }
    public init(_ topicFilter: String, qos: QoS) {
        self.init(topicFilter: topicFilter, options: .init(qos: qos))
    }
}
