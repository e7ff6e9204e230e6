/// Splits an H.264 Annex B byte stream (ITU-T H.264 Annex B: NAL units after 00 00 01 or 00 00 00 01
/// start codes) into access units, and tells keyframes (those with an IDR slice, NAL type 5).
///
/// An access unit begins at an access unit delimiter, SEI, SPS or PPS (types 9, 6, 7, 8) that follows a
/// slice, or at a slice whose first_mb_in_slice is 0 (H.264 §7.4.1.2.3), so parameter sets travel with
/// the keyframe that needs them.
public enum AnnexB {
    /// NAL unit types (H.264 Table 7-1) this splitter looks at.
    enum NALType {
        static let slice: UInt8 = 1
        static let idr: UInt8 = 5
        static let sei: UInt8 = 6
        static let sps: UInt8 = 7
        static let pps: UInt8 = 8
        static let delimiter: UInt8 = 9
    }

    /// One access unit: its bytes (with start codes) and whether it holds an IDR slice.
    public struct AccessUnit: Sendable, Hashable {
        /// The Annex B bytes, start codes included.
        public var bytes: [UInt8]
        /// True when it holds an IDR slice.
        public var isKeyframe: Bool
    }

    /// The offsets where NAL units start (after their start code) and where each start code begins.
    static func nalUnits(_ data: [UInt8]) -> [(codeStart: Int, nalStart: Int)] {
        var out: [(Int, Int)] = []
        var i = 0
        let n = data.count
        while i + 2 < n {
            if data[i] == 0, data[i + 1] == 0, data[i + 2] == 1 {
                let codeStart = (i > 0 && data[i - 1] == 0) ? i - 1 : i
                out.append((codeStart, i + 3))
                i += 3
            } else {
                i += 1
            }
        }
        return out
    }

    /// The stream's access units, in order; bytes before the first start code are ignored.
    public static func accessUnits(_ data: [UInt8]) -> [AccessUnit] {
        let units = nalUnits(data)
        var result: [AccessUnit] = []
        var currentStart: Int?
        var currentKey = false
        var sawSlice = false
        for unit in units where unit.nalStart < data.count {
            let type = data[unit.nalStart] & 0x1F
            let isSlice = type == NALType.slice || type == NALType.idr
            let firstMB = isSlice && unit.nalStart + 1 < data.count && data[unit.nalStart + 1] & 0x80 != 0
            let startsUnit = (sawSlice && [NALType.delimiter, NALType.sei, NALType.sps, NALType.pps].contains(type))
                || (isSlice && firstMB && sawSlice)
            if startsUnit, let start = currentStart {
                result.append(AccessUnit(bytes: Array(data[start..<unit.codeStart]), isKeyframe: currentKey))
                currentStart = nil
                currentKey = false
                sawSlice = false
            }
            if currentStart == nil { currentStart = unit.codeStart }
            if isSlice { sawSlice = true }
            if type == NALType.idr { currentKey = true }
        }
        // The last unit runs to the end of the data, a trailing start code with nothing after it included.
        if let start = currentStart {
            result.append(AccessUnit(bytes: Array(data[start...]), isKeyframe: currentKey))
        }
        return result
    }
}
