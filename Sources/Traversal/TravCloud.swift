import Foundation
import Logging
import NIOCore

extension CloudEndpoint.Trust {
    /// Only certificates issued by the CA in the PEM file at `path` (e.g. the `ca.pem` that `trav cloud` writes).
    ///
    /// - Throws: ``CloudError`` `tls-failed` when the file cannot be read or holds no PEM certificate.
    public static func pinnedCA(file path: String) throws -> CloudEndpoint.Trust {
        let pem: String
        do {
            pem = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CloudError(code: .tlsFailed, detail: "cannot read the CA file \(path): \(error.localizedDescription)")
        }
        guard pem.contains("-----BEGIN CERTIFICATE-----") else {
            throw CloudError(code: .tlsFailed, detail: "\(path) holds no PEM certificate")
        }
        return .pinnedCA(pem)
    }
}

/// One cloud, as an app configures it: where its signalling is, which STUN servers to ask, and whom
/// to trust, for the signalling and for the relay the cloud's grants point to.
///
/// ```swift
/// let cloud = TravCloud(host: "cloud.example.com", trust: try .pinnedCA(file: "ca.pem"))
/// ```
///
/// Everything a ``Connector`` needs from the cloud derives from this value: the ``signalling``
/// endpoint, the STUN servers strategies ask (host names are resolved when a connection is
/// prepared), and the trust the relay strategy applies to the relay's TLS certificate.
public struct TravCloud: Sendable, Hashable {
    /// The cloud's STUN port (`trav cloud --stun-port`), RFC 8489 §18.6.
    public static let defaultSTUNPort: UInt16 = 3478

    /// Where signalling listens and which certificates it must present.
    public var signalling: CloudEndpoint
    /// STUN servers as `host:port`, `ip:port` or `[ipv6]:port`; by default the cloud's host on ``defaultSTUNPort``.
    public var stunServers: [String]

    /// The trust for the cloud's certificates, signalling and relay alike.
    public var trust: CloudEndpoint.Trust { signalling.trust }

    /// A cloud at `host` (a name or an IP address): signalling on `port`, STUN on `host:stunPort`.
    public init(host: String, port: UInt16 = CloudEndpoint.defaultPort, stunPort: UInt16 = TravCloud.defaultSTUNPort,
                trust: CloudEndpoint.Trust) {
        self.signalling = CloudEndpoint(host: host, port: port, trust: trust)
        self.stunServers = [ServerName.format(host: host, port: stunPort)]
    }

    /// A cloud whose signalling is `signalling` and whose STUN servers are `stunServers` (names allowed).
    public init(signalling: CloudEndpoint, stunServers: [String]) {
        self.signalling = signalling
        self.stunServers = stunServers
    }
}

/// `host:port` text of servers, and resolving names in it.
public enum ServerName {
    /// `host:port`, with an IPv6 literal in brackets.
    public static func format(host: String, port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Splits `host:port`, `[v6]:port` or a bare host or IPv6 literal (then `defaultPort`); nil when the port is not a number.
    public static func split(_ text: String, defaultPort: UInt16) -> (host: String, port: UInt16)? {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return (host, defaultPort) }
            guard rest.hasPrefix(":"), let port = UInt16(rest.dropFirst()) else { return nil }
            return (host, port)
        }
        let colons = text.filter { $0 == ":" }.count
        if colons == 1, let colon = text.firstIndex(of: ":") {
            guard let port = UInt16(text[text.index(after: colon)...]) else { return nil }
            return (String(text[..<colon]), port)
        }
        // A bare IPv6 literal or a bare name.
        return text.isEmpty ? nil : (text, defaultPort)
    }

    /// Each server as `ip:port`: literals as they are, names resolved (the resolver's first address).
    /// A name that does not resolve is logged and left out, so the others still serve.
    ///
    /// Resolution blocks in `getaddrinfo`, so it runs on a dispatch queue, off the cooperative pool.
    public static func resolve(_ servers: [String], defaultPort: UInt16 = TravCloud.defaultSTUNPort, logger: Logger) async -> [String] {
        var out: [String] = []
        for text in servers {
            guard let server = split(text, defaultPort: defaultPort) else {
                logger.notice("not a STUN server address, ignored", metadata: ["server": "\(text)"])
                continue
            }
            let (host, port) = server
            if (try? SocketAddress(ipAddress: host, port: Int(port))) != nil {
                out.append(format(host: host, port: port))
                continue
            }
            let resolved = await addresses(of: host, port: port)
            if resolved.isEmpty {
                logger.notice("STUN server name does not resolve, ignored", metadata: ["server": "\(text)"])
            }
            for address in resolved where !out.contains(address) { out.append(address) }
        }
        return out
    }

    /// The `ip:port` text `host` resolves to (empty when it does not).
    private static func addresses(of host: String, port: UInt16) async -> [String] {
        await withCheckedContinuation { done in
            DispatchQueue.global(qos: .userInitiated).async {
                let ip = (try? SocketAddress.makeAddressResolvingHost(host, port: Int(port)))?.ipAddress
                done.resume(returning: ip.map { [format(host: $0, port: port)] } ?? [])
            }
        }
    }
}
