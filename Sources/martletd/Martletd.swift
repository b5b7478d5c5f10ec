import ArgumentParser

@main
struct Martletd: ParsableCommand {}
