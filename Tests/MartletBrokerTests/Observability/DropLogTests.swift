@testable import MartletBroker
import NIOCore
import Testing

@Suite struct DropLogTests {
    func session(_ id: String) -> Session {
        Session(clientID: id, version: .v3_1_1, expiryInterval: 0, inflightWindow: 10)
    }

    @Test("drops are reported at most once per interval, per client with what it lost since, 20 clients by name and the rest as a count")
    func oncePerInterval() {
        let start = NIODeadline.uptimeNanoseconds(60_000_000_000)
        var log = DropLog(every: .seconds(5))
        let a = session("a")
        log.noteDrop(a, count: 3)
        log.noteDrop(a, count: 2)
        let first = log.report(at: start)
        #expect(first?.named.map(\.session.clientID) == ["a"] && first?.named.first?.dropped == 5 && first?.more == 0)
        #expect(a.unloggedDrops == 0)
        log.noteDrop(a, count: 1)
        #expect(log.report(at: start + .seconds(4)) == nil)  // within the interval: held
        let second = log.report(at: start + .seconds(5))
        #expect(second?.named.first?.dropped == 1)
        #expect(log.report(at: start + .seconds(60)) == nil)  // nothing new: silent

        let many = (0..<25).map { session("c\($0)") }
        for s in many { log.noteDrop(s, count: 1) }
        let crowd = log.report(at: start + .seconds(120))
        #expect(crowd?.named.count == DropLog.clientsPerLog && crowd?.more == 5)
        #expect(log.droppers.isEmpty && many.allSatisfy { $0.unloggedDrops == 0 })
    }
}
