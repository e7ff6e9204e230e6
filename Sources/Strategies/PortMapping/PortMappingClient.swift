import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import STUNLite
import Synchronization
import Traversal

/// The router to ask and our address on its LAN.
public struct GatewayRoute: Sendable, Hashable {
    /// The default gateway.
    public var gateway: IPAddress
    /// Our interface address on the gateway's subnet (what PCP and UPnP name as the internal client).
    public var local: IPAddress

    /// Creates a route.
    public init(gateway: IPAddress, local: IPAddress) {
        self.gateway = gateway
        self.local = local
    }

    /// The IPv4 default gateway in a Linux `/proc/net/route` table (hex, host byte order of the kernel:
    /// little-endian), the lowest metric first; nil when there is none.
    public static func defaultGateway(routeTable: String) -> IPAddress? {
        var best: (metric: Int, ip: UInt32)?
        for line in routeTable.split(separator: "\n").dropFirst() {
            let f = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard f.count >= 7, f[1] == "00000000", let raw = UInt32(f[2], radix: 16), raw != 0,
                  let flags = UInt32(f[3], radix: 16), flags & 0x3 == 0x3, let metric = Int(f[6]) else { continue }
            if best == nil || metric < best!.metric { best = (metric, raw.byteSwapped) }
        }
        return best.map { .v4($0.ip) }
    }

    /// This host's default gateway and our address toward it; throws ``PortMappingError/Code/noGateway``.
    public static func current() throws -> GatewayRoute {
        guard let table = try? String(contentsOfFile: "/proc/net/route", encoding: .utf8),
              let gateway = defaultGateway(routeTable: table), case .v4(let g) = gateway else {
            throw PortMappingError(.noGateway, "no IPv4 default route")
        }
        for device in (try? System.enumerateDevices()) ?? [] {
            guard let a = device.address.flatMap(TransportAddress.init), case .v4(let ip) = a.ip,
                  let m = device.netmask.flatMap(TransportAddress.init), case .v4(let mask) = m.ip, mask != 0 else { continue }
            if ip & mask == g & mask { return GatewayRoute(gateway: gateway, local: a.ip) }
        }
        throw PortMappingError(.noGateway, "no interface address on the subnet of gateway \(gateway)")
    }
}

/// What a lease's event loop hears.
enum LeaseEvent: Sendable {
    case answer(Result<GrantedMapping, PortMappingError>)
    case timer(generation: Int)
    case release
}

/// One protocol's way to send a mapping request; answers come back as ``LeaseEvent/answer(_:)``.
protocol MappingExchange: Sendable {
    /// The protocol.
    var kind: PortMappingProtocol { get }
    /// Starts listening for answers (called once, before the first request).
    func start(events: AsyncStream<LeaseEvent>.Continuation)
    /// Sends one request for `lifetime` seconds (0: delete).
    func send(lifetime: UInt32) async
    /// Stops listening and closes sockets.
    func close() async
}

/// NAT-PMP or PCP over one UDP control socket to the gateway's port 5351.
final class UDPMappingExchange: MappingExchange {
    let kind: PortMappingProtocol
    let route: GatewayRoute
    let internalPort: UInt16
    let socket: STUNUDPClient
    let nonce: [UInt8]
    private let externalIP = Mutex<IPAddress?>(nil)
    private let pending = Mutex<[UInt8]?>(nil)
    private let pump = Mutex<Task<Void, Never>?>(nil)

