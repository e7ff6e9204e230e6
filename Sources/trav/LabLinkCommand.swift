import ArgumentParser
import Foundation
import NATLab

#if canImport(Glibc)
import Glibc
#endif

extension Trav {
    /// `trav lab-link`: the NAT lab's delay line between two interfaces (`natlab.sh` starts it in a
    /// site's link namespace; hidden from help). Frames read on one interface are written to the
    /// other after the delay ± jitter, in order (but for a share held back to be overtaken), through AF_PACKET sockets; loss and rate are the
    /// kernel's (nft, tbf) on the interfaces' egress.
    struct LabLinkCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "lab-link",
            abstract: "Forward frames between two interfaces after a delay (NAT lab internals).",
            shouldDisplay: false)

        @Option(help: "One interface (the site's side).") var a: String
        @Option(help: "The other interface (the internet's side).") var b: String
        @Option(help: "One-way delay in milliseconds, each direction.") var delayMs: Int = 0
        @Option(help: "The most the delay varies either way, in milliseconds (order is kept).") var jitterMs: Int = 0
        @Option(help: "Per mille of frames held back 5 ms more, so the ones behind overtake them (0...1000).") var reorderPermille: Int = 0
        @Option(help: "The most frames waiting per direction; more are dropped.") var queueFrames: Int = 4096

        func validate() throws {
            guard (0...1000).contains(reorderPermille) else { throw ValidationError("--reorder-permille must be 0...1000") }
            guard (0...10_000).contains(delayMs), (0...10_000).contains(jitterMs) else {
                throw ValidationError("--delay-ms and --jitter-ms must be 0...10000")
            }
            guard (1...1_000_000).contains(queueFrames) else { throw ValidationError("--queue-frames must be 1...1000000") }
            guard a != b else { throw ValidationError("--a and --b must differ") }
        }

        func run() throws {
            #if os(Linux)
            let sockets = [try PacketSocket(interface: a), try PacketSocket(interface: b)]
            let delay = Duration.milliseconds(delayMs), jitter = Duration.milliseconds(jitterMs)
            // lines[i] holds frames read on sockets[i], bound for the other one.
            var lines = [LinkDelayLine<[UInt8]>](repeating: LinkDelayLine(delay: delay, jitter: jitter, capacity: queueFrames),
                                                 count: 2)
            FileHandle.standardOutput.write(Data("forwarding \(a) <-> \(b) delay \(delayMs) ms jitter \(jitterMs) ms reorder \(reorderPermille) ‰\n".utf8))
            var buffer = [UInt8](repeating: 0, count: PacketSocket.frameCapacity)
            var random = SystemRandomNumberGenerator()
            while true {
                let now = Self.monotonicNanoseconds()
                let next = lines.compactMap(\.nextRelease).min()
                let wait = next.map { $0 > now ? $0 - now : 0 } ?? 1_000_000_000
                try PacketSocket.waitReadable(sockets, nanoseconds: min(wait, 1_000_000_000))
                for (side, socket) in sockets.enumerated() {
                    // Bounded per wake-up, so one busy direction cannot starve the other's releases.
                    for _ in 0..<256 {
                        guard let length = try socket.receive(into: &buffer) else { break }
                        let draw = jitterMs == 0 ? 0 : Double.random(in: -1...1, using: &random)
                        let held = reorderPermille > 0 && Int.random(in: 0..<1000, using: &random) < reorderPermille
                        lines[side].enqueue(Array(buffer[0..<length]), now: Self.monotonicNanoseconds(), draw: draw, heldBack: held)
                    }
                }
                let sent = Self.monotonicNanoseconds()
                for side in 0..<2 {
                    while let frame = lines[side].dequeue(now: sent) { try sockets[1 - side].send(frame) }
                }
            }
            #else
            throw ValidationError("lab-link needs Linux (AF_PACKET)")
            #endif
        }

        private static func monotonicNanoseconds() -> UInt64 {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        }
    }
}

#if os(Linux)
/// An AF_PACKET socket bound to one interface: whole Ethernet frames in and out, each behind a
/// virtio-net header so checksum-offloaded and GSO frames cross intact (packet(7), PACKET_VNET_HDR).
private struct PacketSocket {
    // linux/if_packet.h and linux/if_ether.h, which Glibc's module does not export.
    private static let solPacket: Int32 = 263
    private static let packetAddMembership: Int32 = 1
    private static let packetMRPromisc: UInt16 = 1
    private static let packetOutgoing: UInt8 = 4
    private static let packetVnetHdr: Int32 = 15
    private static let packetIgnoreOutgoing: Int32 = 23
    private static let ethPAll: UInt16 = 0x0003

