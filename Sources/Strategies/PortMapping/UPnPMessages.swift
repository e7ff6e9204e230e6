import Foundation
import STUNLite

/// UPnP IGD messages: SSDP discovery (UPnP Device Architecture 1.1 §1.3), HTTP/1.1 answers, the
/// device description (§2.3) and the WANIPConnection / WANPPPConnection SOAP actions (§3.2).
///
/// Everything a LAN device sends back is untrusted: sizes are capped, the description and control
/// URLs must stay on the host that answered the search (plain `http`, no redirects followed).
///
/// ```
///  M-SEARCH * ──► 239.255.255.250:1900 (and the gateway)   ◄── 200 OK, LOCATION: http://gw:p/desc.xml
///  GET /desc.xml ──► gw:p                                    ◄── serviceType + controlURL
///  POST controlURL  SOAPAction: …#AddPortMapping             ◄── 200 / 500 + UPnPError errorCode
/// ```
public enum UPnPMessage {
    /// The SSDP multicast group and port.
    public static let ssdpGroup = TransportAddress(ip: .v4(0xEFFF_FFFA), port: 1900)
    /// Largest SSDP answer read (a datagram with a few headers).
    public static let maxSSDPAnswer = 2048
    /// Largest HTTP answer read, headers and body (a gateway's description is a few kilobytes).
    public static let maxHTTPAnswer = 64 * 1024
    /// Largest header block of an HTTP answer.
    public static let maxHTTPHeader = 8 * 1024
    /// The services that map ports, preferred first.
    public static let connectionServices = [
        "urn:schemas-upnp-org:service:WANIPConnection:2",
        "urn:schemas-upnp-org:service:WANIPConnection:1",
        "urn:schemas-upnp-org:service:WANPPPConnection:1",
    ]
    /// The search target: an Internet Gateway Device.
    public static let searchTarget = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"

    /// The SSDP M-SEARCH request, UDA 1.1 §1.3.2; `mx` is the seconds a device may delay its answer.
    public static func search(mx: Int = 1) -> [UInt8] {
        Array(("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n" +
               "MX: \(mx)\r\nST: \(searchTarget)\r\n\r\n").utf8)
    }

    /// An `http://host:port/path` URL: the only kind we follow.
    public struct Location: Sendable, Hashable, CustomStringConvertible {
        /// The host (an IP address: UPnP devices on a LAN are named by address).
        public var host: TransportAddress
        /// The path with its query, starting with `/`.
        public var path: String

        /// Parses `http://IP[:port]/path`; nil for anything else (https, names, userinfo, no path).
        public init?(_ text: some StringProtocol) {
            let t = text.trimmingCharacters(in: .whitespaces)
            guard t.lowercased().hasPrefix("http://") else { return nil }
            let rest = t.dropFirst(7)
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            let authority = rest[..<slash]
            guard !authority.contains("@"), let host = TransportAddress(String(authority), defaultPort: 80) else { return nil }
            self.host = host
            self.path = slash == rest.endIndex ? "/" : String(rest[slash...])
        }

        /// A location on `host`.
        public init(host: TransportAddress, path: String) {
            self.host = host
            self.path = path
        }

        /// `http://host/path`.
        public var description: String { "http://\(host)\(path)" }

        /// `reference` (absolute on the same host, or a path) resolved against this location; nil
        /// when it leads to another host (a LAN answer may not send us elsewhere).
        public func resolve(_ reference: String) -> Location? {
            let r = reference.trimmingCharacters(in: .whitespacesAndNewlines)
            if r.lowercased().hasPrefix("http://") {
                guard let l = Location(r), l.host == host else { return nil }
                return l
            }
            guard !r.contains("://"), !r.hasPrefix("//") else { return nil }
            if r.hasPrefix("/") { return Location(host: host, path: r) }
            let base = path[..<(path.lastIndex(of: "/") ?? path.startIndex)]
            return Location(host: host, path: base + "/" + r)
        }
    }

