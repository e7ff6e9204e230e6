import STUNLite

/// Which port-mapping protocols the default gateway speaks, asked without creating any mapping:
/// PCP ANNOUNCE (RFC 6887 §14.1), the NAT-PMP external address request (RFC 6886 §3.2), and an
/// SSDP search plus the device description (UPnP IGD).
public struct PortMappingProbeReport: Sendable, Hashable, Codable {
    /// The gateway asked; nil when there is no default route.
    public var gateway: String?
    /// Answers PCP ANNOUNCE with success.
    public var pcp: Tri
    /// Answers the NAT-PMP external address request with success.
    public var natPMP: Tri
    /// Answers an SSDP search and describes a WANIPConnection / WANPPPConnection service.
    public var upnpIGD: Tri
    /// The external address the gateway reports (NAT-PMP), if it told.
    public var externalAddress: String?
    /// Why each protocol that did not answer failed.
    public var notes: [String]

    /// The protocols the gateway speaks, in ``PortMappingProtocol`` names (`pcp, nat-pmp`), or `none`.
    public var summary: String {
        let spoken = [(pcp, PortMappingProtocol.pcp), (natPMP, .natPMP), (upnpIGD, .upnpIGD)].filter { $0.0 == .yes }.map(\.1.rawValue)
        return spoken.isEmpty ? "none" : spoken.joined(separator: ", ")
    }

    /// Asks the gateway of `route` (default: this host's) each protocol at once, each within `schedule`.
    public static func run(route given: GatewayRoute? = nil, schedule: PortMappingStateMachine.Schedule = .race) async -> PortMappingProbeReport {
        var report = PortMappingProbeReport(gateway: nil, pcp: .notTested, natPMP: .notTested, upnpIGD: .notTested, notes: [])
        let route: GatewayRoute
        do {
            route = try given ?? GatewayRoute.current()
        } catch {
            report.notes.append("\(error)")
            return report
        }
        report.gateway = route.gateway.description
        let total = schedule.timeouts.reduce(Duration.zero, +)
        let server = TransportAddress(ip: route.gateway, port: PCPMessage.port)
        async let pcp: Result<Void, any Error> = await Result.of {
            try await ask(PCPMessage.announceRequest(client: route.local), to: server, route: route, schedule: schedule) {
                try PCPMessage.decodeAnnounce($0)
            }
        }
        async let pmp: Result<IPAddress, any Error> = await Result.of {
            try await ask(NATPMPMessage.externalAddressRequest(), to: server, route: route, schedule: schedule) {
                try NATPMPMessage.decodeExternalAddress($0).address
            }
        }
        async let igd: Result<UPnPMappingExchange, any Error> = await Result.of {
            try await UPnPMappingExchange.discover(route: route, internalPort: 0, within: total)
        }
        func note(_ name: String, _ error: any Error) { report.notes.append("\(name): \(error)") }
        switch await pcp {
        case .success: report.pcp = .yes
        case .failure(let e): report.pcp = .no; note("pcp", e)
        }
        switch await pmp {
        case .success(let ip): report.natPMP = .yes; report.externalAddress = ip.description
        case .failure(let e): report.natPMP = .no; note("nat-pmp", e)
        }
        switch await igd {
        case .success: report.upnpIGD = .yes
        case .failure(let e): report.upnpIGD = .no; note("upnp-igd", e)
        }
        return report
    }

    /// Sends `request` per `schedule` until `decode` accepts an answer from `server`.
    static func ask<T: Sendable>(_ request: [UInt8], to server: TransportAddress, route: GatewayRoute,
                                 schedule: PortMappingStateMachine.Schedule,
                                 decode: @escaping @Sendable ([UInt8]) throws -> T) async throws -> T {
        let socket = try await STUNUDPClient.bind(to: TransportAddress(ip: route.local, port: 0))
        defer { Task { await socket.close() } }
        let total = schedule.timeouts.reduce(Duration.zero, +)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                for timeout in schedule.timeouts {
                    try? await socket.send(request, to: server)
                    try await Task.sleep(for: timeout)
                }
                throw PortMappingError(.noAnswer, "no answer from \(server) in \(total)")
            }
            group.addTask {
                var last: PortMappingError?
                for await (source, bytes) in socket.otherDatagrams where source == server && bytes.count <= PCPMessage.maxMessage {
                    do { return try decode(bytes) } catch let e as PortMappingError where e.code != .mismatched {
                        last = e
                        break
                    } catch {}
                }
                throw last ?? PortMappingError(.noAnswer, "socket closed")
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let next { return next }
            }
            throw PortMappingError(.noAnswer, "no answer from \(server)")
        }
    }
}

extension Result where Failure == any Error {
    /// The result of an async throwing body.
    static func of(_ body: () async throws -> Success) async -> Result {
        do { return .success(try await body()) } catch { return .failure(error) }
    }
}

extension PCPMessage {
    /// The ANNOUNCE opcode, RFC 6887 §14.1.
    public static let opcodeAnnounce: UInt8 = 0

    /// An ANNOUNCE request: a header with lifetime 0, RFC 6887 §14.1 (a client may use it to learn whether a server exists).
    public static func announceRequest(client: IPAddress) -> [UInt8] {
        [version, opcodeAnnounce, 0, 0, 0, 0, 0, 0] + mapped(client)
    }

    /// Checks an ANNOUNCE response, RFC 6887 §7.2: version 2, R set, opcode 0, result success.
    public static func decodeAnnounce(_ bytes: [UInt8]) throws {
        let (_, result, _, _) = try responseHeader(bytes, opcode: opcodeAnnounce, what: "PCP ANNOUNCE response")
        guard bytes.count >= 24 else { throw PortMappingError(.malformed, "PCP ANNOUNCE response: \(bytes.count) bytes, at least 24") }
        guard result == 0 else { throw PortMappingError(.refused, "PCP ANNOUNCE response: result \(result) (\(resultNames[result] ?? "unknown"))") }
    }
}
