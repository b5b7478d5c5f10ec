@testable import MartletBroker
import NIOCore
import Testing

@Suite struct CounterCatalogTests {
    @Test("every stored counter and gauge of the snapshot is in the catalog exactly once (so it is summed, exported and, where named, published on $SYS)")
    func catalogCoversTheSnapshot() {
        let fields = Mirror(reflecting: BrokerCounters.Snapshot()).children.count
        let paths = BrokerCounters.catalog.map { $0.value as AnyKeyPath }
        #expect(paths.count == fields)
        #expect(Set(paths).count == paths.count)
        // Prometheus names with their labels are unique too.
        let names = BrokerCounters.catalog.map { $0.metric + "\($0.labels.map { "\($0.0)=\($0.1)" })" }
        #expect(Set(names).count == names.count)
    }

    @Test("adding snapshots sums the totals of the catalog and leaves the gauges alone")
    func addSumsTotalsOnly() {
        var a = BrokerCounters.Snapshot()
        var b = BrokerCounters.Snapshot()
        for entry in BrokerCounters.catalog {
            a[keyPath: entry.value] = 1
            b[keyPath: entry.value] = 2
        }
        a.add(b)
        for entry in BrokerCounters.catalog {
            #expect(a[keyPath: entry.value] == (entry.kind == .total ? 3 : 1), "\(entry.metric)")
        }
        var c = BrokerCounters.Snapshot()
        c.countDrop(.notAuthorized, 2)
        c.countDrop(.expired)
        #expect(c.droppedNotAuthorized == 2 && c.droppedExpired == 1 && c.dropped == 3)
    }
}
