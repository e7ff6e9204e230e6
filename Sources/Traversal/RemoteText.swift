/// Text that came from the network (an error a camera or the cloud sent, a reason, a route), made safe to print.
public enum RemoteText {
    /// `text` with every control character — C0 (line breaks and escape included), DEL, C1 and the
    /// Unicode bidirectional and invisible formatting controls — replaced by a visible `\u{…}`
    /// escape, so a peer cannot move the cursor, recolour, clear or rewrite a terminal, or disguise text.
    public static func printable(_ text: some StringProtocol) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            if isControl(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// C0, DEL, C1, and format controls that reorder or hide text (RFC 9839 §2's "problematic" code points).
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: true
        case 0x200B...0x200F, 0x202A...0x202E, 0x2060...0x2069, 0xFEFF: true
        default: false
        }
    }
}
