import MartletCluster
import MartletMQTT
import Testing

@Suite struct ClusterSubjectsTests {
    @Test func placeholder() { #expect(ClusterSubjects.key(topic: "a/b") == "a.b") }
}
