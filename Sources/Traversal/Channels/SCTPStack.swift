internal import CUsrsctp
import Foundation
import Synchronization

/// The process's one usrsctp stack (RFC 9260 SCTP in user space) in AF_CONN mode: it owns no sockets; every
/// association's packets leave through ``SCTPStack/output`` and come back in through
/// ``SCTPAssociation/input(_:)``, sealed inside the secure session as WebRTC seals them inside DTLS (RFC 8261).
///
/// usrsctp runs one timer thread for the whole process and calls our C callbacks from it and from inside
/// its own entry points. The callbacks therefore only look an association up by its key and hand the
/// work on (enqueue a packet, a message or a wake-up); they never call back into usrsctp.
enum SCTPStack {
    /// Associations by key (the key is also the AF_CONN address usrsctp hands back in callbacks).
    private static let table = Mutex<[UInt: SCTPAssociation]>([:])
    /// Packets of the initial congestion window and of the largest burst (RFC 6928's IW10, above RFC 9260 §7.2.1's).
    static let initialWindowPackets = 10
    /// The next key; never 0 (a null address).
    private static let nextKey = Atomic<UInt>(1)

    /// Starts usrsctp once, on first use.
    private static let started: Bool = {
        usrsctp_init(0, { addr, buffer, length, _, _ in
            guard let addr, let buffer else { return 0 }
            let key = UInt(bitPattern: addr)
            guard let association = SCTPStack.lookup(key) else { return 0 }
            association.emit(packet: Array(UnsafeRawBufferPointer(start: buffer, count: length)))
            return 0
        }, nil)
        // Explicit congestion notification needs IP header bits we do not carry; nothing listens for
        // stray packets (there are no raw sockets); chunks queued per association bounded higher than the
        // default 512 so a 4 MiB message of ~1 KB chunks fits.
        usrsctp_sysctl_set_sctp_ecn_enable(0)
        usrsctp_sysctl_set_sctp_blackhole(2)
        usrsctp_sysctl_set_sctp_max_chunks_on_queue(UInt32(SCTPAssociation.Configuration.maxChunksOnQueue))
        usrsctp_sysctl_set_sctp_delayed_sack_time_default(20)
        // RFC 9260 §7.2's congestion control (usrsctp's RFC 2581 module), not H-TCP or HSTCP: measured over a
        // 20 Mbit/s, 20 ms line, a 4 MiB transfer took 12 s at 1 % loss against H-TCP's 26–30 s (H-TCP's window
        // sat at 3–4 packets, and every retransmission timeout collapses it), 22–25 s at 5 % against 36–41 s,
        // and the same 3 s at 0 %.
        usrsctp_sysctl_set_sctp_default_cc_module(UInt32(SCTP_CC_RFC2581))
        // A deviation from RFC 9260 §7.2.1: the initial congestion window is ``initialWindowPackets`` packets, not
        // min(4·MTU, max(2·MTU, 4404 bytes)) (usrsctp's default, 3 packets, is below even that). A camera's first
        // keyframe (4–7 KB) then leaves in one flight instead of waiting a round trip for a SACK, which is what a viewer
        // waits for before its first picture. It is the window TCP may start with (RFC 6928's 10 segments) and the one
        // Chromium's own SCTP (dcSCTP, `cwnd_mtus_initial`) starts its data channels with. usrsctp caps the initial
        // window at the burst limit and cuts the window to in-flight + burst limit before each send, so the burst limit
        // rises to the same 10 packets (RFC 9002 §7.7 bounds a burst by the initial window too); retransmission
        // timeouts and losses still shrink the window as §7.2.3 says.
        usrsctp_sysctl_set_sctp_initial_cwnd(UInt32(initialWindowPackets))
        usrsctp_sysctl_set_sctp_max_burst_default(UInt32(initialWindowPackets))
        return true
    }()

    /// A fresh key, registered with usrsctp as an AF_CONN address (starts the stack on first use).
    static func newKey() -> UInt {
        _ = started
        let key = nextKey.add(1, ordering: .relaxed).oldValue
        usrsctp_register_address(UnsafeMutableRawPointer(bitPattern: key))
        return key
    }

    /// Makes `association` the one callbacks for `key` reach.
    static func insert(_ association: SCTPAssociation, key: UInt) {
        table.withLock { $0[key] = association }
    }

    /// Removes the association with `key`; later callbacks for it are ignored.
    static func unregister(_ key: UInt) {
        usrsctp_deregister_address(UnsafeMutableRawPointer(bitPattern: key))
        _ = table.withLock { $0.removeValue(forKey: key) }
    }

    /// The live association with `key`.
    static func lookup(_ key: UInt) -> SCTPAssociation? {
        table.withLock { $0[key] }
    }

    /// Associations alive in this process (for tests that check nothing leaks).
    static var liveCount: Int { table.withLock { $0.count } }
}
