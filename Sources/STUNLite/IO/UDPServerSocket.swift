import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension NIOBSDSocket.Option {
    /// `SO_REUSEPORT`: several sockets bound to one address and port — UDP server sockets the kernel
    /// spreads datagrams over, or TCP simultaneous open's connecting and listening sockets.
    package static let reusePort = NIOBSDSocket.Option(rawValue: SO_REUSEPORT)
}

/// The socket options of a busy server's UDP sockets, shared by the STUN and TURN servers.
package enum UDPServerSocket {
    /// Read system calls per event-loop turn on a server's UDP socket before other channels get their turn.
    package static let readsPerTurn = 4

    /// Batched reads: `vectorReadCount` datagrams of at most `maxDatagramSize` bytes per system call
    /// (`recvmmsg`), ``readsPerTurn`` calls per event-loop turn. For every server UDP socket, relay sockets too.
    package static func batchedReads(_ bootstrap: DatagramBootstrap, vectorReadCount: Int,
                                     maxDatagramSize: Int) -> DatagramBootstrap {
        bootstrap
            .channelOption(.datagramVectorReadMessageCount, value: vectorReadCount)
            .channelOption(.maxMessagesPerRead, value: UInt(readsPerTurn))
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(
                capacity: maxDatagramSize * max(1, vectorReadCount)))
    }

    /// A listening socket: `SO_REUSEADDR`, `SO_REUSEPORT` when `reusePort` (several sockets on one address),
    /// `SO_RCVBUF` of `receiveBufferBytes` (the kernel caps it at `net.core.rmem_max`), and ``batchedReads(_:vectorReadCount:maxDatagramSize:)``.
    package static func listener(_ bootstrap: DatagramBootstrap, receiveBufferBytes: Int, vectorReadCount: Int,
                                 maxDatagramSize: Int, reusePort: Bool = false) -> DatagramBootstrap {
        batchedReads(bootstrap
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.reusePort), value: reusePort ? 1 : 0)
            .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(clamping: receiveBufferBytes)),
                     vectorReadCount: vectorReadCount, maxDatagramSize: maxDatagramSize)
    }
}
