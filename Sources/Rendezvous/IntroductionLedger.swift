import SourceLimits
import Traversal

/// What the cloud lets each requester and each camera hold at once: pending introductions and
/// relay grants, besides the global cap.
///
/// ```
///  introduce ──► admit(requester) ──► look up ──► admit(camera) ──► pending (+ grant)
///                  refused: overloaded              refused: unavailable, like an unknown UID
///  answer ──► started: pending freed; the grant stays held until it expires
///  decline / timeout / camera or viewer gone ──► ended: pending and grant freed at once
/// ```
///
/// A grant lets its holders allocate on the relay until it expires (``RelayGrantIssuer/lifetime``),
/// so one that led to a start is held until then; one whose introduction never started is freed
/// with it. Sans-I/O: time comes in as `now`.
struct IntroductionLedger {
    /// The bounds (``RendezvousServer/Configuration``'s).
    struct Limits: Sendable, Hashable {
        var maxPending: Int
        var maxPendingPerRequester: Int
        var maxPendingPerCamera: Int
        var maxGrantsPerRequester: Int
        var maxGrantsPerCamera: Int
    }

    /// Why an introduction was not admitted.
    enum Refusal: Sendable, Hashable {
        /// The requester holds ``Limits/maxPendingPerRequester`` pending introductions.
        case requesterPending
        /// The requester holds ``Limits/maxGrantsPerRequester`` unexpired relay grants.
        case requesterGrants
        /// ``Limits/maxPending`` introductions are pending across the cloud.
        case full
        /// The camera has ``Limits/maxPendingPerCamera`` pending introductions.
        case cameraPending
        /// The camera's introductions hold ``Limits/maxGrantsPerCamera`` unexpired relay grants.
        case cameraGrants
    }

    private struct Entry {
        let requester: SourceAddressKey
        let camera: DeviceID
        var pending: Bool
        var grantExpires: ContinuousClock.Instant?
    }

    let limits: Limits
    private var entries: [String: Entry] = [:]
    private var pendingTotal = 0
    private var pendingPerRequester = Counts<SourceAddressKey>()
    private var pendingPerCamera = Counts<DeviceID>()
    private var grantsPerRequester = Counts<SourceAddressKey>()
    private var grantsPerCamera = Counts<DeviceID>()

    /// An empty ledger.
    init(limits: Limits) { self.limits = limits }

    /// Introductions pending now.
    var pending: Int { pendingTotal }
    /// Pending introductions of `camera`.
    func pending(for camera: DeviceID) -> Int { pendingPerCamera[camera] }
    /// Unexpired grants `requester` holds (as of the last ``expireGrants(now:)``).
    func grants(for requester: SourceAddressKey) -> Int { grantsPerRequester[requester] }

    /// Whether `requester` may ask at all (checked before the look-up, so it tells nothing about the UID).
    func checkRequester(_ requester: SourceAddressKey, wantsGrant: Bool) -> Refusal? {
        if pendingPerRequester[requester] >= limits.maxPendingPerRequester { return .requesterPending }
        if wantsGrant, grantsPerRequester[requester] >= limits.maxGrantsPerRequester { return .requesterGrants }
        if pendingTotal >= limits.maxPending { return .full }
        return nil
    }

    /// Records introduction `requestID` from `requester` to `camera` (with a grant valid until `grantExpires`)
    /// unless a bound refuses it.
    mutating func admit(
        _ requestID: String, requester: SourceAddressKey, camera: DeviceID, grantExpires: ContinuousClock.Instant?
    ) -> Refusal? {
        if let refusal = checkRequester(requester, wantsGrant: grantExpires != nil) { return refusal }
        if pendingPerCamera[camera] >= limits.maxPendingPerCamera { return .cameraPending }
        if grantExpires != nil, grantsPerCamera[camera] >= limits.maxGrantsPerCamera { return .cameraGrants }
        guard entries[requestID] == nil else { return .full }
        entries[requestID] = Entry(requester: requester, camera: camera, pending: true, grantExpires: grantExpires)
        pendingTotal += 1
        pendingPerRequester.add(requester)
        pendingPerCamera.add(camera)
        if grantExpires != nil {
            grantsPerRequester.add(requester)
            grantsPerCamera.add(camera)
        }
        return nil
    }

    /// Both sides got `start`: the pending slot is freed; a grant stays held until it expires.
    mutating func started(_ requestID: String) {
        guard var entry = entries[requestID], entry.pending else { return }
        entry.pending = false
        freePending(entry)
        if entry.grantExpires == nil {
            entries[requestID] = nil
        } else {
            entries[requestID] = entry
        }
    }

    /// The introduction ended without a start (declined, timed out, a side gone): everything it held is freed.
    mutating func ended(_ requestID: String) {
        guard let entry = entries[requestID], entry.pending else { return }
        entries[requestID] = nil
        freePending(entry)
        freeGrant(entry)
    }

    /// Frees the grants that expired by `now`.
    mutating func expireGrants(now: ContinuousClock.Instant) {
        for (requestID, entry) in entries where !entry.pending {
            guard let expires = entry.grantExpires, expires <= now else { continue }
            entries[requestID] = nil
            freeGrant(entry)
        }
    }

    private mutating func freePending(_ entry: Entry) {
        pendingTotal -= 1
        pendingPerRequester.remove(entry.requester)
        pendingPerCamera.remove(entry.camera)
    }

    private mutating func freeGrant(_ entry: Entry) {
        guard entry.grantExpires != nil else { return }
        grantsPerRequester.remove(entry.requester)
        grantsPerCamera.remove(entry.camera)
    }
}

/// Counts per key that forget a key at zero, so memory follows what is held.
private struct Counts<Key: Hashable> {
    private var counts: [Key: Int] = [:]

    subscript(key: Key) -> Int { counts[key, default: 0] }

    mutating func add(_ key: Key) { counts[key, default: 0] += 1 }

    mutating func remove(_ key: Key) {
        let left = counts[key, default: 0] - 1
        counts[key] = left > 0 ? left : nil
    }
}
