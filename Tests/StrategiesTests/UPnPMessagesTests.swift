import Foundation
import STUNLite
@testable import Strategies
import Testing

/// SSDP, HTTP and SOAP for UPnP IGD: what a LAN device may send, and what we refuse to follow.
struct UPnPMessagesTests {
    static let gateway = IPAddress("10.1.0.1")!

    static func ssdp(_ location: String, status: String = "200 OK") -> [UInt8] {
        Array("HTTP/1.1 \(status)\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLocation: \(location)\r\n\r\n".utf8)
    }

    @Test func searchIsAnMSearchForAnIGD() {
        let text = String(decoding: UPnPMessage.search(), as: UTF8.self)
        #expect(text.hasPrefix("M-SEARCH * HTTP/1.1\r\n") && text.contains("MAN: \"ssdp:discover\"\r\n"))
        #expect(text.contains("ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n") && text.hasSuffix("\r\n\r\n"))
    }

    @Test func searchAnswerGivesTheDescriptionLocation() throws {
        let l = try UPnPMessage.parseSearchAnswer(Self.ssdp("http://10.1.0.1:5000/rootDesc.xml"), from: Self.gateway)
        #expect(l.host == TransportAddress("10.1.0.1:5000") && l.path == "/rootDesc.xml")
    }

    @Test func searchAnswersPointingElsewhereOrBrokenAreRefused() {
        let cases: [([UInt8], PortMappingError.Code)] = [
            (Self.ssdp("http://198.51.100.7:80/desc.xml"), .offLAN),                 // another host
            (Self.ssdp("https://10.1.0.1/desc.xml"), .malformed),                    // not plain http
            (Self.ssdp("http://evil.example/desc.xml"), .malformed),                 // a name
            (Self.ssdp("http://user@10.1.0.1/desc.xml"), .malformed),
            (Array("HTTP/1.1 200 OK\r\nST: x\r\n\r\n".utf8), .malformed),            // no LOCATION
            (Array("HTTP/1.1 200 OK\r\nLOCATION: http://10.1.0.1/".utf8), .malformed), // no end of headers
            (Array("NOTIFY * HTTP/1.1\r\n\r\n".utf8), .malformed),
            ([UInt8](repeating: 65, count: 4096), .malformed),                      // too long
        ]
        for (bytes, code) in cases {
            #expect { try UPnPMessage.parseSearchAnswer(bytes, from: Self.gateway) } throws: { ($0 as? PortMappingError)?.code == code }
        }
    }

    @Test func relativeAndAbsoluteControlURLsStayOnTheHost() throws {
        let base = try #require(UPnPMessage.Location("http://10.1.0.1:5000/dev/rootDesc.xml"))
        #expect(base.resolve("/ctl/IPConn")?.description == "http://10.1.0.1:5000/ctl/IPConn")
        #expect(base.resolve("ctl/IPConn")?.description == "http://10.1.0.1:5000/dev/ctl/IPConn")
        #expect(base.resolve("http://10.1.0.1:5000/x")?.path == "/x")
        #expect(base.resolve("http://10.1.0.2:5000/x") == nil)
        #expect(base.resolve("//10.1.0.2/x") == nil)
        #expect(base.resolve("ftp://10.1.0.1/x") == nil)
    }

    static let description = """
    <?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>
    <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><serviceList><service>
    <serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><controlURL>/ctl/L3F</controlURL></service></serviceList>
    <deviceList><device><deviceList><device><serviceList><service>
    <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
    <controlURL>/ctl/IPConn</controlURL></service></serviceList></device></deviceList></device></deviceList></device></root>
    """

    @Test func descriptionYieldsTheConnectionService() throws {
        let base = try #require(UPnPMessage.Location("http://10.1.0.1:5000/rootDesc.xml"))
        let (service, control) = try UPnPMessage.parseDescription(Array(Self.description.utf8), location: base)
        #expect(service == "urn:schemas-upnp-org:service:WANIPConnection:1" && control.description == "http://10.1.0.1:5000/ctl/IPConn")
        let elsewhere = Self.description.replacingOccurrences(of: "/ctl/IPConn", with: "http://198.51.100.7/ctl")
        #expect { try UPnPMessage.parseDescription(Array(elsewhere.utf8), location: base) } throws: { ($0 as? PortMappingError)?.code == .offLAN }
        let none = Self.description.replacingOccurrences(of: "WANIPConnection", with: "WANCommonInterfaceConfig")
        #expect { try UPnPMessage.parseDescription(Array(none.utf8), location: base) } throws: { ($0 as? PortMappingError)?.code == .refused }
    }

