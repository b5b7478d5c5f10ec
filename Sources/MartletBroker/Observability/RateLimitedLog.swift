import NIOCore

/// A log line said at most once per interval, with how many times its event happened since:
/// an operator learns of every authentication failure, pause or refusal without a flood.
/// The time is passed in, so the rule is tested without a clock.
struct RateLimitedLog {
    let interval: TimeAmount
    private var lastReport = NIODeadline.uptimeNanoseconds(0)
    private var pending = 0

    init(every interval: TimeAmount) {
        self.interval = interval
    }

    /// Counts one event at `now`; returns how many to report when the interval since the
    /// last report has passed (this one included), nil while it has not.
    mutating func record(at now: NIODeadline) -> Int? {
        pending += 1
        guard now - lastReport >= interval else { return nil }
        lastReport = now
        defer { pending = 0 }
        return pending
    }
}
