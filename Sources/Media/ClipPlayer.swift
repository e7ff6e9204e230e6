extension MediaSender {
    /// Plays a clip's access units in a loop at `fps` to every viewer, until cancelled (or for `duration`):
    /// a stand-in for a camera's encoder (`trav camera --video`, the browser tests).
    public func play(_ units: [AnnexB.AccessUnit], fps: Int, for duration: Duration? = nil) async {
        await play(renditions: [units], fps: fps, for: duration)
    }

    /// Plays clips of the same picture in lockstep, each looped, clip `i` as rendition `i`
    /// (``Configuration/renditions``): a stand-in for a camera's main and sub stream encoders.
    public func play(renditions clips: [[AnnexB.AccessUnit]], fps: Int, for duration: Duration? = nil) async {
        guard !clips.isEmpty, !clips.contains(where: \.isEmpty) else { return }
        let start = ContinuousClock.now
        let interval = Duration.nanoseconds(1_000_000_000 / Int64(max(1, fps)))
        var n = 0
        while !Task.isCancelled {
            if let duration, ContinuousClock.now - start >= duration { return }
            for (rendition, units) in clips.enumerated() {
                let unit = units[n % units.count]
                send(MediaFrame(timestamp: interval * n, isKeyframe: unit.isKeyframe, data: unit.bytes), rendition: rendition)
            }
            n += 1
            try? await Task.sleep(until: start + interval * n, clock: .continuous)
        }
    }
}
