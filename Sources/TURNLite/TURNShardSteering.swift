import NIOCore
import STUNLite

#if canImport(Glibc)
import Glibc
#endif

/// Which shard of a relay serves a client: the kernel decides, per packet and per connection, with a
/// classic BPF program on the listeners' `SO_REUSEPORT` group (`SO_ATTACH_REUSEPORT_CBPF`, Linux ≥ 4.5),
/// from the client's source address alone: an IPv4 address, or the /64 of an IPv6 address.
///
/// So everything from one source — all its ports, UDP and TCP alike — lands on one shard, and the limits
/// keyed by source (`SourceAddressKey`: the 401/438 challenge limiter, EVEN-PORT reservations taken by
/// the RTCP socket of the same host) hold in the shard without a lock. Without steering the kernel would
/// hash the whole 4-tuple, and a client could spread its challenges over every shard by changing ports.
///
/// The program reads the network header (`SKF_NET_OFF`), so it serves IPv4, IPv6 and IPv4 packets on an
/// IPv6 socket alike: `h = w ^ (w >> 16)`, shard `h % shards`, where `w` is the IPv4 source address, or the
/// two 32-bit words of the IPv6 source's /64 XORed. ``shard(of:shards:)`` computes the same in Swift, for
/// connections handed over by another listener (``TURNServer/adoptStream(_:transport:)``).
public enum TURNShardSteering {
    /// The shard `ip` is steered to among `shards`.
    public static func shard(of ip: IPAddress, shards: Int) -> Int {
        guard shards > 1 else { return 0 }
        let word: UInt32
        switch ip {
        case .v4(let a):
            word = a
        case .v6(let high, let low) where high == 0 && low >> 32 == 0xFFFF:
            word = UInt32(truncatingIfNeeded: low)
        case .v6(let high, _):
            word = UInt32(truncatingIfNeeded: high >> 32) ^ UInt32(truncatingIfNeeded: high)
        }
        return Int((word ^ (word >> 16)) % UInt32(shards))
    }

    /// One classic BPF instruction (`struct sock_filter`, linux/filter.h).
    struct Instruction {
        var code: UInt16
        var jt: UInt8
        var jf: UInt8
        var k: UInt32
    }

    /// A classic BPF program (`struct sock_fprog`, linux/filter.h); `filter` outlives the `setsockopt` that copies it.
    struct Program: @unchecked Sendable {
        var length: UInt16
        var filter: UnsafePointer<Instruction>
    }

    /// `SKF_NET_OFF`: loads relative to the network header (linux/filter.h).
    static let networkOffset: UInt32 = 0xFFF0_0000
    /// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h).
    static let attachReusePortCBPF: SocketOptionName = 51

    /// The steering program for `shards` sockets (see the type's description for what it computes).
    static func program(shards: Int) -> [Instruction] {
        let ldb: UInt16 = 0x30, ldw: UInt16 = 0x20, tax: UInt16 = 0x07, rshK: UInt16 = 0x74
        let xorX: UInt16 = 0xAC, modK: UInt16 = 0x94, jeqK: UInt16 = 0x15, ja: UInt16 = 0x05, retA: UInt16 = 0x16
        let net = networkOffset
        return [
            Instruction(code: ldb, jt: 0, jf: 0, k: net),            // 0: A = first byte of the IP header
            Instruction(code: rshK, jt: 0, jf: 0, k: 4),             // 1: A = IP version
            Instruction(code: jeqK, jt: 0, jf: 2, k: 4),             // 2: IPv4 → 3, else → 5
            Instruction(code: ldw, jt: 0, jf: 0, k: net + 12),       // 3: A = IPv4 source
            Instruction(code: ja, jt: 0, jf: 0, k: 4),               // 4: → 9
            Instruction(code: ldw, jt: 0, jf: 0, k: net + 8),        // 5: A = IPv6 source, bits 0–31
            Instruction(code: tax, jt: 0, jf: 0, k: 0),              // 6: X = A
            Instruction(code: ldw, jt: 0, jf: 0, k: net + 12),       // 7: A = IPv6 source, bits 32–63
            Instruction(code: xorX, jt: 0, jf: 0, k: 0),             // 8: A ^= X
            Instruction(code: tax, jt: 0, jf: 0, k: 0),              // 9: X = A
            Instruction(code: rshK, jt: 0, jf: 0, k: 16),            // 10: A >>= 16
            Instruction(code: xorX, jt: 0, jf: 0, k: 0),             // 11: A ^= X
            Instruction(code: modK, jt: 0, jf: 0, k: UInt32(shards)), // 12: A %= shards
            Instruction(code: retA, jt: 0, jf: 0, k: 0),             // 13: the socket index
        ]
    }

    /// Attaches the steering program to `channel`'s `SO_REUSEPORT` group, whose sockets were bound in shard order.
    static func attach(to channel: any Channel, shards: Int) -> EventLoopFuture<Void> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(TURNError(.socket, detail: "no socket options on \(type(of: channel))"))
        }
        let storage = InstructionStorage(program(shards: shards))
        let done = provider.unsafeSetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: attachReusePortCBPF,
                                                  value: storage.program)
        // The instructions live until the option is set, wherever the future completes.
        done.whenComplete { _ in withExtendedLifetime(storage) {} }
        return done
    }

    /// Attaches the steering program to the `SO_REUSEPORT` group of `fd`, whose sockets were bound in shard order.
    static func attach(toSocket fd: Int32, shards: Int) throws {
        let storage = InstructionStorage(program(shards: shards))
        var program = storage.program
        let result = withExtendedLifetime(storage) {
            setsockopt(fd, SOL_SOCKET, Int32(attachReusePortCBPF), &program, socklen_t(MemoryLayout<Program>.size))
        }
        guard result == 0 else {
            throw TURNError(.socket, detail: "SO_ATTACH_REUSEPORT_CBPF: \(String(cString: strerror(errno)))")
        }
    }

    /// Owns a program's instructions; never mutated after creation.
    private final class InstructionStorage: @unchecked Sendable {
        let pointer: UnsafeMutablePointer<Instruction>
        let count: Int

        init(_ instructions: [Instruction]) {
            count = instructions.count
            pointer = .allocate(capacity: count)
            pointer.initialize(from: instructions, count: count)
        }

        var program: Program { Program(length: UInt16(count), filter: UnsafePointer(pointer)) }

        deinit { pointer.deallocate() }
    }
}
