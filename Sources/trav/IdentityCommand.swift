import ArgumentParser
import Foundation
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

        /// `trav identity show FILE [--public-key]`: prints the UID of a key file, or its public key.
        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Print the UID of a key file, or its public key.")

            @Argument(help: "Key file.") var file: String
            @Flag(help: "Print the base64 Ed25519 public key instead (what `trav camera --paired-viewers` takes).")
            var publicKey = false

            func run() async throws {
                let identity = try DeviceIdentity.load(from: file)
                print(publicKey ? identity.publicKey.rawRepresentation.base64EncodedString() : identity.deviceID.description)
            }
        }
    }
}
