import CBLASShim
import Foundation
import Logging

/// Process-wide compute settings: the one thread knob for OpenBLAS and the Swift workers.
public enum Runtime {
    /// Sets both the OpenBLAS thread count and the number of Swift worker threads.
    /// `nil` or 0 means one per core.
    public static func setThreads(_ n: Int?) {
        let count = (n ?? 0) > 0 ? n! : ProcessInfo.processInfo.activeProcessorCount
        // OpenBLAS's own pool would spin (sched_yield) while the Swift workers run the element-wise
        // kernels, taking cores from them; so OpenBLAS stays single-threaded and `sgemm` spreads
        // large products over the Swift workers itself.
        openblas_set_num_threads(1)
        Parallel.setWorkers(count)
    }

    /// The current thread count (OpenBLAS and Swift workers agree after `setThreads`).
    public static var threads: Int { Parallel.workers }

    /// Runs `body` with OpenBLAS limited to one thread (for GEMMs issued from inside a parallel
    /// loop: nested BLAS threads would oversubscribe the cores), then restores the setting.
    public static func withSingleThreadedBLAS<T>(_ body: () throws -> T) rethrows -> T {
        let before = openblas_get_num_threads()
        if before != 1 { openblas_set_num_threads(1) }
        defer { if before != 1 { openblas_set_num_threads(before) } }
        return try body()
    }
}
