import NIOCore
import NIOPosix
import STUNLite
import Testing
@testable import TURNLite

/// The relay's TCP keepalive on client connections: the options land on a real socket, and the named defaults
/// add up to what the documentation promises.
struct TURNStreamKeepaliveTests {
    @Test func theDefaultEndsAVanishedClientsConnectionWithinAMinute() {
        #expect(TURNStreamKeepalive.standard == .after(idle: .seconds(30)))
        #expect(TURNStreamKeepalive.standard.deadAfter == .seconds(60))
        #expect(TURNStreamKeepalive.after(idle: .seconds(2)).interval == .seconds(1), "at least one second between probes")
        #expect(TURNServer.Configuration(listenIP: IPAddress("127.0.0.1")!, server: TURNServerConfiguration(
            credentials: TURNCredentials(realm: "r", users: ["u": "p"]))).streamKeepalive == .standard)
    }

    @Test func theOptionsAreSetOnTheSocket() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        let client = try await ClientBootstrap(group: group).connect(to: server.localAddress!).get()
        defer { client.close(promise: nil) }
        let keepalive = TURNStreamKeepalive(idle: .seconds(7), interval: .seconds(3), probes: 4)
        let read = try await client.eventLoop.submit { () -> [Int] in
            let options = try #require(client.syncOptions)
            try keepalive.apply(to: options)
            return [try options.getOption(.socketOption(.so_keepalive)),
                    try options.getOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPIDLE))),
                    try options.getOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPINTVL))),
                    try options.getOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPCNT)))]
        }.get()
        #expect(read[0] != 0 && Array(read.dropFirst()) == [7, 3, 4], "\(read)")
    }
}
