import Foundation
import Testing
import MartletTestSupport

/// Short-lived publishers with random client ids, the common case: the daemon keeps nothing
/// per connection or per client id once it is gone.
@Suite struct ChurnLoadTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("scripts/churn.py").path

    @Test("50,000 connections with unique client ids (3.1.1 and 5.0, with and without DISCONNECT): the daemon's RSS returns to a bound")
    func uniqueClientIDsKeepNothing() async throws {
        let port = randomTestPort()
        let daemon = try ChildProcess(DaemonTests.martletd, ["--port", "\(port)", "--log-level", "error"])
        defer { daemon.kill() }
        try await waitUntilListening(UInt16(port))
        let r = try await run(debianPython, [Self.script, "\(port)", "10000", "5", "\(daemon.pid)"], timeout: .seconds(240))
        #expect(r.status == 0, "\(r.stderr)")
        let rss = r.stdout.split(separator: "\n").compactMap { line in line.split(separator: " ").last.flatMap { Int($0) } }
        try #require(rss.count == 5, "\(r.stdout)")
        // The first round sizes the pools and tables; 40,000 more connections may not add more
        // than 4 MiB (a leak of the ~600 bytes per connection found before adds 24 MB).
        let growth = rss[4] - rss[0]
        #expect(growth <= 4 << 10, "RSS after each round (KiB): \(rss)")
    }
}