    init(kind: PortMappingProtocol, route: GatewayRoute, internalPort: UInt16) async throws {
        precondition(kind != .upnpIGD)
        self.kind = kind
        self.route = route
        self.internalPort = internalPort
        self.socket = try await STUNUDPClient.bind(to: TransportAddress(ip: route.local, port: 0))
        var rng = SystemRandomNumberGenerator()
        self.nonce = (0..<12).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    var server: TransportAddress { TransportAddress(ip: route.gateway, port: NATPMPMessage.port) }

    func start(events: AsyncStream<LeaseEvent>.Continuation) {
        let task = Task { [self] in
            for await (source, bytes) in socket.otherDatagrams where source == server && bytes.count <= PCPMessage.maxMessage {
                if let event = decode(bytes) { events.yield(event) }
            }
        }
        pump.withLock { $0 = task }
    }

    /// An answer as an event; nil for datagrams that are not an answer to us (kept waiting).
    func decode(_ bytes: [UInt8]) -> LeaseEvent? {
        do {
            switch kind {
            case .pcp:
                return .answer(.success(try PCPMessage.decodeMap(bytes, nonce: nonce, internalPort: internalPort)))
            case .natPMP:
                if bytes.count >= 2, bytes[1] == 128 {
                    let ip = try NATPMPMessage.decodeExternalAddress(bytes).address
                    externalIP.withLock { $0 = ip }
                    guard let held = pending.withLock({ p -> [UInt8]? in defer { p = nil }; return p }) else { return nil }
                    return decode(held)
                }
                guard let ip = externalIP.withLock({ $0 }) else {
                    pending.withLock { $0 = bytes }   // the address answer is still on its way
                    return nil
                }
                return .answer(.success(try NATPMPMessage.decodeMap(bytes, internalPort: internalPort, externalIP: ip)))
            case .upnpIGD:
                return nil
            }
        } catch let e as PortMappingError where e.code == .mismatched {
            return nil
        } catch let e as PortMappingError {
            return .answer(.failure(e))
        } catch {
            return nil
        }
    }

    func send(lifetime: UInt32) async {
        switch kind {
        case .pcp:
            try? await socket.send(PCPMessage.mapRequest(client: route.local, nonce: nonce, internalPort: internalPort,
                                                          suggestedExternal: nil, lifetime: lifetime), to: server)
        case .natPMP:
            if externalIP.withLock({ $0 }) == nil { try? await socket.send(NATPMPMessage.externalAddressRequest(), to: server) }
            try? await socket.send(NATPMPMessage.mapRequest(internalPort: internalPort, suggestedExternalPort: lifetime == 0 ? 0 : internalPort,
                                                            lifetime: lifetime), to: server)
        case .upnpIGD:
            break
        }
    }

    func close() async {
        pump.withLock { $0?.cancel() }
        await socket.close()
    }
}

/// UPnP IGD: SSDP discovery of the gateway, then SOAP calls on its connection service.
final class UPnPMappingExchange: MappingExchange {
    let kind = PortMappingProtocol.upnpIGD
    let route: GatewayRoute
    let internalPort: UInt16
    let service: String
    let control: UPnPMessage.Location
    let timeout: Duration
    private let events = Mutex<AsyncStream<LeaseEvent>.Continuation?>(nil)
    private let externalIP = Mutex<IPAddress?>(nil)
    private let calls = Mutex<[Task<Void, Never>]>([])

    /// Description for the router's mapping table.
    static let mappingDescription = "trav"

    private init(route: GatewayRoute, internalPort: UInt16, service: String, control: UPnPMessage.Location, timeout: Duration) {
        self.route = route
        self.internalPort = internalPort
        self.service = service
        self.control = control
        self.timeout = timeout
    }

    /// Finds the gateway's IGD (SSDP to the group and to the gateway; only the gateway's answer
    /// counts) and its connection service, within `within`; each later SOAP call gets `callTimeout`.
    static func discover(route: GatewayRoute, internalPort: UInt16, within: Duration,
                         callTimeout: Duration = .seconds(1)) async throws -> UPnPMappingExchange {
        let started = ContinuousClock.now
        let location: UPnPMessage.Location = try await withDeadline(within) {
            let socket = try await STUNUDPClient.bind(to: TransportAddress(ip: route.local, port: 0))
            do {
                let search = UPnPMessage.search()
                try? await socket.send(search, to: UPnPMessage.ssdpGroup)
                try? await socket.send(search, to: TransportAddress(ip: route.gateway, port: UPnPMessage.ssdpGroup.port))
                var lastError: PortMappingError?
                for await (source, bytes) in socket.otherDatagrams where source.ip == route.gateway {
                    do {
                        let l = try UPnPMessage.parseSearchAnswer(bytes, from: source.ip)
                        await socket.close()
                        return l
                    } catch let e as PortMappingError { lastError = e }
                }
                throw lastError ?? PortMappingError(.noAnswer, "SSDP socket closed")
            } catch {
                await socket.close()
                throw error
            }
        }
        let left = within - (ContinuousClock.now - started)
        let (status, body) = try await http(UPnPMessage.getRequest(location), to: location.host, timeout: left)
        guard status == 200 else { throw PortMappingError(.refused, "GET \(location): HTTP \(status)") }
        let (service, control) = try UPnPMessage.parseDescription(body, location: location)
        return UPnPMappingExchange(route: route, internalPort: internalPort, service: service, control: control, timeout: callTimeout)
    }

