/// Entering a router from code already running on its event loop, without allocating.
extension Router {
    /// Runs `body` isolated to this router from code that already runs on its event loop (the
    /// loop's channel handlers, work the loop was handed): what `assumeIsolated` does, without
    /// the allocations that function makes on every call.
    ///
    /// `assumeIsolated` passes its closure through `withoutActuallyEscaping`, and with an
    /// `isolated` parameter that boxes a thunk's context each time; a closure that captures is
    /// boxed too. heaptrack counted two allocations per call, about twenty per short-lived
    /// connection and two per routed PUBLISH. Here `body` is an escaping closure that captures
    /// nothing: it is a constant, and what it needs comes in as `argument`.
    ///
    /// `body` must not capture (a capture still compiles, and costs its allocation again).
    /// Off the router's loop this traps, as `assumeIsolated` does.
    @inline(__always)
    nonisolated func onLoop<Argument, Result>(
        _ argument: Argument, _ body: @escaping (isolated Router, Argument) -> Result
    ) -> Result {
        precondition(eventLoop.inEventLoop, "router \(index) entered off its event loop")
        // What `assumeIsolated` does after its check: the router's executor is its event loop
        // (or, for the routing probe, an executor running on that loop's thread), and an
        // `isolated` parameter is passed as a plain one.
        return unsafeBitCast(body, to: ((Router, Argument) -> Result).self)(self, argument)
    }

    /// `onLoop(_:_:)` for a body that needs nothing but the router.
    @inline(__always)
    nonisolated func onLoop<Result>(_ body: @escaping (isolated Router) -> Result) -> Result {
        precondition(eventLoop.inEventLoop, "router \(index) entered off its event loop")
        return unsafeBitCast(body, to: ((Router) -> Result).self)(self)
    }
}
