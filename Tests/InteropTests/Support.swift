import Foundation
import Logging
import MartletBroker
import Testing
import MartletTestSupport
import Synchronization

/// A finished process: exit status and what it printed.
struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// A child process started from a test; stopped by the test or by its own flags (-C, -W).
final class ChildProcess: Sendable {
    let process: SpawnedProcess
    let name: String

    /// Started through a one-line exec that asks the kernel to kill the child if the test
    /// process dies first (PR_SET_PDEATHSIG), so no broker outlives an interrupted test run.
    /// (`SpawnedProcess` already gives it a clean signal mask and default dispositions, which
    /// mosquitto_sub's -W needs.)
    static let execWithParentDeathSignal =
        "import ctypes,os,signal,sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); os.execv(sys.argv[1], sys.argv[1:])"

    init(_ executable: String, _ arguments: [String]) throws {
        process = try SpawnThread.shared.run {
            try SpawnedProcess(debianPython, ["-c", Self.execWithParentDeathSignal, executable] + arguments)
        }
        name = URL(fileURLWithPath: executable).lastPathComponent
    }

    /// Waits for the process to exit by itself within `timeout`, else kills it and fails.
    func finish(timeout: Duration = .seconds(10)) async throws -> ProcessResult {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill()
                while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
                let result = collect()
                Issue.record("\(name) did not exit in time; stdout: \(result.stdout) stderr: \(result.stderr)")
                return result
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return collect()
    }

    /// The child's pid (the exec wrapper keeps it for the program it starts).
    var pid: Int32 { process.pid }

    var isRunning: Bool { process.isRunning }

    func kill(signal: Int32 = SIGKILL) {
        process.kill(signal: signal)
    }

    private func collect() -> ProcessResult {
        let (o, e) = process.output()
        return ProcessResult(status: process.terminationStatus ?? -1, stdout: o, stderr: e)
    }
}

func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(10)) async throws -> ProcessResult {
    try await ChildProcess(executable, arguments).finish(timeout: timeout)
}

/// Waits until the broker holds at least `count` subscriptions (a subscriber process is ready).
func waitForSubscriptions(_ broker: MQTTBroker, _ count: Int, timeout: Duration = .seconds(15)) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await broker.statistics().subscriptions < count {
        if ContinuousClock.now > deadline {
            Issue.record("subscriber did not subscribe in time")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

let mosquittoPub = "/usr/bin/mosquitto_pub"
let mosquittoSub = "/usr/bin/mosquitto_sub"
/// Debian's python3, which has python3-paho-mqtt (a pyenv python on PATH may not).
let debianPython = "/usr/bin/python3"

/// A loopback port for a test daemon, random so that overlapping test runs do not collide,
/// and below the ephemeral range (32768+) that outgoing test connections take ports from.
/// A port below the kernel's ephemeral range that nothing is bound to right now (tried
/// with a bind), so two tests running side by side rarely pick the same one.
func randomTestPort() -> Int {
    while true {
        let port = Int.random(in: 11_000...19_999)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let free = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        close(fd)
        if free { return port }
    }
}

