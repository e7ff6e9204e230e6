import Foundation

/// The process's open-files limit (RLIMIT_NOFILE), which every socket counts against.
///
/// A process hosting many cameras needs two open files per camera while they register (``CloudClient``), and
/// on Linux running out is fatal to any Swift process: libdispatch's worker monitor traps when it cannot open
/// `/proc/<tid>/stat`. A server or a many-camera process raises its soft limit and sizes itself under it.
public enum OpenFileLimit {
    /// Raises the soft limit to the hard limit (a common soft limit of 1 024 would cap a cloud at
    /// about a thousand connections); returns the soft limit in force afterwards.
    public static func raiseToHardLimit() -> Int {
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)
    }

    /// Open files a process hosting `cameras` cameras needs: one each on TLS presence, two each with UDP
    /// presence (TLS and UDP while they register again, all at once after a cloud restart), plus `reserve`
    /// for the process's own (event loops, logs, standard streams).
    public static func needed(cameras: Int, udpPresence: Bool, reserve: Int = 64) -> Int {
        cameras * (udpPresence ? 2 : 1) + reserve
    }
}
