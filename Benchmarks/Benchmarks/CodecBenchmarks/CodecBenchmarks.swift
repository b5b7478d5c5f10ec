import Benchmark
import MartletMQTT
import NIOCore

/// Time and mallocs per PUBLISH encode and decode: the two operations every routed
/// message pays for. Each benchmark iteration handles one packet.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 10_000
    )

    func publish(payloadBytes: Int, properties: Properties = []) -> PublishPacket {
        PublishPacket(
            topic: "sensors/building-1/floor-2/temperature",
            payload: ByteBuffer(repeating: 0x5A, count: payloadBytes),
            qos: .atLeastOnce, packetIdentifier: 42, properties: properties)
    }

    var v5Properties = Properties()
    v5Properties.payloadFormatIndicator = 0
    v5Properties.messageExpiryInterval = 3600
    v5Properties.contentType = "application/json"
    v5Properties.responseTopic = "replies/client-7"
    v5Properties.correlationData = ByteBuffer(string: "req-000123")
    v5Properties.appendUserProperty("trace", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")

    let cases: [(String, PublishPacket, ProtocolVersion)] = [
        ("PUBLISH 64 B v3.1.1", publish(payloadBytes: 64), .v3_1_1),
        ("PUBLISH 16 KiB v3.1.1", publish(payloadBytes: 16_384), .v3_1_1),
        ("PUBLISH 64 B v5 with properties", publish(payloadBytes: 64, properties: v5Properties), .v5),
    ]

    for (name, packet, version) in cases {
        Benchmark("encode \(name)") { benchmark in
            var out = ByteBuffer()
            out.reserveCapacity(packet.payload.readableBytes + 256)
            for _ in benchmark.scaledIterations {
                out.clear()
                try MQTTPacket.write(packet, to: &out, version: version)
                blackHole(out.readableBytes)
            }
        }

        var encoded = ByteBuffer()
        try! MQTTPacket.write(packet, to: &encoded, version: version)
        Benchmark("decode \(name)") { benchmark in
            for _ in benchmark.scaledIterations {
                var input = encoded
                let decoded = try MQTTPacket.decode(from: &input, version: version, maximumPacketSize: 1 << 20)
                blackHole(decoded)
            }
        }
    }
}
