import Foundation
import Testing
@testable import Media

/// Splitting H.264 Annex B streams into access units.
@Suite struct AnnexBTests {
    static let clipPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Sources/trav/Resources/testsrc.h264").standardized.path
    static let lowClipPath = URL(fileURLWithPath: clipPath).deletingLastPathComponent().appendingPathComponent("testsrc-low.h264").path

    @Test func testClipSplitsIntoItsFramesWithAKeyframeEachSecond() throws {
        let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.clipPath)))
        let units = AnnexB.accessUnits(data)
        // 4 s at 25 fps, a keyframe every 25 frames (how the clip was made: ffmpeg testsrc, libx264 -g 25).
        #expect(units.count == 100)
        #expect(units.indices.filter { units[$0].isKeyframe } == [0, 25, 50, 75])
        #expect(units.reduce(0) { $0 + $1.bytes.count } == data.count)
    }

    /// The bundled sub stream (`trav camera --video default-low`): the same 4 s at 25 fps, keyframes at the same
    /// frames, at a quarter of the picture size and a quarter of the rate. Made with
    /// `ffmpeg -f lavfi -i testsrc=size=160x120:rate=25 -t 4 -c:v libx264 -profile:v baseline -pix_fmt yuv420p -bf 0
    /// -x264-params keyint=25:min-keyint=25:scenecut=0 -b:v 40k -maxrate 40k -bufsize 40k testsrc-low.h264`.
    @Test func lowRateClipIsTheSamePictureAtALowerRate() throws {
        let main = AnnexB.accessUnits(try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.clipPath))))
        let low = AnnexB.accessUnits(try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.lowClipPath))))
        #expect(low.count == main.count)
        #expect(low.indices.filter { low[$0].isKeyframe } == main.indices.filter { main[$0].isKeyframe })
        let (mainRate, lowRate) = (AnnexB.bitsPerSecond(of: main, fps: 25), AnnexB.bitsPerSecond(of: low, fps: 25))
        #expect(lowRate * 3 < mainRate && lowRate > 20_000, "main \(mainRate) bit/s, low \(lowRate) bit/s")
        // Bytes over duration: 4 s of frames.
        #expect(mainRate == main.reduce(0) { $0 + $1.bytes.count } * 8 / 4)
        #expect(AnnexB.bitsPerSecond(of: [], fps: 25) == 0)
    }

    @Test func parameterSetsTravelWithTheKeyframe() {
        // SPS, PPS, IDR slice, then a non-IDR slice starting a new picture (first_mb_in_slice = 0: first bit 1).
        let stream: [UInt8] = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 0x88, 9, 0, 0, 1, 0x41, 0x9A, 7]
        let units = AnnexB.accessUnits(stream)
        #expect(units.count == 2)
        #expect(units[0].isKeyframe)
        #expect(units[0].bytes == Array(stream[0..<19]))
        #expect(!units[1].isKeyframe)
        #expect(units[1].bytes == [0, 0, 1, 0x41, 0x9A, 7])
    }

    @Test func secondSliceOfOnePictureStaysInItsUnit() {
        // Two slices of one IDR picture: the second has first_mb_in_slice ≠ 0 (first bit 0).
        let stream: [UInt8] = [0, 0, 1, 0x65, 0x88, 0, 0, 1, 0x65, 0x11, 0, 0, 1, 0x41, 0x80]
        let units = AnnexB.accessUnits(stream)
        #expect(units.count == 2)
        #expect(units[0].bytes.count == 10)
    }

    /// Found by fuzzing (Fuzz/Corpus/media/crash-trailing-start-code): when the data ended in a start
    /// code with no NAL unit after it, the last access unit was dropped whole.
    @Test func trailingStartCodeKeepsTheLastAccessUnit() {
        let stream: [UInt8] = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x65, 0x88, 9, 0, 0, 1]
        let units = AnnexB.accessUnits(stream)
        #expect(units.count == 1)
        #expect(units.first?.bytes == stream)
        #expect(units.first?.isKeyframe == true)
    }

    @Test func garbageWithoutStartCodesGivesNoUnits() {
        #expect(AnnexB.accessUnits([1, 2, 3, 4, 5]).isEmpty)
        #expect(AnnexB.accessUnits([]).isEmpty)
    }
}
