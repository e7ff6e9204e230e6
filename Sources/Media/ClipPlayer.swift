extension MediaSender {
    /// Plays a clip's access units in a loop at `fps` to every viewer, until cancelled (or for `duration`):
    /// a stand-in for a camera's encoder (`trav camera --video`, the browser tests).
    public func play(_ units: [AnnexB.AccessUnit], fps: Int, for duration: Duration? = nil) async {
        guard !units.isEmpty else { return }
        let start = ContinuousClock.now
        let interval = Duration.nanoseconds(1_000_000_000 / Int64(max(1, fps)))
        var n = 0
        while !Task.isCancelled {
            if let duration, ContinuousClock.now - start >= duration { return }
            let unit = units[n % units.count]
            send(MediaFrame(timestamp: interval * n, isKeyframe: unit.isKeyframe, data: unit.bytes))
            n += 1
            try? await Task.sleep(until: start + interval * n, clock: .continuous)
        }
    }
}
