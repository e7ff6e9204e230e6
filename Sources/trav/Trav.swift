import ArgumentParser
import Foundation
import Logging

/// The trav command-line tool: NAT diagnostics, a cloud, cameras and viewers.
@main
struct Trav: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trav",
        abstract: "NAT traversal toolkit: reach a camera by its ID, directly when the network allows.",
        subcommands: [DemoCommand.self, ProbeCommand.self, STUNServerCommand.self, STUNCommand.self, CloudCommand.self,
                      IdentityCommand.self, CameraCommand.self, ConnectCommand.self, RelayCommand.self, CompareCommand.self,
                      LabLinkCommand.self, BenchMediaCommand.self])
}

/// Options every command shares.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .warning

    /// Bootstraps logging to standard error once, at the given level, and returns a logger.
    func logger(_ label: String) -> Logger {
        LoggingBootstrapOnce.run(level: logLevel)
        return Logger(label: label)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

enum LoggingBootstrapOnce {
    nonisolated(unsafe) private static var done = false
    static func run(level: Logger.Level) {
        guard !done else { return }
        done = true
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}
