import Foundation
import NATLab
import Rendezvous
import Testing

/// Whether what a page's canvas showed is the camera's test clip: the page reports its canvas as a grid of cell
/// means (`BrowserReport.thumbnail`), ffmpeg computes the same grid of the clip's own frames (area scaling), and the
/// cells the clip keeps still (its colour pattern, not the moving gradient or the counter) must agree.
enum TestPattern {
    /// The grid the page reports: columns × rows cells, RGB, row by row.
    static let columns = 16, rows = 12
    /// Frames of the clip the still cells are taken from (the clip is 25 frames/s, longer than 4 s).
    static let sampledFrames = [0, 40, 90]
    /// A cell is still when no channel moves more than this between the sampled frames.
    static let stillness = 6
    /// Largest mean absolute difference (0…255) between the page's still cells and the clip's. Chromium's decoder
    /// and colour conversion differ from ffmpeg's by about 10.5 here; a picture shifted by one row of cells is off
    /// by 26, by one column 91, a black one 128.
    static let tolerance = 14.0

    /// The clip `trav camera --video default` plays.
    static var defaultClip: String { TravLab.repoRoot.appendingPathComponent("Sources/trav/Resources/testsrc.h264").path }

    /// ffmpeg, if installed.
    static let ffmpeg = ["/usr/bin/ffmpeg", "/usr/local/bin/ffmpeg"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// The grids of `frames` of `clip`, by ffmpeg's area scaling.
    static func grids(of clip: String, frames: [Int] = sampledFrames) async throws -> [[UInt8]] {
        let ffmpeg = try #require(ffmpeg, "ffmpeg is needed to read the clip")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("trav-grid-\(UUID().uuidString.prefix(8)).rgb")
        defer { try? FileManager.default.removeItem(at: out) }
        let select = frames.map { "eq(n\\,\($0))" }.joined(separator: "+")
        let result = try await ChildProcess.run(
            [ffmpeg, "-v", "error", "-i", clip, "-vf", "select=\(select),scale=\(columns):\(rows):flags=area", "-fps_mode", "passthrough",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-y", out.path], timeout: .seconds(30))
        try #require(result.succeeded, "ffmpeg: \(result)")
        let bytes = [UInt8](try Data(contentsOf: out))
        let size = columns * rows * 3
        try #require(bytes.count == size * frames.count, "ffmpeg gave \(bytes.count) bytes for \(frames.count) frames")
        return (0..<frames.count).map { Array(bytes[($0 * size)..<(($0 + 1) * size)]) }
    }

    /// The mean absolute difference over the clip's still cells between `thumbnail` (base64, as the page reports it)
    /// and the clip's first sampled frame; nil when the thumbnail is missing or malformed.
    static func difference(thumbnail: String?, clip: String = defaultClip) async throws -> Double? {
        guard let thumbnail, let data = Data(base64Encoded: thumbnail), data.count == columns * rows * 3 else { return nil }
        let shown = [UInt8](data)
        let grids = try await grids(of: clip)
        let still = (0..<(columns * rows)).filter { cell in
            (0..<3).allSatisfy { c in
                let values = grids.map { Int($0[cell * 3 + c]) }
                return values.max()! - values.min()! <= stillness
            }
        }
        try #require(still.count >= columns * rows / 2, "the clip keeps at least half its cells still: \(still.count)")
        let total = still.reduce(0) { sum, cell in
            sum + (0..<3).reduce(0) { $0 + abs(Int(shown[cell * 3 + $1]) - Int(grids[0][cell * 3 + $1])) }
        }
        return Double(total) / Double(still.count * 3)
    }
}

extension TestPattern {
    /// Expects `report`'s canvas to show the default clip (skipped without ffmpeg, which the test command installs).
    static func expectShown(in report: BrowserReport, _ context: @autoclosure () -> String,
                            sourceLocation: SourceLocation = #_sourceLocation) async throws {
        guard ffmpeg != nil else { return }
        let off = try await difference(thumbnail: report.thumbnail)
        #expect(off.map { $0 <= tolerance } == true, "the canvas shows the test pattern (off by \(String(describing: off))): \(context())",
                sourceLocation: sourceLocation)
    }
}

/// The comparison itself, against pictures that are not the clip.
struct TestPatternTests {
    @Test(.enabled(if: TestPattern.ffmpeg != nil, "ffmpeg is not installed"))
    func theClipMatchesItselfAndNotABlankOrShiftedPicture() async throws {
        let grids = try await TestPattern.grids(of: TestPattern.defaultClip, frames: [60])
        let later = try #require(try await TestPattern.difference(thumbnail: Data(grids[0]).base64EncodedString()))
        #expect(later <= TestPattern.tolerance, "another frame of the clip shows the same pattern: \(later)")
        let black = try #require(try await TestPattern.difference(thumbnail: Data(repeating: 0, count: grids[0].count).base64EncodedString()))
        #expect(black > TestPattern.tolerance, "a black canvas: \(black)")
        // The picture shifted by one cell (a cropped or misplaced frame).
        let shifted = Array(grids[0][3...]) + Array(grids[0][..<3])
        let off = try #require(try await TestPattern.difference(thumbnail: Data(shifted).base64EncodedString()))
        #expect(off > TestPattern.tolerance, "a shifted picture: \(off)")
        #expect(try await TestPattern.difference(thumbnail: "not base64") == nil)
    }
}
