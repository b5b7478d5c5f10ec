import NIOCore

/// `max_connection_rate`: a token bucket refilled at the rate, holding at most one second's worth.
struct TokenBucket: Sendable {
    let ratePerSecond: Int
    private var tokens: Double
    private var last: NIODeadline

    init(ratePerSecond: Int, now: NIODeadline) {
        self.ratePerSecond = ratePerSecond
        self.tokens = Double(ratePerSecond)
        self.last = now
    }

    mutating func take(now: NIODeadline) -> Bool {
        let elapsed = Double((now - last).nanoseconds) / 1e9
        last = now
        tokens = min(Double(ratePerSecond), tokens + elapsed * Double(ratePerSecond))
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
