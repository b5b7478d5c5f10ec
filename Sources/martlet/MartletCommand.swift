import ArgumentParser

@main
struct MartletCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "martlet",
        abstract: "Martlet MQTT command line tools."
    )
}