    /// The LOCATION of an SSDP answer from `source`, UDA 1.1 §1.3.3; it must name `source` itself.
    public static func parseSearchAnswer(_ bytes: [UInt8], from source: IPAddress) throws -> Location {
        guard bytes.count <= maxSSDPAnswer else { throw PortMappingError(.malformed, "SSDP answer: \(bytes.count) bytes, at most \(maxSSDPAnswer)") }
        let head = try parseHead(bytes, what: "SSDP answer")
        guard head.status == 200 else { throw PortMappingError(.refused, "SSDP answer: status \(head.status)") }
        guard let raw = head.headers["location"] else { throw PortMappingError(.malformed, "SSDP answer: no LOCATION header") }
        guard let location = Location(raw) else { throw PortMappingError(.malformed, "SSDP answer: LOCATION \(raw.prefix(80)) is not an http://IP URL") }
        guard location.host.ip == source else {
            throw PortMappingError(.offLAN, "SSDP answer from \(source) points to \(location.host): not followed")
        }
        return location
    }

    /// A parsed HTTP answer head.
    struct Head {
        var status: Int
        var headers: [String: String]
        var bodyStart: Int
    }

    /// Parses a status line and headers (names lowercased), UDA/HTTP 1.1.
    static func parseHead(_ bytes: [UInt8], what: String) throws -> Head {
        let crlf2: [UInt8] = [13, 10, 13, 10]
        let limit = min(bytes.count, maxHTTPHeader)
        var end: Int?
        var i = 0
        while i + 4 <= limit {
            if bytes[i..<i + 4].elementsEqual(crlf2) { end = i; break }
            i += 1
        }
        guard let end else { throw PortMappingError(.malformed, "\(what): no end of headers within \(limit) bytes") }
        let text = String(decoding: bytes[..<end], as: UTF8.self)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines.removeFirst().split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]), (100...599).contains(status) else {
            throw PortMappingError(.malformed, "\(what): bad status line at offset 0")
        }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { throw PortMappingError(.malformed, "\(what): header line without a colon") }
            headers[line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Head(status: status, headers: headers, bodyStart: end + 4)
    }

    /// An HTTP answer read to the end of the connection (we send `Connection: close`): status and body.
    ///
    /// Redirects are not followed (a 3xx is an error); chunked bodies are decoded; a body longer
    /// than Content-Length is cut there.
    public static func parseHTTPAnswer(_ bytes: [UInt8]) throws -> (status: Int, body: [UInt8]) {
        guard bytes.count <= maxHTTPAnswer else { throw PortMappingError(.malformed, "HTTP answer: more than \(maxHTTPAnswer) bytes") }
        let head = try parseHead(bytes, what: "HTTP answer")
        if (300...399).contains(head.status) {
            throw PortMappingError(.offLAN, "HTTP answer: redirect \(head.status) to \(head.headers["location"]?.prefix(80) ?? "?"): not followed")
        }
        var body = Array(bytes[head.bodyStart...])
        if head.headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            body = try dechunk(body)
        } else if let length = head.headers["content-length"] {
            guard let n = Int(length), n >= 0 else { throw PortMappingError(.malformed, "HTTP answer: Content-Length \(length.prefix(20))") }
            guard n <= body.count else { throw PortMappingError(.malformed, "HTTP answer: body of \(body.count) bytes, Content-Length \(n)") }
            body = Array(body[..<n])
        }
        return (head.status, body)
    }

    /// Decodes a chunked body (RFC 9112 §7.1).
    static func dechunk(_ bytes: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while true {
            guard let lineEnd = (i..<max(i, bytes.count - 1)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }) else {
                throw PortMappingError(.malformed, "HTTP chunk size line at offset \(i) unterminated")
            }
            let sizeText = String(decoding: bytes[i..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0, size <= maxHTTPAnswer else {
                throw PortMappingError(.malformed, "HTTP chunk size at offset \(i)")
            }
            if size == 0 { return out }
            let start = lineEnd + 2
            guard start + size <= bytes.count else { throw PortMappingError(.malformed, "HTTP chunk at offset \(start) truncated") }
            out += bytes[start..<start + size]
            i = start + size + 2
        }
    }

    /// The first port-mapping service in a device description (UDA 1.1 §2.3): its type and control
    /// URL resolved against `location` (on the same host only).
    public static func parseDescription(_ body: [UInt8], location: Location) throws -> (service: String, control: Location) {
        let xml = String(decoding: body, as: UTF8.self)
        var found: [(String, String)] = []
        for block in elements("service", in: xml) {
            guard let type = elements("serviceType", in: block).first, let control = elements("controlURL", in: block).first else { continue }
            found.append((type.trimmingCharacters(in: .whitespacesAndNewlines), control))
        }
        for wanted in connectionServices {
            guard let (type, control) = found.first(where: { $0.0 == wanted }) else { continue }
            guard let url = location.resolve(control) else {
                throw PortMappingError(.offLAN, "description: controlURL \(control.prefix(80)) leaves \(location.host)")
            }
            return (type, url)
        }
        throw PortMappingError(.refused, "description: no WANIPConnection or WANPPPConnection service (\(found.count) services)")
    }

    /// The text of each `<name>…</name>` element (namespace prefixes allowed; `<name/>` is empty text), in order.
    static func elements(_ name: String, in xml: String) -> [String] {
        var out: [String] = []
        var rest = xml[...]
        while let open = rest.firstIndex(of: "<") {
            rest = rest[rest.index(after: open)...]
            guard let close = rest.firstIndex(of: ">") else { break }
            let tag = rest[..<close]
            rest = rest[rest.index(after: close)...]
            let selfClosing = tag.hasSuffix("/")
            var qualified = tag.split(separator: " ", maxSplits: 1).first.map(String.init) ?? ""
            if selfClosing, qualified.hasSuffix("/") { qualified.removeLast() }
            guard qualified.split(separator: ":").last.map(String.init) == name else { continue }
            if selfClosing {
                out.append("")   // <u:AddPortMappingResponse xmlns:u="…"/>: present, empty
                continue
            }
            guard let end = rest.range(of: "</\(qualified)>") else { break }
            out.append(String(rest[..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        return out
    }

    /// Escapes text for an XML element.
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// A SOAP action request (UDA 1.1 §3.2.1) as a complete HTTP/1.1 POST.
    public static func soapRequest(control: Location, service: String, action: String, arguments: [(String, String)]) -> [UInt8] {
        let args = arguments.map { "<\($0.0)>\(escape($0.1))</\($0.0)>" }.joined()
        let body = "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" " +
            "s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:\(action) xmlns:u=\"\(service)\">" +
            args + "</u:\(action)></s:Body></s:Envelope>\r\n"
        let head = "POST \(control.path) HTTP/1.1\r\nHOST: \(control.host)\r\nCONTENT-TYPE: text/xml; charset=\"utf-8\"\r\n" +
            "SOAPACTION: \"\(service)#\(action)\"\r\nCONTENT-LENGTH: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        return Array((head + body).utf8)
    }

    /// A GET for `location` (UDA 1.1 §2.1).
    public static func getRequest(_ location: Location) -> [UInt8] {
        Array("GET \(location.path) HTTP/1.1\r\nHOST: \(location.host)\r\nConnection: close\r\n\r\n".utf8)
    }

    /// The AddPortMapping arguments for a UDP mapping (WANIPConnection:1 §2.4.16).
    public static func addPortMapping(externalPort: UInt16, internalPort: UInt16, client: IPAddress, lifetime: UInt32,
                                      description: String) -> [(String, String)] {
        [("NewRemoteHost", ""), ("NewExternalPort", "\(externalPort)"), ("NewProtocol", "UDP"), ("NewInternalPort", "\(internalPort)"),
         ("NewInternalClient", "\(client)"), ("NewEnabled", "1"), ("NewPortMappingDescription", description),
         ("NewLeaseDuration", "\(lifetime)")]
    }

    /// The DeletePortMapping arguments (WANIPConnection:1 §2.4.17).
    public static func deletePortMapping(externalPort: UInt16) -> [(String, String)] {
        [("NewRemoteHost", ""), ("NewExternalPort", "\(externalPort)"), ("NewProtocol", "UDP")]
    }

    /// Checks a SOAP answer (UDA 1.1 §3.2.2, §3.2.3): the named output arguments, or the UPnP error.
    public static func parseSOAPAnswer(status: Int, body: [UInt8], action: String) throws -> [String: String] {
        let xml = String(decoding: body, as: UTF8.self)
        guard status == 200 else {
            let code = elements("errorCode", in: xml).first.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? "?"
            let text = elements("errorDescription", in: xml).first?.prefix(120) ?? ""
            throw PortMappingError(.refused, "\(action): HTTP \(status), UPnP error \(code.prefix(8)) \(text)")
        }
        guard let response = elements("\(action)Response", in: xml).first else {
            throw PortMappingError(.malformed, "\(action): no \(action)Response element")
        }
        var out: [String: String] = [:]
        for name in ["NewExternalIPAddress", "NewReservedPort"] {
            if let v = elements(name, in: response).first { out[name] = v.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        return out
    }
}