    /// The largest frame (a GSO frame up to 64 KiB) plus its virtio-net header.
    static let frameCapacity = 65_536 + 128

    /// struct sockaddr_ll.
    private struct LinkLayerAddress {
        var family: UInt16 = UInt16(AF_PACKET)
        var protocolNumber: UInt16 = PacketSocket.ethPAll.bigEndian
        var interfaceIndex: Int32 = 0
        var hardwareType: UInt16 = 0
        var packetType: UInt8 = 0
        var addressLength: UInt8 = 0
        var address: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0)
    }

    /// struct packet_mreq.
    private struct Membership {
        var interfaceIndex: Int32
        var type: UInt16
        var addressLength: UInt16 = 0
        var address: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0)
    }

    let descriptor: Int32
    let interface: String

    init(interface: String) throws {
        self.interface = interface
        let index = Int32(if_nametoindex(interface))
        guard index > 0 else { throw ValidationError("no interface '\(interface)' here") }
        descriptor = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                            Int32(Self.ethPAll.bigEndian))
        guard descriptor >= 0 else { throw Self.failure("socket(AF_PACKET) for \(interface)") }
        try option(Self.solPacket, Self.packetVnetHdr, Int32(1), "PACKET_VNET_HDR")
        _ = try? option(Self.solPacket, Self.packetIgnoreOutgoing, Int32(1), "PACKET_IGNORE_OUTGOING")   // Linux 4.20+
        _ = try? option(SOL_SOCKET, SO_RCVBUFFORCE, Int32(8 << 20), "SO_RCVBUFFORCE")
        _ = try? option(SOL_SOCKET, SO_SNDBUFFORCE, Int32(8 << 20), "SO_SNDBUFFORCE")
        var address = LinkLayerAddress(interfaceIndex: index)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<LinkLayerAddress>.size))
            }
        }
        guard bound == 0 else { throw Self.failure("bind to \(interface)") }
        // Frames for other MAC addresses too: the link is a wire, not a host.
        try option(Self.solPacket, Self.packetAddMembership, Membership(interfaceIndex: index, type: Self.packetMRPromisc),
                   "PACKET_MR_PROMISC")
    }

    private func option<T: BitwiseCopyable>(_ level: Int32, _ name: Int32, _ value: T, _ label: String) throws {
        let status = withUnsafeBytes(of: value) { setsockopt(descriptor, level, name, $0.baseAddress, socklen_t($0.count)) }
        guard status == 0 else {
            throw Self.failure("\(label) on \(interface)")
        }
    }

    /// The next frame that arrived on the interface (header included) into `buffer`; nil when none waits.
    func receive(into buffer: inout [UInt8]) throws -> Int? {
        while true {
            var from = LinkLayerAddress()
            var length = socklen_t(MemoryLayout<LinkLayerAddress>.size)
            let count = buffer.withUnsafeMutableBytes { bytes in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(descriptor, bytes.baseAddress, bytes.count, 0, $0, &length)
                    }
                }
            }
            if count < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
                if errno == EINTR { continue }
                throw Self.failure("receive on \(interface)")
            }
            // Frames this socket itself wrote come back as outgoing without PACKET_IGNORE_OUTGOING.
            if from.packetType == Self.packetOutgoing { continue }
            return count
        }
    }

    /// Writes `frame` (header included) to the interface; a full queue below drops it, as a wire would.
    func send(_ frame: [UInt8]) throws {
        let sent = frame.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, 0) }
        guard sent < 0 else { return }
        switch errno {
        case EAGAIN, EWOULDBLOCK, ENOBUFS, EMSGSIZE, EINTR: return
        default: throw Self.failure("send on \(interface)")
        }
    }

    /// Blocks until one of `sockets` is readable or `nanoseconds` pass (rounded up to whole milliseconds).
    static func waitReadable(_ sockets: [PacketSocket], nanoseconds: UInt64) throws {
        var descriptors = sockets.map { pollfd(fd: $0.descriptor, events: Int16(POLLIN), revents: 0) }
        let ready = poll(&descriptors, nfds_t(descriptors.count), Int32((nanoseconds + 999_999) / 1_000_000))
        guard ready >= 0 || errno == EINTR else { throw failure("ppoll") }
        for entry in descriptors where entry.revents & Int16(POLLERR | POLLNVAL) != 0 {
            throw ValidationError("interface error on descriptor \(entry.fd)")
        }
    }

    private static func failure(_ what: String) -> ValidationError {
        ValidationError("\(what): \(String(cString: strerror(errno)))")
    }
}
#endif
