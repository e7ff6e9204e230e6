import Foundation

/// The self-contained HTML page of `trav compare --html`: the grid coloured by outcome and a bar
/// chart of connect times, no scripts or external resources.
enum CompareHTML {
    struct Row {
        var name: String
        var outcome: String
        var winner: String
        var median: Double?
        var p99: Double?
        var runs: String
        var predicted: String
        var mismatch: Bool
        var strategies: [(String, Bool, String)]

        init(_ r: Trav.CompareCommand.PairResult) {
            name = "\(r.camera) (\(r.cameraNAT)) × \(r.viewer) (\(r.viewerNAT))"
            outcome = r.outcome
            winner = r.winner ?? "—"
            median = r.medianMs
            p99 = r.p99Ms
            runs = "\(r.connectedRuns)/\(r.runs)"
            predicted = r.predicted
            mismatch = r.mismatch
            strategies = r.strategies.map { s in
                (s.strategy, s.connected, s.connected ? String(format: "%.0f ms", s.ms ?? 0) : (s.reason ?? "failed"))
            }
        }
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func page(_ rows: [Row], strategies: [String], runs: Int) -> String {
        let colour = ["direct": "#2e9d5b", "relayed": "#d9a21b", "failed": "#c8463d"]
        var table = "<tr><th>camera × viewer</th><th>outcome</th><th>winner</th><th>median</th><th>p99</th><th>runs</th><th>predicted (trav probe)</th>"
        table += strategies.map { "<th>\(escape($0)) alone</th>" }.joined() + "</tr>\n"
        for r in rows {
            table += "<tr><td>\(escape(r.name))</td>"
            table += "<td style=\"background:\(colour[r.outcome] ?? "#888");color:#fff\">\(r.outcome)</td>"
            table += "<td>\(escape(r.winner))</td>"
            table += "<td>\(r.median.map { String(format: "%.1f ms", $0) } ?? "—")</td><td>\(r.p99.map { String(format: "%.1f ms", $0) } ?? "—")</td>"
            table += "<td>\(r.runs)</td><td\(r.mismatch ? " class=\"mismatch\" title=\"prediction differs from what happened\"" : "")>\(escape(r.predicted))\(r.mismatch ? " ⚠" : "")</td>"
            for (_, ok, text) in r.strategies {
                table += "<td style=\"background:\(ok ? "#d7f0df" : "#f6dcda")\" title=\"\(escape(text))\">\(ok ? escape(text) : "✗")</td>"
            }
            table += "</tr>\n"
        }
        let maxMs = max(1, rows.compactMap(\.p99).max() ?? 1)
        let barHeight = 22, labelWidth = 330, chartWidth = 520
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(labelWidth + chartWidth + 80)\" height=\"\(rows.count * barHeight + 30)\" font-family=\"sans-serif\" font-size=\"12\">"
        for (i, r) in rows.enumerated() {
            let y = i * barHeight + 5
            svg += "<text x=\"\(labelWidth - 6)\" y=\"\(y + 14)\" text-anchor=\"end\">\(escape(r.name))</text>"
            if let m = r.median {
                let w = max(2, Int(Double(chartWidth) * m / maxMs))
                svg += "<rect x=\"\(labelWidth)\" y=\"\(y + 2)\" width=\"\(w)\" height=\"\(barHeight - 6)\" fill=\"\(colour[r.outcome] ?? "#888")\"/>"
                if let p = r.p99 {
                    let px = labelWidth + Int(Double(chartWidth) * p / maxMs)
                    svg += "<line x1=\"\(px)\" x2=\"\(px)\" y1=\"\(y + 1)\" y2=\"\(y + barHeight - 3)\" stroke=\"#333\" stroke-width=\"2\"/>"
                }
                svg += "<text x=\"\(labelWidth + w + 6)\" y=\"\(y + 14)\">\(String(format: "%.0f ms", m))</text>"
            } else {
                svg += "<text x=\"\(labelWidth + 4)\" y=\"\(y + 14)\" fill=\"#c8463d\">no path</text>"
            }
        }
        svg += "</svg>"
        return """
        <!doctype html><html><head><meta charset="utf-8"><title>trav compare</title>
        <style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:13px}
        td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}.mismatch{background:#fff3c4}
        .legend span{display:inline-block;padding:2px 10px;margin-right:8px;color:#fff}</style></head><body>
        <h1>trav compare</h1>
        <p>Camera × viewer over real kernel NAT (network namespaces). Each pair connected \(runs)× with every strategy raced; median and p99 setup time; then each strategy alone.</p>
        <p class="legend"><span style="background:#2e9d5b">direct</span><span style="background:#d9a21b">relayed</span><span style="background:#c8463d">failed</span></p>
        <table>\(table)</table>
        <h2>Connect time (bar: median, tick: p99)</h2>\(svg)
        </body></html>
        """
    }
}
