import ArgumentParser
import Traversal

extension Trav {
    /// `trav identity`: create and inspect device key files.
    struct IdentityCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "identity",
            abstract: "Create or show a device identity (key file and UID).",
            subcommands: [New.self, Show.self])

        /// `trav identity new --out FILE`: writes a new key file (mode 0600) and prints its UID.
        struct New: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Generate a new identity, write its key file and print its UID.")

            @Option(help: "Key file to create (refuses to overwrite).") var out: String

            func run() async throws {
                let identity = DeviceIdentity.generate()
                try identity.save(to: out)
                print(identity.deviceID)
            }
        }

        /// `trav identity show FILE`: prints the UID of a key file.
        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Print the UID of a key file.")

            @Argument(help: "Key file.") var file: String

            func run() async throws {
                print(try DeviceIdentity.load(from: file).deviceID)
            }
        }
    }
}
