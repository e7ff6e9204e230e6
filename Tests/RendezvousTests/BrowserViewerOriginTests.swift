import Rendezvous
import Testing

/// The origins the viewer page's WebSocket accepts: exactly what a browser sends in `Origin` for the page it loaded.
struct BrowserViewerOriginTests {
    @Test func onPort443TheOriginCarriesNoPort() {
        // RFC 6454 §6.2: a browser serialises https://host:443 as https://host; a page on 443 must still signal.
        #expect(BrowserViewerServer.origins(names: ["203.0.113.10", "cloud.example"], port: 443)
                == ["https://203.0.113.10", "https://cloud.example"])
    }

    @Test func onAnotherPortTheOriginNamesIt() {
        #expect(BrowserViewerServer.origins(names: ["203.0.113.10"], port: 8443) == ["https://203.0.113.10:8443"])
        #expect(!BrowserViewerServer.origins(names: ["203.0.113.10"], port: 8443).contains("https://203.0.113.10"))
    }
}
