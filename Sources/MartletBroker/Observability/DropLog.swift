import NIOCore

/// Which sessions lost messages since the broker last said so: logged at most once per
/// interval, at most `clientsPerLog` clients by name and the rest as a count, so a flood of
/// drops costs one line per client per interval, not one per message.
struct DropLog {
    let interval: TimeAmount
    static let clientsPerLog = 20
    private(set) var droppers: [Session] = []
    private var last = NIODeadline.uptimeNanoseconds(0)

    init(every interval: TimeAmount) {
        self.interval = interval
    }

    /// `session` lost `count` messages (already counted in its drops and the totals).
    mutating func noteDrop(_ session: Session, count: Int) {
        if session.unloggedDrops == 0 { droppers.append(session) }
        session.unloggedDrops += count
    }

    /// When the interval has passed since the last report and something was dropped: the
    /// sessions to name with what each lost since, and how many more there were. Their
    /// figures start again from zero.
    mutating func report(at now: NIODeadline) -> (named: [(session: Session, dropped: Int)], more: Int)? {
        guard !droppers.isEmpty, now - last >= interval else { return nil }
        last = now
        let named = droppers.prefix(Self.clientsPerLog).map { ($0, $0.unloggedDrops) }
        let more = max(0, droppers.count - Self.clientsPerLog)
        for session in droppers { session.unloggedDrops = 0 }
        droppers.removeAll()
        return (named, more)
    }
}
