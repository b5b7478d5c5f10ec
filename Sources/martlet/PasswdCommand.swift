import ArgumentParser
import MartletAuth

#if canImport(Glibc)
import Glibc
#endif

/// `martlet passwd FILE USER`: adds or changes a user in a password file, like
/// mosquitto_passwd (and in its format, so either tool reads the other's files).
struct PasswdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passwd",
        abstract: "Add, change or delete a user in a martletd password file (mosquitto_passwd format).",
        discussion: """
            The password is asked twice on the terminal, read from the first line of standard \
            input when that is not a terminal, or given after USER with -b. Send martletd SIGHUP \
            to load the changed file.
            """
    )

    @Flag(name: .customShort("c"), help: "Create the file (overwriting an existing one).")
    var create = false

    @Flag(name: .customShort("b"), help: "Batch mode: the password is the argument after USER.")
    var batch = false

    @Flag(name: .customShort("D"), help: "Delete USER.")
    var delete = false

    @Option(name: .customShort("I"), help: "PBKDF2-SHA512 iterations.")
    var iterations = PasswordFile.defaultIterations

    @Argument(help: "The password file.")
    var file: String

    @Argument(help: "The user name.")
    var user: String

    @Argument(help: "The password (with -b only).")
    var password: String?

    func validate() throws {
        if user.isEmpty || user.contains(":") { throw ValidationError("the user name must not be empty or contain ':'") }
        if batch != (password != nil) && !delete { throw ValidationError(batch ? "-b needs a password after USER" : "a password argument needs -b") }
        if iterations < 1 { throw ValidationError("-I must be at least 1") }
    }

    func run() throws {
        var passwords = PasswordFile()
        if !create {
            do {
                passwords = try PasswordFile(parsing: ConfigurationError.readTextFile(file, key: "password file"), source: file)
            } catch {
                throw ValidationError("\(error) (use -c to create it)")
            }
        }
        if delete {
            guard passwords.entries[user] != nil else { throw ValidationError("user \(user) is not in \(file)") }
            passwords.remove(user: user)
        } else {
            let secret = try password ?? Self.askPassword()
            passwords.set(user: user, password: secret, iterations: iterations)
        }
        try Self.write(passwords.rendered, to: file)
    }

    static func askPassword() throws -> String {
        if isatty(0) == 0 {
            guard let line = readLine(strippingNewline: true), !line.isEmpty else { throw ValidationError("no password on standard input") }
            return line
        }
        guard let first = getpass("Password: ").map({ String(cString: $0) }),
              let second = getpass("Reenter password: ").map({ String(cString: $0) }) else {
            throw ValidationError("cannot read the password")
        }
        guard first == second else { throw ValidationError("passwords do not match") }
        guard !first.isEmpty else { throw ValidationError("empty password") }
        return first
    }

    /// Writes a temporary file readable by the owner only, then renames it over `path`.
    static func write(_ text: String, to path: String) throws {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw ValidationError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count, rename(temporary, path) == 0 else {
            throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}