    /// One HTTP exchange with a LAN host: the request, the answer read to the end of the
    /// connection (at most ``UPnPMessage/maxHTTPAnswer`` bytes), within `timeout`.
    static func http(_ request: [UInt8], to host: TransportAddress, timeout: Duration) async throws -> (Int, [UInt8]) {
        let bytes: [UInt8] = try await withDeadline(timeout) {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(TimeAmount(timeout))
                .connect(to: host.socketAddress) { ch in
                    ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
                }
            return try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(bytes: request))
                var out: [UInt8] = []
                for try await chunk in inbound {
                    out += chunk.readableBytesView
                    guard out.count <= UPnPMessage.maxHTTPAnswer else {
                        throw PortMappingError(.malformed, "HTTP answer from \(host): more than \(UPnPMessage.maxHTTPAnswer) bytes")
                    }
                }
                return out
            }
        }
        return try UPnPMessage.parseHTTPAnswer(bytes)
    }

    func soap(_ action: String, _ arguments: [(String, String)]) async throws -> [String: String] {
        let (status, body) = try await Self.http(UPnPMessage.soapRequest(control: control, service: service, action: action, arguments: arguments),
                                                 to: control.host, timeout: timeout)
        return try UPnPMessage.parseSOAPAnswer(status: status, body: body, action: action)
    }

    func start(events: AsyncStream<LeaseEvent>.Continuation) {
        self.events.withLock { $0 = events }
    }

    func send(lifetime: UInt32) async {
        let task = Task { [self] in
            let result: Result<GrantedMapping, PortMappingError>
            do {
                if lifetime == 0 {
                    _ = try await soap("DeletePortMapping", UPnPMessage.deletePortMapping(externalPort: internalPort))
                    result = .success(GrantedMapping(external: TransportAddress(ip: route.gateway, port: internalPort), lifetime: 0, epoch: nil))
                } else {
                    _ = try await soap("AddPortMapping", UPnPMessage.addPortMapping(
                        externalPort: internalPort, internalPort: internalPort, client: route.local, lifetime: lifetime,
                        description: Self.mappingDescription))
                    var ip = externalIP.withLock { $0 }
                    if ip == nil {
                        let answer = try await soap("GetExternalIPAddress", [])
                        guard let text = answer["NewExternalIPAddress"], let parsed = IPAddress(text) else {
                            throw PortMappingError(.malformed, "GetExternalIPAddress: no valid NewExternalIPAddress")
                        }
                        ip = parsed
                        externalIP.withLock { $0 = parsed }
                    }
                    result = .success(GrantedMapping(external: TransportAddress(ip: ip!, port: internalPort), lifetime: lifetime, epoch: nil))
                }
            } catch let e as PortMappingError {
                result = .failure(e)
            } catch is CancellationError {
                return
            } catch {
                result = .failure(PortMappingError(.noAnswer, "\(control): \(error)"))
            }
            _ = events.withLock { $0?.yield(.answer(result)) }
        }
        calls.withLock { $0.append(task) }
    }

    func close() async {
        let pending = calls.withLock { c -> [Task<Void, Never>] in defer { c = [] }; return c }
        // A delete in flight is let finish (it releases the mapping); anything else is cancelled.
        for t in pending { _ = await t.value }
        events.withLock { $0 = nil }
    }
}

/// A router port mapping with an owner: renewed at half its lifetime while held, deleted by ``release()``.
///
/// Metrics: `port_mappings_total` by `protocol` and `outcome` (`granted`, `failed`: the first request,
/// `renewed`, `expired`: renewals went unanswered, `released`).
final class PortMappingLease: Sendable {
    /// Counts one lease event.
    static func count(_ kind: PortMappingProtocol, _ outcome: String) {
        Counter(label: "port_mappings_total", dimensions: [("protocol", kind.rawValue), ("outcome", outcome)]).increment()
    }