    @Test func httpAnswersAreBoundedAndRedirectsNotFollowed() throws {
        let ok = Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello and more".utf8)
        let answer = try UPnPMessage.parseHTTPAnswer(ok)
        #expect(answer.status == 200 && answer.body == Array("hello".utf8))
        let chunked = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n".utf8)
        #expect(try UPnPMessage.parseHTTPAnswer(chunked).body == Array("hello!".utf8))
        let cases: [([UInt8], PortMappingError.Code)] = [
            (Array("HTTP/1.1 302 Found\r\nLocation: http://198.51.100.7/\r\n\r\n".utf8), .offLAN),
            (Array("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort".utf8), .malformed),
            (Array("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".utf8), .malformed),
            (Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".utf8), .malformed),
            (Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffff\r\nab".utf8), .malformed),
            (Array("HTTP/1.1 200 OK\r\n".utf8) + [UInt8](repeating: 65, count: 70_000), .malformed),
            (Array("SSH-2.0-OpenSSH\r\n\r\n".utf8), .malformed),
        ]
        for (bytes, code) in cases {
            #expect { try UPnPMessage.parseHTTPAnswer(bytes) } throws: { ($0 as? PortMappingError)?.code == code }
        }
    }

    @Test func soapRequestCarriesTheActionAndEscapedArguments() throws {
        let control = try #require(UPnPMessage.Location("http://10.1.0.1:5000/ctl/IPConn"))
        let service = "urn:schemas-upnp-org:service:WANIPConnection:1"
        let args = UPnPMessage.addPortMapping(externalPort: 40000, internalPort: 40000, client: IPAddress("10.1.0.10")!,
                                              lifetime: 7200, description: "a<b")
        let text = String(decoding: UPnPMessage.soapRequest(control: control, service: service, action: "AddPortMapping", arguments: args), as: UTF8.self)
        #expect(text.hasPrefix("POST /ctl/IPConn HTTP/1.1\r\n"))
        #expect(text.contains("SOAPACTION: \"\(service)#AddPortMapping\"\r\n"))
        #expect(text.contains("<NewInternalClient>10.1.0.10</NewInternalClient>") && text.contains("<NewLeaseDuration>7200</NewLeaseDuration>"))
        #expect(text.contains("<NewPortMappingDescription>a&lt;b</NewPortMappingDescription>"))
        let body = text.split(separator: "\r\n\r\n", maxSplits: 1)[1]
        #expect(text.contains("CONTENT-LENGTH: \(body.utf8.count)\r\n"))
    }

    @Test func soapAnswersAndFaults() throws {
        let ok = Array("""
        <s:Envelope><s:Body><u:GetExternalIPAddressResponse xmlns:u="x"><NewExternalIPAddress>203.0.113.101</NewExternalIPAddress>\
        </u:GetExternalIPAddressResponse></s:Body></s:Envelope>
        """.utf8)
        #expect(try UPnPMessage.parseSOAPAnswer(status: 200, body: ok, action: "GetExternalIPAddress")["NewExternalIPAddress"] == "203.0.113.101")
        // miniupnpd 2.3.1's answer to AddPortMapping, as captured in the lab: an empty, self-closing element.
        let added = Array(("<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" " +
            "s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:AddPortMappingResponse " +
            "xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\"/></s:Body></s:Envelope>\r\n").utf8)
        #expect(try UPnPMessage.parseSOAPAnswer(status: 200, body: added, action: "AddPortMapping").isEmpty)
        let fault = Array("<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>".utf8)
        #expect { try UPnPMessage.parseSOAPAnswer(status: 500, body: fault, action: "AddPortMapping") } throws: {
            ($0 as? PortMappingError)?.code == .refused && "\($0)".contains("718")
        }
        #expect { try UPnPMessage.parseSOAPAnswer(status: 200, body: Array("<x/>".utf8), action: "AddPortMapping") } throws: {
            ($0 as? PortMappingError)?.code == .malformed
        }
    }
}
