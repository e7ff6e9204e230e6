import Testing
@testable import Traversal

@Suite struct RemoteTextTests {
    @Test func terminalEscapesAndLineBreaksFromThePeerArePrintedAsEscapes() {
        let hostile = "denied\u{1B}[2J\u{1B}]0;pwned\u{07}\r\nfake line\u{9B}31m\u{202E}txt.exe"
        let printable = RemoteText.printable(hostile)
        #expect(!printable.unicodeScalars.contains { RemoteText.isControl($0) })
        #expect(printable == "denied\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{d}\\u{a}fake line\\u{9b}31m\\u{202e}txt.exe")
    }

    @Test func ordinaryTextIsUnchanged() {
        let text = "rate-limited: too many failed attempts — réessayez 東京 🎥"
        #expect(RemoteText.printable(text) == text)
    }
}
