@testable import MartletBroker
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import Testing

@Suite struct SessionRegistryTests {
    @Test("MQTT-3.1.4-3: claims of one client id run one at a time, in arrival order, each taking over from the owner the previous one left")
    func claimsAreSerialized() {
        let registry = SessionRegistry()
        let turns = NIOLockedValueBox<[(router: Int, previous: Int?)]>([])
        #expect(registry.claim("x", router: 0, turn: { _ in Issue.record("the first claim runs at once") }) == .granted(previousOwner: nil))
        #expect(registry.claim("x", router: 1, turn: { previous in turns.withLockedValue { $0.append((1, previous)) } }) == .queued)
        #expect(registry.claim("x", router: 0, turn: { previous in turns.withLockedValue { $0.append((0, previous)) } }) == .queued)
        // Another client id is not held up.
        #expect(registry.claim("y", router: 1, turn: { _ in }) == .granted(previousOwner: nil))
        // A session ending on its owner while a claim is in progress is left to that claim.
        registry.release("x", router: 0)
        #expect(registry.owner(of: "x") == 0)
        registry.settle("x", owner: 0)
        #expect(turns.withLockedValue { $0.map(\.router) } == [1])
        #expect(turns.withLockedValue { $0.last?.previous } == 0)
        #expect(registry.owner(of: "x") == 1)
        registry.settle("x", owner: 1)
        #expect(turns.withLockedValue { $0.map(\.router) } == [1, 0])
        #expect(turns.withLockedValue { $0.last?.previous } == 1)
        registry.settle("x", owner: 0)
        // Free again: a new claim runs at once, from owner 0.
        #expect(registry.claim("x", router: 1, turn: { _ in }) == .granted(previousOwner: 0))
        registry.settle("x", owner: nil)
        registry.settle("y", owner: 1)
        registry.release("y", router: 1)
        // Nothing stays behind for client ids that are gone.
        #expect(registry.count == 0)
    }
}
