import CBLASShim
import Foundation
import TensorCore

/// SGEMM throughput through the project's wrapper and through a direct `cblas_sgemm` call.
public enum SGEMMBenchmark {
    /// One GEMM shape: C (m×n) = A (m×k) · op(B), with B transposed for weight-style products.
    public struct Shape: Sendable {
        public var label: String
        public var m: Int, n: Int, k: Int
        public var transB: Transpose
        public init(_ label: String, m: Int, n: Int, k: Int, transB: Transpose = .transposed) {
            self.label = label; self.m = m; self.n = n; self.k = k; self.transB = transB
        }
    }

    /// Square sizes of the table.
    public static let squareSizes = [256, 512, 1024, 2048]

    /// MiT-B1 shapes at a 2×3×320×320 input (per image; Linear layers are tokens × in · Wᵀ).
    public static let mitB1Shapes: [Shape] = [
        Shape("s1 patch-embed 6400x147->64", m: 6400, n: 64, k: 147),
        Shape("s1 fc1 6400x64->256", m: 6400, n: 256, k: 64),
        Shape("s1 fc2 6400x256->64", m: 6400, n: 64, k: 256),
        Shape("s1 attn q.kT 6400x64.(100x64)T", m: 6400, n: 100, k: 64),
        Shape("s1 attn p.v 6400x100.(100x64)", m: 6400, n: 64, k: 100, transB: .none),
        Shape("s3 fc1 400x320->1280", m: 400, n: 1280, k: 320),
        Shape("s4 fc1 400x512->2048", m: 400, n: 2048, k: 512),
        Shape("s4 fc2 400x2048->512", m: 400, n: 512, k: 2048),
        Shape("s4 attn q.kT 400x64.(400x64)T", m: 400, n: 400, k: 64),
    ]

    /// Measures one shape with `threads` OpenBLAS threads; `direct` bypasses the wrapper.
    public static func run(_ s: Shape, threads: Int, direct: Bool, runs: Int) -> Measurement {
        Runtime.setThreads(threads)
        var rng = RNG(seed: 1)
        let a = Tensor(zeros: [s.m, s.k]); a.fillUniform(-1, 1, rng: &rng)
        let b = Tensor(zeros: s.transB == .none ? [s.k, s.n] : [s.n, s.k]); b.fillUniform(-1, 1, rng: &rng)
        let c = Tensor(zeros: [s.m, s.n])
        let ldb = s.transB == .none ? s.n : s.k
        let flops = 2.0 * Double(s.m) * Double(s.n) * Double(s.k)
        let m = Harness.measure(name: "sgemm \(s.label)", threads: threads, runs: runs, flops: flops,
                                extra: ["variant": direct ? "cblas_sgemm" : "wrapper",
                                        "shape": "\(s.m)x\(s.n)x\(s.k)"]) {
            if direct {
                // OpenBLAS's own threading, for comparison with the wrapper's block split
                openblas_set_num_threads(Int32(threads))
                defer { openblas_set_num_threads(1) }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, s.transB == .none ? CblasNoTrans : CblasTrans,
                            Int32(s.m), Int32(s.n), Int32(s.k), 1, a.data, Int32(s.k), b.data, Int32(ldb),
                            0, c.data, Int32(s.n))
            } else {
                sgemm(.none, s.transB, m: s.m, n: s.n, k: s.k, a: a.data, lda: s.k, b: b.data, ldb: ldb,
                      c: c.data, ldc: s.n)
            }
        }
        return m
    }

    /// The whole table: square sizes and MiT-B1 shapes, wrapper and direct, for each thread count.
    public static func table(threads: [Int], runs: Int) -> (text: String, rows: [Measurement]) {
        var rows: [[String]] = []
        var all: [Measurement] = []
        let ghz = ClockProbe.measuredGHz()
        let shapes = squareSizes.map { Shape("square \($0)^3", m: $0, n: $0, k: $0, transB: .none) } + mitB1Shapes
        for s in shapes {
            var cells = [s.label]
            for t in threads {
                let w = run(s, threads: t, direct: false, runs: runs)
                let d = run(s, threads: t, direct: true, runs: runs)
                all += [w, d]
                let peak = ClockProbe.peakGFLOPS(threads: t, ghz: ghz)
                cells += [String(format: "%.1f", w.gflops), String(format: "%.1f", d.gflops),
                          peak.map { String(format: "%.0f%%", 100 * w.gflops / $0) } ?? "-"]
            }
            rows.append(cells)
        }
        var header = ["shape (GFLOP/s)"]
        for t in threads { header += ["wrapper \(t)T", "cblas \(t)T", "% FMA peak \(t)T"] }
        var text = Harness.table(header, rows)
        let peaks = threads.map { t in
            "\(t)T " + (ClockProbe.peakGFLOPS(threads: t, ghz: ghz).map { String(format: "%.0f", $0) } ?? "?")
        }
        text += "\nOpenBLAS core \(BLASKernel.coreName); FMA peak GFLOP/s at the measured clock "
            + String(format: "%.2f GHz", ghz) + " (nominal "
            + (BLASKernel.nominalGHz.map { String(format: "%.2f", $0) } ?? "?") + "): " + peaks.joined(separator: ", ")
        return (text, all)
    }
}
