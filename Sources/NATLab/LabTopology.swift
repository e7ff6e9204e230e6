/// One site of a lab: a NAT router of some kind with hosts behind it.
public struct LabSite: Sendable, Hashable {
    /// Site name, `[a-z][a-z0-9]{0,7}`; hosts are named `NAME-h1`, `NAME-h2`, …
    public var name: String
    /// The NAT behaviour of the site's router.
    public var kind: NATKind
    /// Hosts on the site's LAN (1...4).
    public var hosts: Int
    /// The conditions on the site's access line; nil for a plain wire that cannot change later.
    public var link: LinkConditions?

    /// A site named `name` of `kind` with `hosts` hosts on its LAN, behind a line with `link` conditions.
    public init(_ name: String, _ kind: NATKind, hosts: Int = 1, link: LinkConditions? = nil) {
        self.name = name
        self.kind = kind
        self.hosts = hosts
        self.link = link
    }

    /// The host name of the `index`th host (1-based) behind this site.
    public func host(_ index: Int = 1) -> String { "\(name)-h\(index)" }

    /// The site's NAT router (for double NAT: the home router).
    public var router: String { "\(name)-router" }

    /// The site's carrier-grade NAT router (double NAT only).
    public var carrier: String { "\(name)-carrier" }

    /// The namespace between the site's router (or carrier) and the internet (sites with a `link` only).
    public var line: String { "\(name)-link" }

    /// The `natlab.sh` SITE_SPEC, `NAME:KIND:HOSTS[@LINK]`.
    public var spec: String { "\(name):\(kind.rawValue):\(hosts)" + (link.map { "@\($0.spec)" } ?? "") }
}

/// A lab's sites; the cloud and the internet are always there.
public struct LabTopology: Sendable, Hashable {
    /// The sites, in order (site N gets 203.0.113.(100+N) and 10.N.0.0/24).
    public var sites: [LabSite]
    /// Conntrack UDP timeout in seconds on every router: an idle mapping lives this long.
    public var udpTimeout: Int

    /// The routers' UDP conntrack timeout unless a topology says otherwise (`natlab.sh`'s `NATLAB_UDP_TIMEOUT` default too).
    public static let defaultUDPTimeout = 30

    /// A topology of these sites, whose NAT mappings expire after `udpTimeout` idle seconds.
    public init(_ sites: [LabSite], udpTimeout: Int = Self.defaultUDPTimeout) {
        self.sites = sites
        self.udpTimeout = udpTimeout
    }
}

/// What a lab host is for.
public enum LabRole: String, Sendable {
    /// The "internet" bridge namespace.
    case internet
    /// The cloud host with two public addresses.
    case cloud
    /// A site's NAT (or plain) router.
    case router
    /// A double NAT's carrier-grade NAT.
    case carrier
    /// An end host behind a router.
    case host
    /// A site's access line: delay, jitter, loss and rate between its router and the internet.
    case link
}

/// One namespace of a built lab, as `natlab.sh hosts` reports it.
public struct LabHost: Sendable, Hashable {
    /// Host name, e.g. `cloud`, `a-router`, `a-h1`.
    public var name: String
    /// Site name, nil for `inet` and `cloud`.
    public var site: String?
    /// Site kind, nil for `inet` and `cloud`.
    public var kind: NATKind?
    /// What the host is for.
    public var role: LabRole
    /// IPv4 addresses, primary first (a router's WAN address first); none for a link.
    public var addresses: [String]

    /// Parses one line `HOST SITE KIND ROLE ADDR[,ADDR…]`; nil when malformed.
    init?(line: Substring) {
        let fields = line.split(separator: " ")
        guard fields.count == 5, let role = LabRole(rawValue: String(fields[3])) else { return nil }
        name = String(fields[0])
        site = fields[1] == "-" ? nil : String(fields[1])
        kind = NATKind(rawValue: String(fields[2]))
        self.role = role
        addresses = fields[4] == "-" ? [] : fields[4].split(separator: ",").map(String.init)
    }
}
