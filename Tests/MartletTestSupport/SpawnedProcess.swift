import Foundation
#if canImport(Glibc)
import Glibc
import Synchronization
#endif

/// A child process for tests, started with `posix_spawn`. Foundation's `Process.run()` on
/// Linux reads `/proc/self/fd` with a 256-byte copy of each `dirent` and crashes now and then
/// when one sits at the end of a mapped page (swift-corelibs-foundation PR #5472; it took a
/// clean-clone CI run down here with SIGSEGV while ~1,400 test sockets were open).
///
/// The child starts with an empty signal mask and default dispositions (test threads block
/// some signals, and a child would inherit that), stdin from /dev/null, and no descriptor of
/// this process but its stdout and stderr. Its output is read as it comes (a full pipe never
/// blocks it) and kept until `finish`.
public final class SpawnedProcess: @unchecked Sendable {
    // Safe: `pid` is set once in init; the exit status and the output are only touched
    // under `lock`; the reader threads own their descriptors until they close them.
    public let pid: pid_t
    private let lock = NSLock()
    private var exitStatus: Int32?
    private var out: [UInt8] = []
    private var err: [UInt8] = []
    private let readers = DispatchGroup()

    public struct SpawnError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Starts `executable` (an absolute path) with `arguments`; with `captureOutput` false its
    /// stdout and stderr go to /dev/null.
    public init(_ executable: String, _ arguments: [String], captureOutput: Bool = true) throws {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0 else { throw SpawnError(description: "pipe: errno \(errno)") }
        guard pipe(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw SpawnError(description: "pipe: errno \(errno)")
        }
        // Close-on-exec (set a moment after pipe(); the children of other tests close every
        // descriptor above 2 anyway).
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if captureOutput {
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        // Descriptors without close-on-exec (sockets of other tests) stay out of the child,
        // which would otherwise keep their connections open after the test closes them.
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for arg in argv { free(arg) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0])
            close(errPipe[0])
            throw SpawnError(description: "posix_spawn \(executable): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
        read(outPipe[0], isStdout: true)
        read(errPipe[0], isStdout: false)
    }

    /// glibc's posix_spawn_file_actions_addclosefrom_np (2.34+), which Swift's Glibc module
    /// does not declare.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    private func read(_ fd: Int32, isStdout: Bool) {
        readers.enter()
        Thread.detachNewThread { [self] in
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                lock.lock()
                if isStdout { out.append(contentsOf: chunk[0..<n]) } else { err.append(contentsOf: chunk[0..<n]) }
                lock.unlock()
            }
            close(fd)
            readers.leave()
        }
    }

    /// The exit code, or the number of the signal that ended it (as Foundation reports it);
    /// nil while it runs.
    public var terminationStatus: Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            let signal = status & 0x7F
            exitStatus = signal == 0 ? (status >> 8) & 0xFF : signal
        }
        return exitStatus
    }

    public var isRunning: Bool { terminationStatus == nil }

    /// Blocks the calling thread until the process has exited.
    public func waitUntilExit() {
        while isRunning { usleep(2_000) }
    }

    public func kill(signal: Int32 = SIGKILL) {
        if isRunning { _ = Glibc.kill(pid, signal) }
    }

    /// What it wrote, once it has exited and closed its output.
    public func output() -> (stdout: String, stderr: String) {
        readers.wait()
        lock.lock()
        defer { lock.unlock() }
        return (String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    deinit {
        // Never leave a child running behind a finished test.
        if isRunning { _ = Glibc.kill(pid, SIGKILL) }
    }
}

/// The one thread test daemons (martletd, nats-server, mosquitto) are spawned from, alive as
/// long as the test process.
/// The kernel sends the parent-death signal when the spawning *thread* ends, and the
/// concurrency pool's threads end when they have been idle a few seconds: a daemon spawned
/// from one was killed (SIGKILL) in the middle of a test that waited quietly.
public final class SpawnThread: @unchecked Sendable {
    // @unchecked: `jobs` is read and written only under `condition`'s lock.
    public static let shared = SpawnThread()
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []

    private init() {
        let thread = Thread { [self] in
            while true {
                condition.lock()
                while jobs.isEmpty { condition.wait() }
                let job = jobs.removeFirst()
                condition.unlock()
                job()
            }
        }
        thread.name = "test-spawner"
        thread.start()
    }

    /// Runs `body` on the spawning thread and returns what it returned (or throws what it threw).
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<T, any Error>?>(nil)
        condition.lock()
        jobs.append {
            result.withLock { $0 = Result { try body() } }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()
        return try result.withLock { $0! }.get()
    }
}
