import Foundation
import Logging
import Testing
import Traversal

/// One cloud value: STUN servers given by name resolve, literals pass, bad text is left out; the CA comes as PEM text or a file.
struct TravCloudTests {
    static let quiet = Logger(label: "trav.test") { _ in SwiftLogNoOpLogHandler() }

    @Test func serverTextSplitsIntoHostAndPort() {
        #expect(ServerName.split("cloud.example.com:3479", defaultPort: 3478)! == ("cloud.example.com", 3479))
        #expect(ServerName.split("cloud.example.com", defaultPort: 3478)! == ("cloud.example.com", 3478))
        #expect(ServerName.split("[2001:db8::1]:5349", defaultPort: 3478)! == ("2001:db8::1", 5349))
        #expect(ServerName.split("2001:db8::1", defaultPort: 3478)! == ("2001:db8::1", 3478))
        #expect(ServerName.split("host:port", defaultPort: 3478) == nil)
        #expect(ServerName.format(host: "2001:db8::1", port: 3478) == "[2001:db8::1]:3478")
    }

    @Test func namesResolveAndLiteralsPassThrough() async {
        let resolved = await ServerName.resolve(["localhost:3478", "192.0.2.7:3479", "[2001:db8::1]:3478", "bad:text"], logger: Self.quiet)
        #expect(resolved.count == 3, "\(resolved)")
        #expect(["127.0.0.1:3478", "[::1]:3478"].contains(resolved.first ?? ""), "\(resolved)")
        #expect(Array(resolved.dropFirst()) == ["192.0.2.7:3479", "[2001:db8::1]:3478"])
    }

    @Test func aNameThatDoesNotResolveIsLeftOut() async {
        // RFC 6761 §6.4: names under .invalid never resolve.
        let resolved = await ServerName.resolve(["stun.trav.invalid:3478", "192.0.2.7"], logger: Self.quiet)
        #expect(resolved == ["192.0.2.7:3478"])
    }

    @Test func theCloudsSTUNServerDefaultsToItsHost() {
        let cloud = TravCloud(host: "cloud.example.com", trust: .systemDefault)
        #expect(cloud.stunServers == ["cloud.example.com:3478"])
        #expect(cloud.signalling.port == CloudEndpoint.defaultPort)
        #expect(TravCloud(host: "::1", stunPort: 3000, trust: .systemDefault).stunServers == ["[::1]:3000"])
    }

    @Test func theCAComesFromAFileOrIsRefusedWithAReason() throws {
        let dir = NSTemporaryDirectory() + "trav-ca-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        try pem.write(toFile: "\(dir)/ca.pem", atomically: true, encoding: .utf8)
        #expect(try CloudEndpoint.Trust.pinnedCA(file: "\(dir)/ca.pem") == .pinnedCA(pem))
        try "junk".write(toFile: "\(dir)/junk.pem", atomically: true, encoding: .utf8)
        #expect(throws: CloudError.self) { try CloudEndpoint.Trust.pinnedCA(file: "\(dir)/junk.pem") }
        #expect(throws: CloudError.self) { try CloudEndpoint.Trust.pinnedCA(file: "\(dir)/missing.pem") }
    }

    @Test func aConnectorWithoutACloudSaysSo() async throws {
        let connector = Connector(configuration: .init(identity: .ephemeral(), strategies: [], logger: Self.quiet))
        let error = await #expect(throws: TraversalError.self) {
            _ = try await connector.connect(to: try DeviceID(DeviceIdentity.generate().deviceID.description), credential: .pairedKey)
        }
        #expect(error?.code == .cloud)
    }
}
