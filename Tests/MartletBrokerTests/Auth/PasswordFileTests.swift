import MartletAuth
import MartletBroker
import MartletMQTT
import Testing

@Suite struct PasswordFileTests {
    /// Made by Debian's `mosquitto_passwd -c -b FILE alice secret` (mosquitto 2.0).
    static let mosquittoLine = "alice:$7$101$YwGMlIZxK0e2SUxW$Zpf7CcH1/gmqbP5z9Sknezbtj1KzxrebHUKAq/QzeKtKjSbHxXzPqaao/vTlMh/yEb5M4XTyWaklIkF6VeOPUg==\n"

    @Test("a mosquitto_passwd line verifies its password and no other")
    func readsMosquittoFormat() throws {
        let file = try PasswordFile(parsing: "# users\n\n" + Self.mosquittoLine, source: "pw")
        #expect(file.verify(user: "alice", password: Array("secret".utf8)))
        #expect(!file.verify(user: "alice", password: Array("Secret".utf8)))
        #expect(!file.verify(user: "bob", password: Array("secret".utf8)))
    }

    @Test("set: a fresh salt each time, the file round-trips, remove deletes")
    func setAndRender() throws {
        var file = PasswordFile()
        file.set(user: "bob", password: "hunter2", iterations: 1000)
        file.set(user: "carol", password: "hunter2", iterations: 1000)
        #expect(file.entries["bob"]!.salt != file.entries["carol"]!.salt)
        #expect(file.entries["bob"]!.hash != file.entries["carol"]!.hash)
        let reread = try PasswordFile(parsing: file.rendered, source: "pw")
        #expect(reread == file)
        #expect(reread.verify(user: "carol", password: Array("hunter2".utf8)))
        file.remove(user: "bob")
        #expect(file.order == ["carol"])
        #expect(file.rendered.hasPrefix("carol:$7$1000$"))
    }

    @Test("bad lines name the line")
    func badLines() {
        #expect(throws: ConfigurationError(source: "pw", key: "password_file", line: 2, message: "expected user:hash")) {
            try PasswordFile(parsing: Self.mosquittoLine + "nocolon\n", source: "pw")
        }
        #expect(throws: ConfigurationError.self) { try PasswordFile(parsing: "bob:$6$abc$def\n", source: "pw") }
        #expect(throws: ConfigurationError.self) { try PasswordFile(parsing: "bob:$7$10$!!!$def\n", source: "pw") }
    }
}