    /// The protocol that got it.
    let kind: PortMappingProtocol
    /// The mapping as first granted.
    let granted: GrantedMapping
    private let events: AsyncStream<LeaseEvent>.Continuation
    private let loop: Task<Void, Never>

    private init(kind: PortMappingProtocol, granted: GrantedMapping, events: AsyncStream<LeaseEvent>.Continuation, loop: Task<Void, Never>) {
        self.kind = kind
        self.granted = granted
        self.events = events
        self.loop = loop
    }

    /// Asks for a mapping through `exchange` and keeps it; throws when the first request fails.
    /// The exchange belongs to the lease from here on (closed when the lease ends).
    static func acquire(_ exchange: any MappingExchange, lifetime: UInt32, schedule: PortMappingStateMachine.Schedule,
                        logger: Logger) async throws -> PortMappingLease {
        let (stream, events) = AsyncStream.makeStream(of: LeaseEvent.self, bufferingPolicy: .bufferingNewest(64))
        exchange.start(events: events)
        var loop: Task<Void, Never>?
        let first = await withCheckedContinuation { (granted: CheckedContinuation<Result<GrantedMapping, PortMappingError>, Never>) in
            loop = Task {
                var waiter: CheckedContinuation<Result<GrantedMapping, PortMappingError>, Never>? = granted
                var machine = PortMappingStateMachine(lifetime: lifetime, schedule: schedule)
                var generation = 0
                var timer: Task<Void, Never>?
                var iterator = stream.makeAsyncIterator()
                var action = machine.start(now: .now)
                loop: while true {
                    switch action {
                    case .request(let life, let timeout):
                        generation += 1
                        await exchange.send(lifetime: life)
                        timer?.cancel()
                        timer = Self.timer(after: timeout, generation: generation, events: events)
                    case .wait(let until):
                        generation += 1
                        timer?.cancel()
                        timer = Self.timer(after: until - .now, generation: generation, events: events)
                    case .mapped(let m, let renewAt):
                        Self.count(exchange.kind, waiter == nil ? "renewed" : "granted")
                        waiter?.resume(returning: .success(m))
                        waiter = nil
                        logger.debug("port mapping held", metadata: ["protocol": "\(exchange.kind.rawValue)", "external": "\(m.external)",
                                                                       "lifetime": "\(m.lifetime)"])
                        action = .wait(until: renewAt)
                        continue loop
                    case .failed(let e):
                        logger.debug("port mapping failed", metadata: ["protocol": "\(exchange.kind.rawValue)", "error": "\(e)"])
                        Self.count(exchange.kind, waiter == nil ? "expired" : "failed")
                        if waiter != nil {
                            // The first request may have been granted with its answer lost or late: delete
                            // whatever it made, once, so a failed attempt leaves nothing on the router.
                            await exchange.send(lifetime: 0)
                        }
                        waiter?.resume(returning: .failure(e))
                        waiter = nil
                        break loop
                    case .released:
                        Self.count(exchange.kind, "released")
                        break loop
                    }
                    var next: PortMappingStateMachine.Action?
                    while next == nil, let event = await iterator.next() {
                        switch event {
                        case .answer(let result): next = machine.answered(result, now: .now)
                        case .timer(let g) where g == generation: next = machine.timedOut(now: .now)
                        case .timer: break
                        case .release: next = machine.release(now: .now)
                        }
                    }
                    guard let next else { break loop }
                    action = next
                }
                timer?.cancel()
                await exchange.close()
                events.finish()
                waiter?.resume(returning: .failure(PortMappingError(.noAnswer, "released before granted")))
            }
        }
        guard let loop else { preconditionFailure("the lease loop starts inside the continuation") }
        switch first {
        case .success(let m):
            return PortMappingLease(kind: exchange.kind, granted: m, events: events, loop: loop)
        case .failure(let e):
            _ = await loop.value
            throw e
        }
    }

    private static func timer(after: Duration, generation: Int, events: AsyncStream<LeaseEvent>.Continuation) -> Task<Void, Never> {
        Task {
            try? await Task.sleep(for: max(after, .zero))
            if !Task.isCancelled { events.yield(.timer(generation: generation)) }
        }
    }

    /// Deletes the mapping on the router (lifetime 0 / DeletePortMapping) and waits until that is
    /// answered or its schedule is spent; idempotent.
    func release() async {
        events.yield(.release)
        _ = await loop.value
    }
}
