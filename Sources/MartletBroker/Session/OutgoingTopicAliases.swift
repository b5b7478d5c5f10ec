/// The topic aliases the broker uses on one connection for what it sends a v5 client that
/// allowed them (CONNECT Topic Alias Maximum, MQTT 5 3.3.2.3.4): the first PUBLISH of a topic
/// carries the topic and an alias, later ones only the alias. Made per connection and never
/// carried to the next one (a stale alias after a reconnect is a known client pain). Bounded by
/// the client's maximum and `max_topic_alias_out`; when full, the alias least recently used
/// is given to a new topic only once it has gone unused for a while, so that many topics in
/// turn do not remap an alias on every message.
final class OutgoingTopicAliases {
    /// What to send for a topic.
    enum Use: Equatable {
        /// Topic name and alias: the client learns (or relearns) the mapping.
        case assign(UInt16)
        /// Empty topic name and the alias.
        case alias(UInt16)
        /// The topic name only.
        case none
    }

    let maximum: Int
    private var byTopic: [String: UInt16] = [:]
    private var topics: [String] = []
    private var lastUse: [UInt64] = []
    private var sends: UInt64 = 0
    /// Sends an alias must go unused before it can be given to another topic.
    let idleBeforeReuse: UInt64

    init(maximum: Int) {
        self.maximum = maximum
        self.idleBeforeReuse = UInt64(max(64, maximum * 8))
    }

    /// What a PUBLISH on `topic` should carry; nothing changes until `commit`.
    func use(for topic: String) -> Use {
        if let alias = byTopic[topic] { return .alias(alias) }
        if topics.count < maximum { return .assign(UInt16(topics.count + 1)) }
        guard let oldest = lastUse.indices.min(by: { lastUse[$0] < lastUse[$1] }),
              sends - lastUse[oldest] >= idleBeforeReuse else { return .none }
        return .assign(UInt16(oldest + 1))
    }

    /// The PUBLISH carrying `use` for `topic` was written.
    func commit(_ use: Use, for topic: String) {
        sends += 1
        switch use {
        case .none:
            return
        case .alias(let alias):
            lastUse[Int(alias) - 1] = sends
        case .assign(let alias):
            let i = Int(alias) - 1
            if i == topics.count {
                topics.append(topic)
                lastUse.append(sends)
            } else {
                byTopic[topics[i]] = nil
                topics[i] = topic
                lastUse[i] = sends
            }
            byTopic[topic] = alias
        }
    }

    var count: Int { topics.count }
}
