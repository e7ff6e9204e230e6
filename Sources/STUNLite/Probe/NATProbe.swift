import NIOCore
import NIOPosix

/// Runs the probe plan against a STUN server and classifies what it saw (RFC 5780 §4).
///
/// The mapping lane (socket A), the filtering lane (socket B) and the TCP lane run at once; each
/// UDP test uses ``NATProbeOptions/policy`` (by default 4 sends within 2.2 s), so a blocked path is
/// reported in seconds. The lifetime bisection, when asked for, runs last on fresh sockets.
public enum NATProbe {
    /// Probes `server` and returns the report; never throws: what failed is in the report.
    public static func run(server: TransportAddress, options: NATProbeOptions = NATProbeOptions(),
                           group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async -> NATProbeReport {
        NATProbeClassifier.classify(await observe(server: server, options: options, group: group))
    }

    /// Runs the plan and returns the raw observations (for tools that classify on their own).
    public static func observe(server: TransportAddress, options: NATProbeOptions = NATProbeOptions(),
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async -> NATProbeObservations {
        let steps = NATProbePlan.steps(for: options, server: server)
        let local = await localIP(toward: server, group: group)
        var merged = NATProbeObservations(server: server)
        await withTaskGroup(of: NATProbeObservations.self) { lanes in
            lanes.addTask {
                await udpLane(NATProbePlan.lane(.mapping, of: steps), server: server, local: local, options: options, group: group)
            }
            lanes.addTask {
                await udpLane(NATProbePlan.lane(.filtering, of: steps), server: server, local: local, options: options, group: group)
            }
            lanes.addTask {
                await tcpLane(NATProbePlan.lane(.tcp, of: steps), server: server, options: options, group: group)
            }
            for await lane in lanes { merged.merge(lane) }
        }
        // TCP results in the order the plan asked for them.
        let order = NATProbePlan.lane(.tcp, of: steps).compactMap { step -> UInt16? in
            if case .tcpPort(let p) = step.target { return p } else { return nil }
        }
        merged.tcp.sort { (order.firstIndex(of: $0.port) ?? 0) < (order.firstIndex(of: $1.port) ?? 0) }
        if let step = NATProbePlan.lane(.lifetime, of: steps).first, NATProbePlan.shouldRun(step, given: merged) {
            merged.lifetime = await measureLifetime(server: server, local: local, options: options, group: group)
        }
        return merged
    }

    /// The local IP the kernel would use toward `server` (a connected UDP socket's name; nothing is sent).
    static func localIP(toward server: TransportAddress, group: any EventLoopGroup) async -> IPAddress {
        let wildcard: IPAddress = server.ip.isIPv4 ? .v4(0) : .v6(high: 0, low: 0)
        guard let channel = try? await DatagramBootstrap(group: group).connect(to: server.socketAddress).get() else {
            return wildcard
        }
        let ip = channel.localAddress.flatMap(TransportAddress.init)?.ip ?? wildcard
        try? await channel.close()
        return ip
    }

    /// One UDP socket's lane: its steps in order, each skipped unless its requirements hold.
    static func udpLane(_ steps: [NATProbeStep], server: TransportAddress, local: IPAddress, options: NATProbeOptions,
                        group: any EventLoopGroup) async -> NATProbeObservations {
        var seen = NATProbeObservations(server: server)
        guard !steps.isEmpty else { return seen }
        let client: STUNUDPClient
        do {
            client = try await STUNUDPClient.bind(to: TransportAddress(ip: local, port: 0), group: group)
        } catch {
            for step in steps { seen.outcomes[step.test] = .failed("\(error)") }
            return seen
        }
        for step in steps where NATProbePlan.shouldRun(step, given: seen) {
            if step.test == .hairpin {
                seen.outcomes[.hairpin] = await hairpin(to: client, seen: seen, local: local, options: options, group: group)
                continue
            }
            guard let target = resolve(step.target, seen: seen) else { continue }
            let change = step.changeIP || step.changePort ? ChangeRequest(changeIP: step.changeIP, changePort: step.changePort) : nil
            seen.outcomes[step.test] = await outcome(of: {
                try await client.binding(to: target, change: change, policy: options.policy)
            }, local: client.localAddress)
        }
        await client.close()
        return seen
    }

    /// The address a target names, given what the lane has seen; nil when it cannot be known yet.
    static func resolve(_ target: NATProbeTarget, seen: NATProbeObservations) -> TransportAddress? {
        switch target {
        case .primary: return seen.server
        case .alternateIPPrimaryPort: return seen.otherAddress.map { TransportAddress(ip: $0.ip, port: seen.server.port) }
        case .otherAddress: return seen.otherAddress
        case .ownMappedAddress: return seen.answer(.mappingI)?.mapped
        case .tcpPort(let port): return TransportAddress(ip: seen.server.ip, port: port)
        }
    }

    /// Runs one Binding and turns its result or error into an outcome.
    static func outcome(of transaction: () async throws -> STUNResponse, local: TransportAddress) async -> NATProbeOutcome {
        do {
            let r = try await transaction()
            return .answered(NATProbeAnswer(local: local, mapped: r.mappedAddress, source: r.source,
                                            otherAddress: r.otherAddress, rttMs: milliseconds(r.elapsed)))
        } catch let error as STUNClientError {
            switch error.code {
            case .timeout: return .timeout
            case .errorResponse: return .errorResponse(error.errorCode?.code ?? 0)
            default: return .failed(error.description)
            }
        } catch {
            return .failed("\(error)")
        }
    }

    /// RFC 5780 §4.5: a Binding request from a fresh socket to socket A's mapped address; yes when A receives it.
    static func hairpin(to receiver: STUNUDPClient, seen: NATProbeObservations, local: IPAddress, options: NATProbeOptions,
                        group: any EventLoopGroup) async -> NATProbeOutcome {
        guard let mapped = seen.answer(.mappingI)?.mapped else { return .failed("no mapped address") }
        let sender: STUNUDPClient
        do {
            sender = try await STUNUDPClient.bind(to: TransportAddress(ip: local, port: 0), group: group)
        } catch {
            return .failed("\(error)")
        }
        let request = STUNMessage(method: .binding, messageClass: .request)
        let started = NIODeadline.now()
        let arrived = await deliver(request, from: sender, to: mapped, receiver: receiver, within: options.hairpinTimeout)
        await sender.close()
        guard let source = arrived else { return .timeout }
        return .answered(NATProbeAnswer(local: receiver.localAddress, source: source, rttMs: milliseconds(.now() - started)))
    }

    /// Sends `message` from `sender` to `destination` every ``resendInterval`` until `receiver` gets a
    /// datagram with its transaction ID (request or response) or `timeout` passes; returns that datagram's source.
    static func deliver(_ message: STUNMessage, from sender: STUNUDPClient, to destination: TransportAddress,
                        receiver: STUNUDPClient, within timeout: TimeAmount) async -> TransportAddress? {
        let bytes = message.encode(fingerprint: true)
        let tid = message.transactionID
        return await withTaskGroup(of: TransportAddress?.self) { group in
            group.addTask {
                for await (source, datagram) in receiver.otherDatagrams {
                    if let m = try? STUNMessage.decode(datagram), m.transactionID == tid { return source }
                }
                return nil
            }
            group.addTask {
                let deadline = NIODeadline.now() + timeout
                while !Task.isCancelled, NIODeadline.now() < deadline {
                    try? await sender.send(bytes, to: destination)
                    let wait = min(resendInterval, deadline - .now())
                    try? await Task.sleep(for: .nanoseconds(max(0, wait.nanoseconds)))
                }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// How often `deliver(_:from:to:receiver:within:)` re-sends (RFC 8489 §6.2.1's default RTO).
    public static let resendInterval = TimeAmount.milliseconds(500)

    /// TCP Bindings to every planned port at once (RFC 8489 §6.2.2).
    static func tcpLane(_ steps: [NATProbeStep], server: TransportAddress, options: NATProbeOptions,
                        group: any EventLoopGroup) async -> NATProbeObservations {
        var seen = NATProbeObservations(server: server)
        await withTaskGroup(of: NATProbeTCPResult.self) { tasks in
            for step in steps {
                guard case .tcpPort(let port) = step.target else { continue }
                tasks.addTask {
                    do {
                        let r = try await STUNTCPClient.binding(to: TransportAddress(ip: server.ip, port: port),
                                                                timeout: options.tcpTimeout, group: group)
                        return NATProbeTCPResult(port: port, ok: r.mappedAddress != nil, latencyMs: milliseconds(r.elapsed))
                    } catch {
                        return NATProbeTCPResult(port: port, ok: false)
                    }
                }
            }
            for await result in tasks { seen.tcp.append(result) }
        }
        return seen
    }

    /// RFC 4787 §4.3: bisects how long an idle mapping lives (see ``NATLifetimeBisection``).
    static func measureLifetime(server: TransportAddress, local: IPAddress, options: NATProbeOptions,
                                group: any EventLoopGroup) async -> NATLifetimeObservation {
        var bisection = NATLifetimeBisection(options: options)
        while let idle = bisection.nextTrial(), !Task.isCancelled {
            guard let alive = await lifetimeTrial(idleSeconds: idle, server: server, local: local, options: options,
                                                  group: group) else { break }
            bisection.record(idleSeconds: idle, alive: alive)
        }
        return bisection.observation
    }

    /// One trial: socket A opens a mapping and idles; then socket B asks the server to answer to A's
    /// mapped port (RFC 5780 §7.5 RESPONSE-PORT). nil when the trial could not run.
    static func lifetimeTrial(idleSeconds: Double, server: TransportAddress, local: IPAddress, options: NATProbeOptions,
                              group: any EventLoopGroup) async -> Bool? {
        guard let a = try? await STUNUDPClient.bind(to: TransportAddress(ip: local, port: 0), group: group) else { return nil }
        guard let b = try? await STUNUDPClient.bind(to: TransportAddress(ip: local, port: 0), group: group) else {
            await a.close()
            return nil
        }
        let alive = await idleThenAsk(idleSeconds: idleSeconds, server: server, mapping: a, asker: b, options: options)
        await a.close()
        await b.close()
        return alive
    }

    /// The body of ``lifetimeTrial(idleSeconds:server:local:options:group:)``, sockets owned by the caller.
    static func idleThenAsk(idleSeconds: Double, server: TransportAddress, mapping a: STUNUDPClient, asker b: STUNUDPClient,
                            options: NATProbeOptions) async -> Bool? {
        guard let mapped = try? await a.binding(to: server, policy: options.policy).mappedAddress else { return nil }
        do {
            try await Task.sleep(for: .milliseconds(Int64(idleSeconds * 1000)))
        } catch {
            return nil
        }
        var request = STUNMessage(method: .binding, messageClass: .request)
        request.append(ResponsePort(mapped.port))
        return await deliver(request, from: b, to: server, receiver: a, within: options.hairpinTimeout) != nil
    }

    /// A TimeAmount in milliseconds.
    static func milliseconds(_ t: TimeAmount) -> Double { Double(t.nanoseconds) / 1_000_000 }
}
