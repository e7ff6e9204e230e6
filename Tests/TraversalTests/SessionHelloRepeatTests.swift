import PeerTestSupport
import Testing
@testable import Traversal

/// The viewer repeats its hello (the same sealed frame) until the camera's welcome arrives; the camera must
/// answer every copy, or one lost welcome leaves the viewer waiting out its access timeout.
struct SessionHelloRepeatTests {
    @Test func theCameraAnswersEveryRepeatOfTheHelloWithAWelcome() async throws {
        let (viewerEnd, cameraEnd, _) = MemoryLink.pair()
        let k1 = NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
        let k2 = NoiseCipherState(key: [UInt8](repeating: 2, count: 32))
        var viewer = SecureDatagramChannel(send: k1, receive: k2)
        let hello = [PeerWire.sealed] + (try viewer.seal([SessionMessageType.hello.rawValue] + Array(#"{"kind":"paired-key"}"#.utf8)))
        // As the camera's access check leaves it: the hello opened (its counter seen), the first welcome sent.
        var camera = SecureDatagramChannel(send: k2, receive: k1)
        _ = try camera.open(Array(hello.dropFirst()))
        let welcome = Array("ok".utf8)
        let report = ConnectionReport(path: "memory", route: nil, setupMs: 0, requestID: nil, attempts: [])
        let connection = PeerConnection(role: .camera, report: report, peerIdentity: DeviceIdentity.generate().publicKey,
                                        transport: cameraEnd, channel: camera, replayOnHello: (hello, welcome), keepalive: nil)
        // That first welcome was lost: the viewer sends its hello again, twice.
        try await viewerEnd.send(hello)
        try await viewerEnd.send(hello)
        let receiving = viewer
        let welcomes = try await withDeadline(.seconds(20)) {
            var opener = receiving
            var count = 0
            while count < 2 {
                let frame = try await viewerEnd.receive()
                guard frame.first == PeerWire.sealed, let plain = try? opener.open(Array(frame.dropFirst())) else { continue }
                if plain.first == SessionMessageType.welcome.rawValue && Array(plain.dropFirst()) == welcome { count += 1 }
            }
            return count
        }
        #expect(welcomes == 2)
        await connection.close()
    }
}
