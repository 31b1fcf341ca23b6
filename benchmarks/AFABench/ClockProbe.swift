import Foundation
import TensorCore

/// Effective core clock, measured: the nominal "cpu MHz" of /proc/cpuinfo ignores turbo, which would
/// put SGEMM above 100% of a "peak" computed from it.
public enum ClockProbe {
    /// GHz from a chain of dependent integer multiply-adds (x ← x·x + c: a 3-cycle imul and a 1-cycle add per step on
    /// current x86 cores); best of a few tries.
    public static func measuredGHz() -> Double {
        var best = 0.0
        var seed = UInt64(truncatingIfNeeded: Int(Harness.now() * 1e6)) | 1
        for _ in 0..<5 {
            let steps = 50_000_000
            let t0 = Harness.now()
            var x = seed
            for _ in 0..<steps { x = x &* x &+ seed }
            let dt = Harness.now() - t0
            seed = x | 1
            best = max(best, Double(steps) * 4 / dt / 1e9)
        }
        sink(seed)   // keeps the chains alive
        return best
    }

    @inline(never) static func sink(_ x: UInt64) { if x == 42 { print("") } }

    /// FMA peak (GFLOP/s) for `threads` cores at the measured clock, with the lanes/cycle of
    /// `BLASKernel.theoreticalPeakGFLOPS`.
    public static func peakGFLOPS(threads: Int, ghz: Double) -> Double? {
        guard let nominal = BLASKernel.nominalGHz, let atNominal = BLASKernel.theoreticalPeakGFLOPS(threads: threads)
        else { return nil }
        return atNominal / nominal * ghz
    }
}
