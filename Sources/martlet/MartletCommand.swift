import ArgumentParser

@main
struct MartletCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "martlet",
        abstract: "Martlet MQTT command line tools.",
        subcommands: [PubCommand.self, SubCommand.self, BenchCommand.self, PasswdCommand.self, StoreCommand.self, AdminCommand.self]
    )
}
