import Crypto
import Foundation

/// A browser's offer the camera admitted: its WebRTC session description, after the browser proved access
/// through the cloud (``AccessChallenge``) under the same checks and limits as a native viewer.
public struct BrowserOffer: Sendable {
    /// The introduction it came with.
    public var requestID: String
    /// The browser's offer (RFC 8866 SDP), at most ``PeerOffer/maxSessionDescriptionLength`` bytes.
    public var sessionDescription: String
    /// The key the browser signed its access proof with.
    public var viewerKey: Curve25519.Signing.PublicKey

    /// An offer with these parts.
    public init(requestID: String, sessionDescription: String, viewerKey: Curve25519.Signing.PublicKey) {
        self.requestID = requestID
        self.sessionDescription = sessionDescription
        self.viewerKey = viewerKey
    }
}

/// What answers browsers on a camera (the WebRTC module's `BrowserViewerSession`, fed by the camera's
/// media): a ``Connector`` without one declines every browser, as it declines any introduction it cannot serve.
public protocol BrowserViewerAnswering: Sendable {
    /// Starts a session for `offer` and returns its answer description (with the camera's identity
    /// binding); the session then lives on its own and ends when the browser goes away.
    func answer(_ offer: BrowserOffer) async throws -> String
}

extension Connector {
    /// Answers an introduction whose offer is a browser's (``PeerOffer/sessionDescription``): access first,
    /// exactly as for a native viewer (the proof through the cloud, ``SharedAccess``), then the
    /// ``ConnectorConfiguration/browserViewers`` answer sealed to the browser like any answer.
    func answerBrowser(_ intro: any IncomingIntroduction, description: String, access: SharedAccess) async throws {
        guard let answering = configuration.browserViewers else {
            await intro.decline()
            throw TraversalError(code: .noPath, detail: "a browser asked, and this camera answers no browsers")
        }
        // A browser's credential only ever comes as a proof: signalling without one (a LAN question) is declined.
        guard let claim = try await intro.requestAccess() else {
            await intro.decline()
            throw TraversalError(code: .accessDenied, detail: "a browser's offer without an access proof")
        }
        if case .failure(let e) = await access.check(claim.credential, viewer: claim.viewerKey,
                                                     source: intro.vouchedRequester ?? .unidentified) {
            await intro.refuse(e.refusal)
            throw TraversalError(code: e.refusal.traversalCode, detail: "access proof refused: \(e.detail)")
        }
        let answer: String
        do {
            answer = try await answering.answer(BrowserOffer(requestID: intro.requestID, sessionDescription: description,
                                                             viewerKey: claim.viewerKey))
        } catch {
            await intro.decline()
            throw TraversalError(code: .noPath, detail: "the browser's offer was not answered: \(error)")
        }
        try await intro.accept(answer: PeerOffer(identityKey: configuration.identity.publicKey.rawRepresentation,
                                                 candidates: [], strategies: [], sessionDescription: answer))
    }
}
