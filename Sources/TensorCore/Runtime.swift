import CBLASShim
import Foundation
import Logging

/// Process-wide compute settings: the one thread knob for OpenBLAS and the Swift workers.
public enum Runtime {
    /// Sets the number of Swift worker threads (which also run the matrix products).
    /// `nil` or 0 means one per core.
    public static func setThreads(_ n: Int?) {
        let count = (n ?? 0) > 0 ? n! : ProcessInfo.processInfo.activeProcessorCount
        // OpenBLAS's own pool would spin (sched_yield) while the Swift workers run the element-wise
        // kernels, taking cores from them; so OpenBLAS stays single-threaded and `sgemm` spreads
        // large products over the Swift workers itself.
        openblas_set_num_threads(1)
        Parallel.setWorkers(count)
    }

    /// The current worker count.
    public static var threads: Int { Parallel.workers }
}
