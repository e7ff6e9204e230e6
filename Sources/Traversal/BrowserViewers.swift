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
    /// Gets ready for introduction `requestID`'s browser while it proves access (binds sockets, asks STUN for their
    /// mappings), so the answer need not wait for that after the proof; returns at once. What it holds is released by
    /// ``answer(_:)`` (which uses it) or ``cancel(requestID:)``, and is bounded by the answerer's own limits.
    func prepare(requestID: String) async
    /// Releases what ``prepare(requestID:)`` holds for an introduction that will not be answered.
    func cancel(requestID: String) async
    /// Starts a session for `offer` and returns its answer description (with the camera's identity
    /// binding); the session then lives on its own and ends when the browser goes away.
    func answer(_ offer: BrowserOffer) async throws -> String
}

extension BrowserViewerAnswering {
    /// Nothing to get ready: ``answer(_:)`` does it all.
    public func prepare(requestID: String) async {}
    /// Nothing held.
    public func cancel(requestID: String) async {}
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
        // The answerer binds its sockets and asks for their mappings while the browser proves access; an introduction
        // that ends before its answer releases them.
        await answering.prepare(requestID: intro.requestID)
        let claim: ViewerAccessClaim
        do {
            // A browser's credential only ever comes as a proof: signalling without one (a LAN question) is declined.
            guard let proved = try await intro.requestAccess() else {
                await intro.decline()
                throw TraversalError(code: .accessDenied, detail: "a browser's offer without an access proof")
            }
            if case .failure(let e) = await access.check(proved.credential, viewer: proved.viewerKey,
                                                         source: intro.vouchedRequester ?? .unidentified) {
                await intro.refuse(e.refusal)
                throw TraversalError(code: e.refusal.traversalCode, detail: "access proof refused: \(e.detail)")
            }
            claim = proved
        } catch {
            await answering.cancel(requestID: intro.requestID)
            throw error
        }
        let answer: String
        do {
            // The answerer takes what it prepared for this introduction, or releases it when it fails.
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
